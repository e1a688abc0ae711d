"""The fleet's table: one row per figure (bench/report.py adds them to its own table),
the details per scenario, and bench/out/fleet.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.fleet.daemon import FIRST_ROUND_TIMEOUT_S
from bench.fleet.measure import HEAL_TIMEOUT_S
from bench.targets import FLEET_TARGET_IDLE_CPU_PCT, FLEET_TARGET_RSS_MIB


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def _fds(snap: dict[str, Any] | None) -> str:
    if not snap:
        return "n/a"
    fds = snap["fds"]
    rest = ", ".join(f"{k} {v}" for k, v in fds.items() if k != "total")
    return f"{fds['total']} ({rest})"


def build_rows(res: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    rows: list[tuple[str, str, str, bool | None]] = []
    s1 = res.get("fleet")
    if s1 is not None:
        n = s1["boards"]
        st, idle, end = s1.get("start", {}), s1.get("idle"), s1.get("end")
        rows += [
            (f"{n} boards: start -> first round done", _f(st.get("first_round_s"), "s"), "", None),
            (f"{n} boards: start -> /readyz 200", _f(st.get("ready_s"), "s"), "", None),
            (
                f"{n} boards: idle CPU over {_f(idle and idle['window_s'], 's', 0)}",
                _f(idle and idle["cpu_pct_one_core"], "%", 3),
                f"<= {FLEET_TARGET_IDLE_CPU_PCT} %",
                idle is not None and idle["cpu_pct_one_core"] <= FLEET_TARGET_IDLE_CPU_PCT,
            ),
            (
                f"{n} boards: VmRSS at {_f(end and end['age_s'], 's', 0)}",
                _f(end and end["rss_mib"], "MiB"),
                f"<= {FLEET_TARGET_RSS_MIB:.0f} MiB",
                end is not None
                and end["rss_mib"] is not None
                and end["rss_mib"] <= FLEET_TARGET_RSS_MIB,
            ),
            (f"{n} boards: fds", _fds(end), "", None),
            (f"{n} boards: threads", str(end["threads"]) if end else "n/a", "", None),
        ]
    s2 = res.get("thousand")
    if s2 is not None:
        n = s2["boards"]
        st, heal, idle, end = (s2.get(k) or {} for k in ("start", "heal", "idle", "end"))
        rows += [
            (
                f"{n:,} boards: start -> first round done (starts)",
                _f(st.get("first_round_s"), "s"),
                f"<= {FIRST_ROUND_TIMEOUT_S:.0f} s",
                st.get("first_round_s") is not None,
            ),
            (
                f"{n:,} boards: start -> /readyz 200 (ready)",
                _f(st.get("ready_s"), "s"),
                "answers",
                st.get("ready_s") is not None,
            ),
            (
                f"{n:,} boards: SIGKILL -> leaves running (heals)",
                _f(heal.get("heal_s"), "s", 2)
                + (f" -> {heal['new_status']}" if heal.get("heal_s") is not None else ""),
                f"<= {HEAL_TIMEOUT_S:.0f} s",
                heal.get("heal_s") is not None,
            ),
            (
                f"{n:,} boards: idle CPU over {_f(idle.get('window_s'), 's', 0)}",
                _f(idle.get("cpu_pct_one_core"), "%", 3),
                "",
                None,
            ),
            (
                f"{n:,} boards: VmRSS at {_f(end.get('age_s'), 's', 0)}",
                _f(end.get("rss_mib"), "MiB"),
                "",
                None,
            ),
            (f"{n:,} boards: fds", _fds(end or None), "", None),
            (f"{n:,} boards: threads", str(end.get("threads", "n/a")), "", None),
        ]
    return rows


def report(res: dict[str, Any], out: Path) -> None:
    rows = build_rows(res)
    res["targets"] = [
        {"figure": label, "measured": value, "target": target, "pass": ok}
        for label, value, target, ok in rows
        if ok is not None
    ]
    res["all_pass"] = bool(res["targets"]) and all(t["pass"] for t in res["targets"])
    res["all_pass"] = res["all_pass"] and not res.get("aborted")
    m = res.get("machine", {})
    width = 96
    print()
    print("=" * width)
    print(
        f"kanban-watchers fleet benchmark — {m.get('cpus')} cores, Python {m.get('python')}, "
        f"SQLite {m.get('sqlite')}, code {m.get('git_head')}"
        + (
            f" (+ uncommitted {m['uncommitted_in_watchers']})"
            if m.get("uncommitted_in_watchers")
            else ""
        )
    )
    print("-" * width)
    print(f"{'figure':48} | {'measured':>22} | {'target':>10} | result")
    for label, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{label:48} | {value:>22} | {target:>10} | {verdict}")
    print("-" * width)
    for key in ("fleet", "thousand"):
        s = res.get(key)
        if not s:
            continue
        idle, first, end = s.get("idle") or {}, s.get("after_first_round") or {}, s.get("end") or {}
        print(f"{key} ({s['boards']} boards, {s['workers']} workers):")
        st = s.get("start") or {}
        if st:
            print(
                f"  start: 'started' logged at {_f(st.get('started_logged_s'), 's')}, first "
                f"round done at {_f(st.get('first_round_s'), 's')}, /readyz 200 at "
                f"{_f(st.get('ready_s'), 's')} ({st.get('readyz_503_seen')} x 503 before)"
            )
        if first:
            print(
                f"  after first round: RSS {first.get('rss_mib')} MiB, CPU so far "
                f"{_f(first.get('cpu_total_s'), 's')}, threads {first.get('threads')}, "
                f"fds {_fds(first)}"
            )
        if idle:
            print(
                f"  idle window: {idle['cpu_s']} CPU s in {idle['window_s']} s; busiest threads "
                "(by start order, #0 main) "
                + ", ".join(
                    f"#{t['start_rank']} {t['cpu_s']} s" for t in idle["threads_by_cpu_s"][:4]
                )
            )
            print(
                f"  ticks in window (approx.): {idle['ticks_in_window_approx']}; wall s in "
                f"ticks {idle['tick_wall_seconds_in_window_approx']}; log lines "
                f"{idle['log_lines_in_window']}; /metrics {idle['metrics_bytes']:,} bytes in "
                f"{idle['metrics_scrape_s']} s (status {idle['metrics_status']})"
            )
        if end:
            print(
                f"  end: VmHWM {end.get('hwm_mib')} MiB, CPU total {_f(end.get('cpu_total_s'), 's')}"
            )
        heal = s.get("heal")
        if heal:
            print(
                f"  kill: task {heal['task']} pid {heal['pid']} -> {heal['new_status']} after "
                f"{heal['heal_s']} s, run outcome {heal['run_outcome']}"
            )
        sd = s.get("shutdown")
        if sd:
            print(f"  shutdown: exit {sd['exit_code']} after {sd['shutdown_s']} s ({sd['note']})")
        lg = s.get("log")
        if lg:
            print(f"  log: {lg['lines']} lines, levels {lg['levels']}")
            for kind, n in list(lg["problem_kinds"].items())[:5]:
                print(f"  log {n} x {kind}")
        cl = s.get("cleanup")
        if cl:
            print(
                f"  cleanup: {cl['workers']} workers stopped ({cl['killed_after_timeout']} "
                f"SIGKILLed, {cl['still_running']} still running)"
            )
    print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.get("phases_s", {}).items()))
    print(f"total: {res.get('total_s')} s")
    if res.get("aborted"):
        print(f"ABORTED: {res['aborted']}")
    print(f"overall: {'PASS' if res['all_pass'] else 'FAIL'}")
    print("=" * width)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"results: {out}")
