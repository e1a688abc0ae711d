"""`watchers demo`: the three watchers at work on a live board, no Hermes needed.

A tiny dispatcher starts real worker processes for tasks on four profiles (two
providers); the daemon runs with short intervals and prints each action as it happens:
auto-heal reaps workers that die (one left a zombie, one PID handed to an unrelated
process) and resets a crash loop that infrastructure caused, leaving a task-caused one
alone; distress moves a rate-limited task to a profile on another provider and writes a
`[BLOCKED]` card for rate-limited work with no safe route; budget warns a task nearing
its time budget, then asks for a split. The board file stays for you to inspect.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchers.daemon import Daemon
from watchers.demo.dispatcher import DemoDispatcher
from watchers.logs import configure_logging
from watchers.model import Outcome, Result, TickReport
from watchers.probe import ProcessProbe
from watchers.settings import ProfileSettings, Settings, load_settings
from watchers.status import board_status, fit, render_status
from watchers.store.board import BoardStore
from watchers.store.schema import create_board

PROFILES = ("coder-claude", "coder-gpt", "reviewer")
TITLES = (
    "Add retry to the payments client",
    "Write tests for the invoice parser",
    "Fix flaky login e2e test",
    "Bump structlog and fix deprecations",
    "Document the export API",
    "Split the settings module",
    "Profile the search endpoint",
    "Review PR 4812",
    "Migrate CI cache keys",
    "Triage crash reports from last night",
    "Remove the v1 feature flag",
    "Add dark mode to the dashboard",
)
INTERVAL = 2.0
GRACE = 3.0
TIME_BUDGET = 25  # seconds: budget warns at 80 %, then cards
RATE_LIMITED = 75  # a worker's exit code on a provider's quota wall
DEADLINE_SECONDS = 75.0


def demo_settings(folder: Path) -> Settings:
    base = load_settings()
    quick = {"interval_seconds": INTERVAL, "jitter_seconds": 0.2}
    return base.model_copy(
        update={
            "auto_heal": base.auto_heal.model_copy(
                update={
                    **quick,
                    "start_grace_seconds": GRACE,
                    "reset_backoff_base_seconds": 8.0,
                    "reset_backoff_cap_seconds": 60.0,
                }
            ),
            # the demo's own Hermes root (empty): the profiles below are all there is
            "distress": base.distress.model_copy(
                update={**quick, "hermes_home": folder / "hermes"}
            ),
            "budget": base.budget.model_copy(update=quick),
            "profiles": {
                "coder-claude": ProfileSettings(provider="anthropic", group="coders"),
                "coder-gpt": ProfileSettings(provider="openai", group="coders"),
                "reviewer": ProfileSettings(provider="anthropic", group="reviewers"),
                "designer": ProfileSettings(provider="anthropic"),
            },
            "log": base.log.model_copy(update={"level": "warning"}),
            "http": base.http.model_copy(update={"enabled": False}),  # no port for a demo
        }
    )


class Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def say(self, who: str, text: str) -> None:
        with self.lock:
            print(fit(f"[{time.monotonic() - self.t0:4.1f}s] {who:<9} {text}"), flush=True)


def _show(board: Path, settings: Settings, title: str) -> dict[str, int]:
    store = BoardStore.open(board, readonly=True)
    probe = ProcessProbe(settings.hostname)
    try:
        data = board_status(store, probe, settings, time.time())
        print(f"\n{title}\n" + render_status(data) + "\n")
        return dict(data["tasks"])
    finally:
        store.close()
        probe.close()


def _pump(
    d: DemoDispatcher,
    seconds: float,
    n: Narrator,
    hold: set[str],
    until: Callable[[], bool] | None = None,
) -> None:
    """Act as the dispatcher for a while: heartbeat running workers, re-dispatch ready
    tasks (not the held ones)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for task_id in d.claim_ready(hold):
            n.say("dispatch", f"{task_id} claimed again, new worker pid {d.workers[task_id].pid}")
        for task_id in d.live_workers():
            d.heartbeat(task_id)
        if until is not None and until():
            return
        time.sleep(0.5)


def describe(o: Outcome) -> tuple[str, str]:
    """(who, what) for one applied action, in a line."""
    a, ev = o.action, o.action.evidence
    if a.kind.value == "reap" and a.plan.get("outcome") == "rate_limited":
        return "auto-heal", f"{a.task_id} requeued: its worker hit a rate limit (exit 75)"
    if a.kind.value == "reap":
        return "auto-heal", (
            f"{a.task_id} reap {a.reason} -> {a.plan['new_status']} "
            f"(pid {ev['pid']}: {ev.get('seen', '')})"
        )
    if a.kind.value == "reset":
        return (
            "auto-heal",
            f"{a.task_id} crash loop reset -> ready ({ev['backoff_seconds']}s backoff)",
        )
    if a.kind.value == "reassign":
        return "distress", (
            f"{a.task_id} moved {a.plan['from']} ({a.plan['from_provider']}) -> "
            f"{a.plan['to']} ({a.plan['to_provider']})"
        )
    if a.kind.value == "card":
        return a.watcher, f"{a.task_id} {a.plan['title'].split()[-1]} card for {a.plan['assignee']}"
    if a.kind.value == "warn":
        return "budget", (
            f"{a.task_id} warned: {ev['consumed']:.0f}s of its {ev['limit']:.0f}s time budget"
        )
    return a.watcher, f"{a.task_id} {a.kind.value} {a.reason}"


def run_demo() -> int:
    folder = Path(tempfile.mkdtemp(prefix="kanban-watchers-demo-"))
    settings = demo_settings(folder)
    configure_logging(settings.log.level, settings.log.format)
    board = create_board(folder / "kanban.db")
    n = Narrator()
    print(fit(f"kanban-watchers demo: board {board}") + "\n")
    d = DemoDispatcher(board)
    bystander: subprocess.Popen[bytes] | None = None
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    done: dict[tuple[str, str], float] = {}  # (task, action) -> when
    kills: dict[str, float] = {}
    hold: set[str] = set()
    try:
        tasks = [d.create_task(title, PROFILES[i % 3]) for i, title in enumerate(TITLES)]
        limited = d.create_task("Summarise the incident thread", "coder-claude")
        lonely = d.create_task("Draw the new onboarding flow", "designer")
        long_one = d.create_task(
            "Port the report generator", "reviewer", body=f"Time budget: {TIME_BUDGET}s"
        )
        for task_id in (*tasks, limited, lonely, long_one):
            d.claim(task_id)
            d.start_worker(task_id)
            d.heartbeat(task_id)
        n.say("dispatch", f"{len(tasks) + 3} tasks on 4 profiles, a worker process each")
        n.say("dispatch", f"{long_one} has a {TIME_BUDGET}s time budget (in its body)")
        flaky = d.create_task("Rebuild the search index (node ran out of memory)", "coder-gpt")
        buggy = d.create_task("Parse the legacy CSV export", "coder-claude")
        now = int(time.time())
        d.record_give_up(
            flaky, ["pid 4101 killed by signal 9", "pid 4188 exited with code 137"], at=now
        )
        d.record_give_up(
            buggy, ["pid 4120 exited with code 1", "pid 4199 exited with code 1"], at=now
        )
        n.say("history", f"{flaky} blocked by Hermes's breaker after two OOM kills")
        n.say("history", f"{buggy} blocked after two exits with code 1 (its own bug)")
        before = _show(board, settings, "BEFORE")

        def on_report(report: TickReport) -> None:
            for o in report.outcomes:
                if o.result is Result.HELD:
                    n.say("guard", f"{o.action.task_id} held back: {o.detail}")
                if o.result is not Result.APPLIED:
                    continue
                who, what = describe(o)
                a = o.action
                if a.task_id in kills and a.kind.value == "reap":
                    what += f" [{time.monotonic() - kills[a.task_id]:.1f}s after]"
                n.say(who, what)
                done[(a.task_id, a.kind.value)] = time.monotonic()
                if a.kind.value == "reassign":
                    hold.discard(a.task_id)  # moved: the dispatcher may run it again

        daemon = Daemon(lambda: settings, [board], on_report=on_report)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        n.say("daemon", f"started: passes every {INTERVAL:.0f}s, woken at once by deaths")
        _pump(d, GRACE + 1, n, hold)

        victims = tasks[:5]
        pid = d.kill_worker(victims[0])
        kills[victims[0]] = time.monotonic()
        n.say("chaos", f"SIGKILL {victims[0]} worker pid {pid} (reaped by its parent)")
        _pump(d, 3, n, hold)
        pid = d.kill_worker(victims[1], reap=False)
        kills[victims[1]] = time.monotonic()
        n.say("chaos", f"SIGKILL {victims[1]} worker pid {pid} (never reaped: a zombie)")
        _pump(d, 3, n, hold)
        pid = d.kill_worker(victims[2])
        bystander = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
        d.record_pid(victims[2], bystander.pid)
        kills[victims[2]] = time.monotonic()
        n.say("chaos", f"SIGKILL {victims[2]} worker; its row now names pid {bystander.pid}")
        _pump(d, 3, n, hold)
        for victim in victims[3:5]:
            pid = d.kill_worker(victim)
            kills[victim] = time.monotonic()
            n.say("chaos", f"SIGKILL {victim} worker pid {pid}")
        _pump(d, 3, n, hold)

        hold.update((limited, lonely))  # wait for distress before running them again
        d.exit_worker(limited, RATE_LIMITED)
        n.say("chaos", f"{limited} on coder-claude (anthropic): 429, worker exits 75")
        d.exit_worker(lonely, RATE_LIMITED)
        n.say("chaos", f"{lonely} on designer (anthropic, no fallback): exits 75")

        expected = {
            *((v, "reap") for v in victims),
            (flaky, "reset"),
            (limited, "reassign"),
            (lonely, "card"),
            (long_one, "warn"),
            (long_one, "card"),
        }
        _pump(
            d,
            DEADLINE_SECONDS,
            n,
            hold,
            until=lambda: expected <= done.keys() and _settled(d, hold),
        )
        missing = expected - done.keys()
        _pump(d, 1, n, hold)
        if daemon is not None:
            daemon.request_stop()
        after = _show(board, settings, "AFTER (workers still running)")
        finished = [t for t in d.live_workers() if d.complete(t, "finished by the demo")]
        n.say("dispatch", f"{len(finished)} running tasks completed; workers stopped")
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if daemon is not None:
            daemon.request_stop()
        if thread is not None:
            thread.join(timeout=10)
        if bystander is not None:
            bystander.kill()
            bystander.wait()
        d.close()
    times = sorted(done[(t, "reap")] - kills[t] for t in kills if (t, "reap") in done)
    yes = {True: "yes", False: "no"}
    print("Summary")
    print(
        f"  auto-heal: dead workers healed {len(times)} of {len(kills)}"
        + (f" (kill to ready: median {times[len(times) // 2]:.1f}s)" if times else "")
    )
    print(f"    infrastructure crash loop reset: {yes[(flaky, 'reset') in done]} ({flaky})")
    print(f"    task-caused crash loop left blocked: {yes[(buggy, 'reset') not in done]} ({buggy})")
    print(f"    healthy workers never touched: {len(TITLES) - len(kills)}")
    print(f"  distress: rate-limited task moved to openai: {yes[(limited, 'reassign') in done]}")
    print(f"    [BLOCKED] card for work with no safe route: {yes[(lonely, 'card') in done]}")
    print(
        f"  budget: warned at 80%: {yes[(long_one, 'warn') in done]}; "
        f"split card at 100%: {yes[(long_one, 'card') in done]}"
    )
    changed = [f"{k} {before.get(k, 0)}->{v}" for k, v in after.items() if before.get(k, 0) != v]
    print(fit("  board before -> after: " + (", ".join(changed) or "unchanged")))
    print(f"\nThe board is kept. Look at it yourself:\n  watchers status --board {board}")
    if missing:
        print(
            f"\nnot seen within {DEADLINE_SECONDS:.0f}s: "
            + ", ".join(f"{t} {k}" for t, k in sorted(missing)),
            file=sys.stderr,
        )
        return 1
    return 0


def _settled(d: DemoDispatcher, hold: set[str]) -> bool:
    """No task is waiting in ready but the held ones and the cards: every healed task has
    a new worker."""
    return set(d.waiting()) <= hold
