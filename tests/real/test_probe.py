"""The probe against real processes: alive, gone, zombie, reused, and the pidfd cache."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

from watchers.model import Verdict
from watchers.probe import ProcessProbe, WorkerRef

TASK = "t_c0ffee01"


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """A process that has finished exec (its command line is readable)."""
    p = subprocess.Popen(
        [sys.executable, "-S", "-c", "import sys; sys.stdin.read()", *args],
        stdin=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not psutil.Process(p.pid).cmdline():  # the kernel finishing exec, not a timer
        assert time.monotonic() < deadline
    return p


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture
def probe() -> Iterator[ProcessProbe]:
    pr = ProcessProbe()
    yield pr
    pr.close()


def worker(procs, task: str = TASK) -> subprocess.Popen[bytes]:
    p = spawn(f"work kanban task {task}")
    procs.append(p)
    return p


def ref(p: subprocess.Popen[bytes], task: str = TASK, **kw) -> WorkerRef:
    started = psutil.Process(p.pid).create_time()
    fields = dict(task_id=task, pid=p.pid, run_id=1, claimed_at=int(started) - 1)
    fields.update(kw)
    return WorkerRef(**fields)


def until_zombie(p: subprocess.Popen[bytes]) -> None:
    """Wait for the kernel to mark an unreaped child as exited (bounded)."""
    deadline = time.monotonic() + 10
    while psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline


def judge(probe: ProcessProbe, r: WorkerRef):
    return probe.observe([r], spawn_slack=120)[r.task_id]


def test_a_running_worker_that_carries_its_task_id_is_alive(probe, procs):
    """The verified worker is alive."""
    p = worker(procs)
    assert judge(probe, ref(p)).verdict is Verdict.ALIVE


def test_a_pid_with_no_process_is_gone(probe, procs):
    """A worker that exited and was reaped is gone."""
    p = worker(procs)
    r = ref(p)
    p.kill()
    p.wait()
    assert judge(probe, r).verdict is Verdict.GONE


def test_an_unreaped_worker_is_a_zombie_and_its_signal_is_read(probe, procs):
    """A worker killed but not waited for is a zombie; /proc tells how it died."""
    p = worker(procs)
    r = ref(p)
    p.send_signal(signal.SIGKILL)
    until_zombie(p)
    obs = judge(probe, r)
    assert obs.verdict is Verdict.ZOMBIE
    assert obs.signal == 9


@pytest.mark.parametrize(("script", "code"), [("import sys; sys.exit(75)", 75), ("pass", 0)])
def test_a_zombies_exit_code_is_read(probe, procs, script, code):
    """75 is a rate-limited worker; 0 of our own child is a clean exit, not an unknown one."""
    p = subprocess.Popen([sys.executable, "-S", "-c", script, f"task {TASK}"])
    procs.append(p)
    r = WorkerRef(TASK, p.pid, 1, int(psutil.Process(p.pid).create_time()) - 1)
    until_zombie(p)
    obs = judge(probe, r)
    assert (obs.verdict, obs.exit_code, obs.signal) == (Verdict.ZOMBIE, code, None)


def test_a_process_without_the_task_id_on_its_command_line_is_reused(probe, procs):
    """The PID now runs something else."""
    p = spawn("an unrelated program")
    procs.append(p)
    obs = judge(probe, ref(p))
    assert obs.verdict is Verdict.REUSED
    assert TASK in obs.detail


def test_a_process_born_long_after_the_claim_is_reused(probe, procs):
    """Even carrying the task id, a process born 10 minutes after the claim is not the worker."""
    p = worker(procs)
    r = ref(p, claimed_at=int(psutil.Process(p.pid).create_time()) - 600)
    obs = judge(probe, r)
    assert obs.verdict is Verdict.REUSED and "after the claim" in obs.detail


def test_a_process_born_before_the_claim_is_reused(probe, procs):
    """A process older than the claim cannot be the claim's worker."""
    p = worker(procs)
    r = ref(p, claimed_at=int(psutil.Process(p.pid).create_time()) + 60)
    assert judge(probe, r).verdict is Verdict.REUSED


def test_worker_started_at_is_used_when_the_board_has_it(probe, procs):
    """A recorded process start time that does not match means another process."""
    p = worker(procs)
    started = psutil.Process(p.pid).create_time()
    assert judge(probe, ref(p, worker_started_at=started)).verdict is Verdict.ALIVE
    assert judge(probe, ref(p, worker_started_at=started - 30)).verdict is Verdict.REUSED


def test_a_watched_worker_that_dies_is_seen_on_the_next_look(probe, procs):
    """After the first look the worker is watched through a pidfd; its death still shows."""
    p = worker(procs)
    r = ref(p)
    assert judge(probe, r).verdict is Verdict.ALIVE
    assert probe.watching == 1
    assert judge(probe, r).verdict is Verdict.ALIVE
    p.kill()
    p.wait()
    assert judge(probe, r).verdict is Verdict.GONE
    assert probe.watching == 0


def test_a_watched_worker_that_becomes_a_zombie_is_seen(probe, procs):
    """A pidfd turns readable on exit, before the parent reaps."""
    p = worker(procs)
    r = ref(p)
    assert judge(probe, r).verdict is Verdict.ALIVE
    p.kill()
    until_zombie(p)
    assert judge(probe, r).verdict is Verdict.ZOMBIE


def test_without_pidfds_the_probe_falls_back_to_proc_start_times(probe, procs):
    """Where pidfd_open is unavailable, /proc/<pid>/stat start times catch death and reuse."""
    probe._pidfd_ok = False
    p = worker(procs)
    r = ref(p)
    assert judge(probe, r).verdict is Verdict.ALIVE
    assert judge(probe, r).verdict is Verdict.ALIVE
    p.kill()
    p.wait()
    assert judge(probe, r).verdict is Verdict.GONE


def test_a_process_caught_before_its_command_line_is_readable_is_not_trusted(
    probe, procs, monkeypatch
):
    """Mid-exec the command line reads empty: alive for now, but never cached as the worker."""
    p = worker(procs)
    monkeypatch.setattr(psutil.Process, "cmdline", lambda self: [])
    obs = judge(probe, ref(p))
    assert obs.verdict is Verdict.ALIVE and obs.detail == "command line not readable yet"
    assert probe.watching == 0


def test_workers_no_longer_asked_about_are_forgotten(probe, procs):
    """The watch cache only holds the workers of the last look (no descriptor leak)."""
    a, b = worker(procs, "t_0000000a"), worker(procs, "t_0000000b")
    probe.observe([ref(a, "t_0000000a"), ref(b, "t_0000000b")], 120)
    assert probe.watching == 2
    probe.observe([ref(a, "t_0000000a")], 120)
    assert probe.watching == 1


def _exits_within(probe: ProcessProbe, seconds: float) -> set[str]:
    """What `exited_scopes` reports within `seconds` (a failure bound, not a latency)."""
    deadline = time.monotonic() + seconds
    found: set[str] = set()
    while not found and time.monotonic() < deadline:
        found = probe.exited_scopes(0.5)
    return found


def test_a_watched_workers_exit_is_reported_once_with_its_scope(probe, procs):
    """The pidfd path: an exit wakes exited_scopes, once."""
    p = worker(procs)
    probe.observe([ref(p)], 120, scope="auto-heal:/b/kanban.db")
    assert probe.exited_scopes(0) == set()
    p.kill()
    assert _exits_within(probe, 10) == {"auto-heal:/b/kanban.db"}
    assert probe.exited_scopes(0) == set()


def test_without_pidfds_an_exit_is_still_reported_within_about_a_second(probe, procs):
    """The fallback: watches without a pidfd are compared by /proc start time about once a
    second, so the reflex hears of deaths there too (once each)."""
    probe._pidfd_ok = False
    p = worker(procs)
    probe.observe([ref(p)], 120, scope="auto-heal:/b/kanban.db")
    assert probe.watching == 1
    assert probe.exited_scopes(0) == set()
    p.kill()
    p.wait()
    assert _exits_within(probe, 10) == {"auto-heal:/b/kanban.db"}
    assert _exits_within(probe, 1.5) == set()  # told once; the next observe judges it


def test_an_interrupt_ends_a_long_wait_for_exits_also_after_close():
    """The reflex waits long when nothing is pending; stopping it must not wait that out,
    also after `close` (the daemon closes and reuses its probe on every schedule)."""
    probe = ProcessProbe()
    try:
        for _ in range(2):
            got: list[set[str]] = []
            waiter = threading.Thread(
                target=lambda got=got: got.append(probe.exited_scopes(3600.0))
            )
            waiter.start()
            probe.interrupt()
            waiter.join(30.0)  # a failure timeout only
            assert not waiter.is_alive() and got == [set()]
            probe.close()
    finally:
        probe.close()
