"""The systemd unit, checked offline with systemd-analyze (no systemd as PID 1 needed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "kanban-watchers.service"
EXEC = "/usr/local/bin/watchers"
MAX_EXPOSURE = 2.0


@pytest.fixture
def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is required in CI (Debian: apt-get install systemd)")
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


def _watchers_executable() -> str:
    candidate = Path(sys.executable).parent / "watchers"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("watchers")
    if found is None:
        pytest.fail("the `watchers` entry point is not installed (pip install .)")
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_the_unit_verifies_without_a_single_message(analyze, tmp_path):
    """`verify` exits 0 even with warnings: any output at all is a failure. It also
    checks that ExecStart's binary exists, so a copy of the unit points at the
    installed entry point instead of /usr/local/bin/watchers; nothing else changes."""
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC} run ") == 1
    copy = tmp_path / UNIT.name  # same name: verify checks it as kanban-watchers.service
    copy.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={_watchers_executable()} "))
    r = _run(analyze, "verify", str(copy))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_the_unit_scores_at_most_2_0_exposure(analyze):
    r = _run(analyze, "security", "--offline=yes", "--threshold=20", str(UNIT))
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, r.stdout


def test_the_unit_says_what_the_daemon_needs():
    """The settings the daemon relies on, and none that would break it."""
    lines = [
        line.strip()
        for line in UNIT.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sections: dict[str, list[str]] = {}
    current = ""
    for line in lines:
        if line.startswith("["):
            current = line
            continue
        sections.setdefault(current, []).append(line)
    unit, service = sections["[Unit]"], sections["[Service]"]
    for needed in ("Type=notify", "Restart=on-failure", "RestartSec=5"):
        assert needed in service
    assert "RestartPreventExitStatus=78 69" in service  # bad config, taken port: no storm
    assert any(s.startswith("WatchdogSec=") for s in service)
    assert any(s.startswith("StartLimitIntervalSec=") for s in unit)
    assert any(s.startswith("StartLimitBurst=") for s in unit)
    assert not any(s.startswith("StartLimit") for s in service)
    assert "User=agents" in service
    assert "LoadCredential=metrics-password:/etc/kanban-watchers/metrics-password" in service
    # the password file is optional: this default makes a missing one non-fatal
    assert "SetCredential=metrics-password:\\n" in service
    assert any(
        s.startswith(f"ExecStart={EXEC} run --config /etc/kanban-watchers/") for s in service
    )
    body = "\n".join(lines)
    # /proc must stay visible to psutil, or every worker looks dead
    for forbidden in ("ProtectProc=invisible", "ProcSubset=pid", "DynamicUser=yes"):
        assert forbidden not in body
    # RemoveIPC= with User=agents would delete the agents' own IPC objects at every stop
    assert not any(s.startswith("RemoveIPC=") for s in service)
    # not on systemd 252
    for forbidden in ("Type=notify-reload", "ImportCredential="):
        assert forbidden not in body
