"""The summary: one row per figure with its target and PASS/FAIL, the details below it,
and bench/out/results.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from bench.fleet.report import build_rows as fleet_rows
from bench.targets import (
    TARGET_BUDGET_TICK_MS,
    TARGET_DISTRESS_TICK_MS,
    TARGET_HEAL_P95_S,
    TARGET_NEW_CHECK_MS,
    TARGET_RATIO,
    TARGET_RSS_MB,
    TARGET_TICK_MS,
    TARGET_UNCHANGED_MS,
)


def fmt(value: Any, unit: str, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f} {unit}"


# a row of the table: label, value as printed, target as printed, results.json name, verdict
Row = tuple[str, Any, str, str, bool | None]


def shown(label: str, value: float | None, unit: str, digits: int) -> Row:
    """A figure printed without a target."""
    return (label, fmt(value, unit, digits), "", "", None)


def at_most(
    label: str, value: float | None, unit: str, digits: int, target: float, key: str
) -> Row:
    """A figure that passes when it is at most `target` (in the same unit)."""
    return (
        label,
        fmt(value, unit, digits),
        f"<= {target:.0f} {unit}",
        key,
        value is not None and value <= target,
    )


def _mib(kib: int | None) -> float | None:
    return kib / 1024 if kib else None


def report(res: dict[str, Any], out: Path) -> None:
    tick, herm, heal, rss = (res.get(k, {}) for k in ("tick", "hermes", "heal", "rss"))
    dist = res.get("distress", {})
    bud = res.get("budget", {})
    new = res.get("new_checks", {})
    ratio = None
    if tick.get("median_ms") and herm.get("median_ms"):
        ratio = herm["median_ms"] / tick["median_ms"]
    rss_mib = _mib(rss.get("vmrss_kib"))
    floor = res.get("floor", {})
    unch = res.get("unchanged", {})
    hermes_ms = fmt(herm.get("median_ms"), "ms", 2)
    checks: list[Row] = [
        at_most(
            "auto-heal tick, median",
            tick.get("median_ms"),
            "ms",
            2,
            TARGET_TICK_MS,
            "tick_median_ms",
        ),
        shown("auto-heal tick, p95", tick.get("p95_ms"), "ms", 2),
        at_most(
            "unchanged board, nothing due: pass, median",
            unch.get("median_ms"),
            "ms",
            3,
            TARGET_UNCHANGED_MS,
            "unchanged_pass_median_ms",
        ),
        shown("distress first tick (rebuild from history)", dist.get("first_tick_ms"), "ms", 1),
        at_most(
            "distress tick, median",
            dist.get("median_ms"),
            "ms",
            2,
            TARGET_DISTRESS_TICK_MS,
            "distress_tick_median_ms",
        ),
        shown("distress tick, p95", dist.get("p95_ms"), "ms", 2),
        shown("budget first tick (load)", bud.get("first_tick_ms"), "ms", 1),
        at_most(
            "budget tick, median",
            bud.get("median_ms"),
            "ms",
            2,
            TARGET_BUDGET_TICK_MS,
            "budget_tick_median_ms",
        ),
        shown("budget tick, p95", bud.get("p95_ms"), "ms", 2),
        at_most(
            "dispatcher check pass, median",
            new.get("dispatcher", {}).get("median_ms"),
            "ms",
            3,
            TARGET_NEW_CHECK_MS,
            "dispatcher_pass_median_ms",
        ),
        at_most(
            "dispatcher pass, stalled board, median",
            new.get("dispatcher_stalled_read", {}).get("median_ms"),
            "ms",
            3,
            TARGET_NEW_CHECK_MS,
            "dispatcher_stalled_median_ms",
        ),
        shown(
            "dispatcher full read (status, metrics), median",
            new.get("dispatcher_full_read", {}).get("median_ms"),
            "ms",
            2,
        ),
        at_most(
            "budget no-progress check, share of a pass",
            new.get("no_progress_share_ms"),
            "ms",
            3,
            TARGET_NEW_CHECK_MS,
            "no_progress_share_ms",
        ),
        shown("Hermes detect_crashed_workers, median", herm.get("median_ms"), "ms", 2),
        shown("Hermes detect_crashed_workers, p95", herm.get("p95_ms"), "ms", 2),
        (
            "Hermes median / tick median",
            fmt(ratio, "x", 1),
            f">= {TARGET_RATIO:.0f}x",
            "ratio",
            ratio is not None and ratio >= TARGET_RATIO,
        ),
        shown("heal time, median", heal.get("median_s"), "s", 1),
        (
            "heal time, p95",
            fmt(heal.get("p95_s"), "s", 1),
            f"<= {TARGET_HEAL_P95_S:.0f} s",
            "heal_p95_s",
            heal.get("p95_s") is not None
            and not heal.get("unhealed")
            and heal["p95_s"] <= TARGET_HEAL_P95_S,
        ),
        at_most(
            f"daemon VmRSS after {rss.get('after_s', 0):.0f} s",
            rss_mib,
            "MiB",
            1,
            TARGET_RSS_MB,
            "rss_mib",
        ),
        shown(
            "  the same daemon, empty board, after 30 s",
            _mib(floor.get("empty_board", {}).get("vmrss_kib")),
            "MiB",
            1,
        ),
        shown(
            "  its libraries alone, in use, no board",
            _mib(floor.get("libraries", {}).get("vmrss_kib")),
            "MiB",
            1,
        ),
    ]
    fres = res.get("fleet")
    if fres:
        for label, value, target, ok in fleet_rows(fres):
            key = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") if ok is not None else ""
            checks.append((label, value, target, key, ok))
    # Hermes's own figure beside ours, where Hermes has one (its pass reads the whole
    # running set every time: it is also its cost on an unchanged board)
    hermes_of = {
        "auto-heal tick, median": hermes_ms,
        "unchanged board, nothing due: pass, median": hermes_ms,
    }
    targets = [
        {"name": key, "value": value, "target": target, "pass": ok}
        for _, value, target, key, ok in checks
        if key
    ]
    res["ratio"] = round(ratio, 2) if ratio else None
    res["targets"] = targets
    res["all_pass"] = all(t["pass"] for t in targets) and not res["problems"]

    m = res.get("machine", {})
    print()
    print("=" * 92)
    print(
        f"kanban-watchers benchmark — {m.get('cpus')} cores, Python {m.get('python')}, "
        f"SQLite {m.get('sqlite')}, hermes-agent {m.get('hermes_agent')}"
    )
    b = res.get("board", {})
    if b:
        print(
            f"board: {b.get('tasks', 0):,} tasks, {b.get('task_runs', 0):,} runs, "
            f"{b.get('task_events', 0):,} events, {b.get('task_comments', 0):,} comments, "
            f"{b.get('size_mib')} MiB; {b.get('running_workers')} running on live workers; "
            f"blocked: {b.get('blocked_gave_up_infra_escalated')} infra give-ups (escalated), "
            f"{b.get('blocked_gave_up_task_caused')} task-caused give-ups, "
            f"{b.get('blocked_other')} other"
        )
    d = b.get("distress") if b else None
    if d:
        print("distress history: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d.items()))
    bh = b.get("budget") if b else None
    if bh:
        print("budget history: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in bh.items()))
    print("-" * 92)
    print(f"{'figure':46} {'value':>14}  {'target':>10}  {'Hermes':>10}  result")
    for label, value, target, _, ok in checks:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{label:46} {value:>14}  {target:>10}  {hermes_of.get(label, ''):>10}  {verdict}")
    print("-" * 92)
    if tick:
        print(
            f"ticks: {tick.get('n')} timed after 1 warm-up ({tick.get('warmup_ms')} ms, "
            f"{tick.get('workers_watched')} workers verified); min/max "
            f"{tick.get('min_ms')}/{tick.get('max_ms')} ms; steady state wrote nothing: "
            f"{tick.get('wrote_nothing')}; give-ups followed: {tick.get('gave_up_candidates')}"
        )
    if dist:
        print(
            f"distress: {dist.get('n')} ticks timed after the first; {dist.get('profiles')} "
            f"profiles on {', '.join(dist.get('providers') or [])}; "
            f"{dist.get('cards_indexed')} cards ({dist.get('cards_open')} open); "
            f"{dist.get('signals_in_window')} signals in the window, answered by "
            f"{dist.get('signals_answered_by')}; {dist.get('rate_signals_remembered')} "
            f"rate-limit signals remembered; steady state wrote nothing: "
            f"{dist.get('wrote_nothing')}"
        )
    if bud:
        print(
            f"budget: {bud.get('n')} ticks timed after the first; "
            f"{bud.get('open_tasks_weighed')} open tasks weighed from their history "
            f"({bud.get('tasks_with_body_budgets')} with body budgets), "
            f"{bud.get('tasks_followed')} held between passes, "
            f"{bud.get('tasks_in_snapshot')} weighed per tick; running attempts at most "
            f"{bud.get('running_max_time_fraction')} of their time and "
            f"{bud.get('running_max_iteration_fraction')} of their iteration budget "
            f"({bud.get('running_budget_sources')}); overruns answered by "
            f"{bud.get('overruns_answered_by')}; {bud.get('runs_warned')} runs warned, "
            f"{bud.get('malformed_reported')} malformed lines reported; observer memory "
            f"~{bud.get('observer_kib')} KiB (by part {bud.get('observer_kib_by_part')}); "
            "steady state wrote nothing: "
            f"{bud.get('wrote_nothing')}"
        )
    if herm:
        print(
            f"Hermes: {herm.get('n')} calls; checked {herm.get('pids_checked_per_call')} PIDs "
            f"per call ({herm.get('pids_alive')} alive), grace {herm.get('crash_grace_s')} s, "
            f"host prefix {herm.get('host_prefix')!r}; first connect "
            f"{herm.get('first_connect_s')} s (excluded); schema changes by Hermes: "
            f"{herm.get('schema_changed_by_hermes') or 'none'}"
        )
    if heal:
        print(
            f"heals: {heal.get('healed')}/{heal.get('kills')} killed workers healed "
            f"(-> {', '.join(heal.get('new_status') or []) or '?'}; "
            f"{heal.get('heals_verified')} verified as crashed by watchers), "
            f"min/max {heal.get('min_s')}/{heal.get('max_s')} s"
        )
    if rss:
        print(
            f"daemon: VmHWM {fmt((rss.get('vmhwm_kib') or 0) / 1024, 'MiB')}, "
            f"{rss.get('threads')} threads, {rss.get('pidfds')} pidfds, CPU "
            f"{fmt(rss.get('cpu_s'), 's')} in {rss.get('after_s')} s"
        )
    dl = res.get("daemon_log")
    if dl:
        print(
            f"daemon log: watchers {', '.join(dl.get('scheduled_watchers') or [])}; "
            f"{dl.get('actions')} actions, {dl.get('actions_on_other_tasks')} on tasks not "
            f"killed; {dl.get('warnings_or_errors')} warnings/errors"
        )
    sd = res.get("shutdown")
    if sd:
        print(
            f"daemon shutdown: exit code {sd['exit_code']} after {sd['shutdown_s']} s "
            f"({sd['note']})"
        )
    cl = res.get("cleanup")
    if cl:
        print(
            f"cleanup: {cl['workers']} workers stopped ({cl['killed_after_timeout']} needed "
            f"SIGKILL, {cl['still_running']} still running); temp dir removed"
        )
    print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in res["phases_s"].items()))
    print(f"total: {res['total_s']:.1f} s")
    for p in res["problems"]:
        print(f"PROBLEM: {p}")
    print(f"overall: {'PASS' if res['all_pass'] else 'FAIL'}")
    print("=" * 92)

    out.parent.mkdir(parents=True, exist_ok=True)
    slim = json.loads(json.dumps(res, default=str))
    for key in ("tick", "distress", "budget"):
        if slim.get(key):
            slim[key].pop("profile", None)
    out.write_text(json.dumps(slim, indent=2) + "\n", encoding="utf-8")
    print(f"results: {out}")
