"""Which failures are the machine's fault: the documented default rules."""

from __future__ import annotations

import pytest

from watchers.autoheal.rules import classify
from watchers.model import FailureRecord
from watchers.settings import AutoHealSettings, Rule

S = AutoHealSettings()


@pytest.mark.parametrize(
    ("error", "outcome", "rule"),
    [
        ("pid 4 killed by signal 9", "crashed", "sigkill"),
        ("pid 4 exited with code 137", "crashed", "exit-137"),
        ("oom-kill event in cgroup", "crashed", "oom"),
        ("[Errno 12] Cannot allocate memory", "spawn_failed", "oom"),
        ("OSError: [Errno 28] No space left on device", "crashed", "disk-full"),
        ("sqlite3.OperationalError: database is locked", "crashed", "db-locked"),
        ("ConnectionRefusedError: [Errno 111] Connection refused", "crashed", "connection-refused"),
        ("Connection reset by peer", "crashed", "connection-reset"),
        ("socket.gaierror: [Errno -3] Temporary failure in name resolution", "crashed", "dns"),
        ("timed out connecting to 127.0.0.1:8080", "crashed", "local-service-timeout"),
        ("[Errno 11] Resource temporarily unavailable", "spawn_failed", "spawn-os-error"),
    ],
)
def test_infrastructure_failures_are_recognised(error, outcome, rule):
    """Each documented infrastructure cause matches its named rule."""
    found = classify(FailureRecord(1, outcome, error), S)
    assert found.infra and found.rule == rule


@pytest.mark.parametrize(
    "error",
    [
        "pid 4 exited with code 1",
        "pid 4 exited with code 2",
        "pid 4 not alive",
        "worker exited cleanly (rc=0) without calling kanban_complete — protocol violation",
        "Traceback (most recent call last):\n  ConnectionRefusedError: Connection refused",
        "elapsed 3600s > limit 1800s",
        "no heartbeat for 3700s",
        "",
    ],
)
def test_task_caused_or_unknown_failures_are_not_infrastructure(error):
    """The agent's own exits, tracebacks and protocol violations are never reset."""
    assert not classify(FailureRecord(1, "crashed", error), S).infra


def test_an_os_error_counts_only_when_spawning():
    """[Errno …] from a spawn is the machine; inside a crashed run it may be the task."""
    err = "[Errno 24] Too many open files"
    assert classify(FailureRecord(1, "spawn_failed", err), S).infra
    assert not classify(FailureRecord(1, "crashed", err), S).infra


def test_extra_rules_extend_the_defaults():
    """extra_infra_rules adds site-specific causes without restating the defaults."""
    s = S.model_copy(
        update={"extra_infra_rules": (Rule(name="nfs", pattern="stale NFS file handle"),)}
    )
    found = classify(FailureRecord(1, "crashed", "Stale NFS file handle"), s)
    assert found.infra and found.rule == "nfs"
