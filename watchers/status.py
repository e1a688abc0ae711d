"""`watchers status`: what a board looks like to the daemon, without changing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watchers.cards import readable_time
from watchers.dispatcher.decide import stalled
from watchers.dispatcher.locks import lock_holder
from watchers.dispatcher.observe import observe
from watchers.distress.watcher import Distress
from watchers.hermes.claims import attempt_age, is_host_local
from watchers.hermes.dispatching import DispatchRulesReader
from watchers.hermes.profiles import hermes_root
from watchers.model import KNOWN_STATUSES, Observation, RunningTask, TaskStatus, Verdict
from watchers.probe import Probe, WorkerRef
from watchers.settings import Settings
from watchers.store.board import BoardStore

NO_CLAIM = "unclaimed"
NO_PID = "no-pid"
WORKER_VERDICTS = (*(v.value for v in Verdict), NO_CLAIM, NO_PID)
"""Every verdict `worker_verdicts` gives: the probe's, and two for rows it cannot judge."""


def worker_verdicts(
    running: Sequence[RunningTask], probe: Probe, settings: Settings, scope: str = "default"
) -> dict[str, tuple[str, str]]:
    """(verdict, detail) per running task id; host-local workers are probed."""
    host = settings.hostname or probe.hostname
    aliases = settings.auto_heal.host_aliases
    refs = [
        WorkerRef(
            t.task_id, t.worker_pid, t.current_run_id, t.attempt_started_at, t.worker_started_at
        )
        for t in running
        if t.worker_pid is not None and is_host_local(t.claim_lock, host, aliases)
    ]
    seen = probe.observe(refs, settings.auto_heal.spawn_slack_seconds, scope)
    out: dict[str, tuple[str, str]] = {}
    for t in running:
        obs: Observation | None = seen.get(t.task_id)
        if not t.claimed:
            out[t.task_id] = NO_CLAIM, "running with no claim"
        elif not is_host_local(t.claim_lock, host, aliases):
            out[t.task_id] = Verdict.REMOTE.value, f"claimed on {t.claim_host}"
        elif obs is None:
            out[t.task_id] = NO_PID, "no worker pid recorded"
        else:
            out[t.task_id] = obs.verdict.value, obs.detail
    return out


def dispatcher_status(store: BoardStore, settings: Settings, now: float) -> dict[str, Any]:
    """Hermes's dispatcher on this board: its last claim, the oldest dispatchable ready
    task, whether that is a stall, and who holds the dispatch lock."""
    rules = DispatchRulesReader(hermes_root(settings.distress.hermes_home)).read()
    state, _ = observe(store, rules)
    stall = stalled(state, settings.dispatcher, now)
    holder = lock_holder(store.path)
    last = state.last_claim_at
    return {
        "stalled": stall is not None,
        "stall_seconds": settings.dispatcher.stall_seconds,
        "last_claim_at": last,
        "last_claim_age_seconds": None if last is None else round(max(0.0, now - last), 1),
        "ready": state.ready,
        "dispatchable": state.dispatchable,
        "held_back": dict(sorted(state.held_back.items())),
        "running": state.running,
        "oldest_ready_task": state.oldest_task,
        "oldest_ready_waiting_since": state.oldest_since,
        "oldest_ready_age_seconds": round(state.oldest_age(now), 1),
        "dispatch_lock": holder.as_record(),
    }


def board_status(store: BoardStore, probe: Probe, settings: Settings, now: float) -> dict[str, Any]:
    counts, skipped_counts = store.status_counts()
    running, skipped = store.running_tasks()
    host = settings.hostname or probe.hostname
    verdicts = worker_verdicts(running, probe, settings)
    rows = []
    for t in sorted(running, key=lambda t: t.task_id):
        verdict, detail = verdicts[t.task_id]
        age = attempt_age(t, now)
        rows.append(
            {
                "task_id": t.task_id,
                "assignee": t.assignee,
                "pid": t.worker_pid,
                "claim_lock": t.claim_lock,
                "verdict": verdict,
                "detail": detail,
                "attempt_age_seconds": None if age is None else round(age, 1),
                "heartbeat_age_seconds": (
                    None
                    if t.last_heartbeat_at is None
                    else round(max(0.0, now - t.last_heartbeat_at), 1)
                ),
                "consecutive_failures": t.consecutive_failures,
            }
        )
    providers = []
    for name, c in sorted(Distress(probe).provider_states(store, settings, now).items()):
        cooling = c is not None and c.cooling(now)
        providers.append(
            {
                "provider": name,
                "cooling": cooling,
                "eligible_at": round(c.until if c is not None and cooling else now, 1),
                "episode": c.episode if c is not None else 0,
                "reason": c.reason if c is not None else "not cooling",
            }
        )
    return {
        "board": store.slug,
        "path": str(store.path),
        "host": host,
        "tasks": {s.value: counts.get(s.value, 0) for s in TaskStatus},
        "running": rows,
        "providers": providers,
        "dispatcher": dispatcher_status(store, settings, now),
        "skipped": [
            {"task_id": r.task_id, "problem": r.problem} for r in (*skipped_counts, *skipped)
        ],
    }


def _fmt_age(value: float | None) -> str:
    if value is None:
        return "never"
    if value < 120:
        return f"{value:.0f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


WIDTH = 80
SCHEMA_VERSION = 1
"""`watchers status --json`'s shape: {"schema_version", "boards": [...]}; each board has
"board", "path" and "errors" (a board that could not be read has only those)."""


def fit(line: str, width: int = WIDTH) -> str:
    """A line cut to `width` columns; a cut one ends with an ellipsis."""
    return line if len(line) <= width else line[: width - 1] + "…"


def render_problem(board: str, path: str, errors: Sequence[str]) -> str:
    lines = [f"board {board}  ({path})"]
    lines += [f"  error: {e}" for e in errors]
    return "\n".join(fit(line) for line in lines)


def render_dispatcher(d: dict[str, Any]) -> list[str]:
    """`dispatcher: last claim 3m ago; oldest ready 12m (4 waiting); STALLED`, and when it
    is stalled, who holds the dispatch lock."""
    last = d["last_claim_age_seconds"]
    line = "  dispatcher: " + (
        "no claim ever" if last is None else f"last claim {_fmt_age(last)} ago"
    )
    if d["dispatchable"]:
        line += f"; oldest ready {_fmt_age(d['oldest_ready_age_seconds'])} ({d['dispatchable']} waiting)"
    elif d["ready"]:
        line += f"; {d['ready']} ready, none dispatchable"
    else:
        line += "; nothing ready"
    if not d["stalled"]:
        return [line]
    return [line + "; STALLED", f"  dispatch lock: {d['dispatch_lock']['detail']}"]


def render_status(data: dict[str, Any]) -> str:
    lines = [f"board {data['board']}  host {data['host']}  ({data['path']})"]
    line = "  tasks:"
    for k, v in data["tasks"].items():
        if k not in KNOWN_STATUSES:
            continue
        if len(line) + len(f"  {k} {v}") > WIDTH:
            lines.append(line)
            line = "        "
        line += f" {k} {v}" if line.endswith((":", " ")) else f"  {k} {v}"
    lines.append(line)
    if data["running"]:
        lines.append(
            f"  {'task':<12} {'assignee':<14} {'pid':>7}  {'worker':<9} "
            f"{'heartbeat':>9} {'attempt':>8}  detail"
        )
        for r in data["running"]:
            lines.append(
                f"  {r['task_id']:<12} {(r['assignee'] or '-')[:14]:<14} {r['pid'] or '-'!s:>7}  "
                f"{r['verdict']:<9} {_fmt_age(r['heartbeat_age_seconds']):>9} "
                f"{_fmt_age(r['attempt_age_seconds']):>8}  {r['detail']}"
            )
    else:
        lines.append("  no running tasks")
    for p in data["providers"]:
        if p["cooling"]:
            state = (
                f"cooling until {readable_time(p['eligible_at'])} "
                f"(cooldown {p['episode']}: {p['reason']})"
            )
        else:
            state = "eligible" + ("" if p["episode"] else f" ({p['reason']})")
        lines.append(f"  provider {p['provider']}: {state}")
    lines += render_dispatcher(data["dispatcher"])
    for s in data["skipped"]:
        lines.append(f"  skipped: {s['task_id'] or '-'}: {s['problem']}")
    return "\n".join(fit(line) for line in lines)
