"""`watchers demo`: watch the daemon heal a live board, no Hermes needed.

A tiny dispatcher starts real worker processes for a dozen tasks on three profiles;
then the demo kills some (one left a zombie, one PID handed to an unrelated
process), while the daemon runs with short intervals and prints each heal as it
happens. A task that Hermes's breaker blocked after infrastructure crashes is reset;
one blocked by its own bug is left alone. The board file stays for you to inspect.
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
from watchers.model import Result, TickReport
from watchers.probe import ProcessProbe
from watchers.settings import Settings, load_settings
from watchers.status import board_status, render_status
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
DEADLINE_SECONDS = 75.0


def demo_settings() -> Settings:
    base = load_settings()
    return base.model_copy(
        update={
            "auto_heal": base.auto_heal.model_copy(
                update={
                    "interval_seconds": INTERVAL,
                    "jitter_seconds": 0.2,
                    "start_grace_seconds": GRACE,
                    "reset_backoff_base_seconds": 8.0,
                    "reset_backoff_cap_seconds": 60.0,
                }
            ),
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
            print(f"[{time.monotonic() - self.t0:5.1f}s] {who:<10} {text}", flush=True)


def _show(board: Path, settings: Settings, title: str) -> None:
    store = BoardStore.open(board, readonly=True)
    probe = ProcessProbe(settings.hostname)
    try:
        print(
            f"\n{title}\n" + render_status(board_status(store, probe, settings, time.time())) + "\n"
        )
    finally:
        store.close()
        probe.close()


def _pump(
    d: DemoDispatcher, seconds: float, n: Narrator, until: Callable[[], bool] | None = None
) -> None:
    """Act as the dispatcher for a while: heartbeat running workers, re-dispatch ready tasks."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for task_id in d.claim_ready():
            n.say("dispatch", f"{task_id} claimed again, new worker pid {d.workers[task_id].pid}")
        for task_id in d.live_workers():
            d.heartbeat(task_id)
        if until is not None and until():
            return
        time.sleep(0.5)


def run_demo() -> int:
    settings = demo_settings()
    configure_logging(settings.log.level, settings.log.format)
    folder = Path(tempfile.mkdtemp(prefix="kanban-watchers-demo-"))
    board = create_board(folder / "kanban.db")
    n = Narrator()
    print(f"kanban-watchers demo: board {board}\n")
    d = DemoDispatcher(board)
    bystander: subprocess.Popen[bytes] | None = None
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    try:
        tasks = [d.create_task(title, PROFILES[i % 3]) for i, title in enumerate(TITLES)]
        for task_id in tasks:
            d.claim(task_id)
            d.start_worker(task_id)
            d.heartbeat(task_id)
        n.say(
            "dispatch",
            f"{len(tasks)} tasks on {len(PROFILES)} profiles; {len(tasks)} worker processes started",
        )
        flaky = d.create_task("Rebuild the search index (node ran out of memory)", "coder-gpt")
        buggy = d.create_task("Parse the legacy CSV export", "coder-claude")
        now = int(time.time())
        d.record_give_up(
            flaky, ["pid 4101 killed by signal 9", "pid 4188 exited with code 137"], at=now
        )
        d.record_give_up(
            buggy, ["pid 4120 exited with code 1", "pid 4199 exited with code 1"], at=now
        )
        n.say(
            "history",
            f"{flaky} was blocked by Hermes's breaker after two OOM kills (infrastructure)",
        )
        n.say("history", f"{buggy} was blocked after two exits with code 1 (its own bug)")
        _show(board, settings, "BEFORE")

        heals: dict[str, float] = {}
        kills: dict[str, float] = {}

        def on_report(report: TickReport) -> None:
            for o in report.outcomes:
                if o.result is not Result.APPLIED:
                    if o.result is Result.HELD:
                        n.say("guard", f"{o.action.task_id} held back: {o.detail}")
                    continue
                a = o.action
                when = ""
                if a.task_id in kills:
                    when = f"  [{time.monotonic() - kills[a.task_id]:.1f}s after the kill]"
                if a.kind.value == "reap":
                    seen = a.evidence.get("seen", "")
                    n.say(
                        "heal",
                        f"{a.task_id} reap {a.reason} -> {a.plan['new_status']} (pid {a.evidence['pid']}: {seen}){when}",
                    )
                elif a.kind.value == "reset":
                    n.say(
                        "heal",
                        f"{a.task_id} reset after infrastructure crash loop -> ready ({a.evidence['backoff_seconds']}s backoff)",
                    )
                else:
                    n.say("heal", f"{a.task_id} {a.kind.value} {a.reason}")
                heals[a.task_id] = time.monotonic()

        daemon = Daemon(lambda: settings, [board], on_report=on_report)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        n.say("daemon", f"started: auto-heal every {INTERVAL:.0f}s, start grace {GRACE:.0f}s")
        _pump(d, GRACE + 1, n)

        victims = tasks[:5]
        pid = d.kill_worker(victims[0])
        kills[victims[0]] = time.monotonic()
        n.say("chaos", f"SIGKILL {victims[0]} worker pid {pid} (reaped by its parent: gone)")
        _pump(d, 4, n)

        pid = d.kill_worker(victims[1], reap=False)
        kills[victims[1]] = time.monotonic()
        n.say("chaos", f"SIGKILL {victims[1]} worker pid {pid} (never reaped: a zombie)")
        _pump(d, 4, n)

        pid = d.kill_worker(victims[2])
        bystander = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
        d.record_pid(victims[2], bystander.pid)
        kills[victims[2]] = time.monotonic()
        n.say(
            "chaos",
            f"SIGKILL {victims[2]} worker pid {pid}; its row now names pid {bystander.pid}, an unrelated 'sleep' (PID reuse)",
        )
        _pump(d, 4, n)

        for victim in victims[3:5]:
            pid = d.kill_worker(victim)
            kills[victim] = time.monotonic()
            n.say("chaos", f"SIGKILL {victim} worker pid {pid}")
        expected = {*victims, flaky}
        _pump(d, DEADLINE_SECONDS, n, until=lambda: expected <= heals.keys() and _settled(d))
        missing = expected - heals.keys()
        _pump(d, 1, n)
        if daemon is not None:
            daemon.request_stop()
        _show(board, settings, "AFTER (workers still running)")
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
    times = [heals[t] - kills[t] for t in kills if t in heals]
    print("\nSummary")
    print(
        f"  dead workers healed: {len([t for t in kills if t in heals])} of {len(kills)}"
        + (
            f" (kill to ready: median {sorted(times)[len(times) // 2]:.1f}s, max {max(times):.1f}s)"
            if times
            else ""
        )
    )
    print(f"  infrastructure crash loop reset: {'yes' if flaky in heals else 'no'} ({flaky})")
    print(
        f"  task-caused crash loop left blocked: {'yes' if buggy not in heals else 'no'} ({buggy})"
    )
    print(f"  healthy workers never touched: {len(TITLES) - len(kills)}")
    print(f"\nThe board is kept. Look at it yourself:\n  watchers status --board {board}")
    if missing:
        print(
            f"\nnot healed within {DEADLINE_SECONDS:.0f}s: {', '.join(sorted(missing))}",
            file=sys.stderr,
        )
        return 1
    return 0


def _settled(d: DemoDispatcher) -> bool:
    """No task is waiting in ready: every healed task has a new worker."""
    return d.conn.execute("SELECT 1 FROM tasks WHERE status = 'ready' LIMIT 1").fetchone() is None
