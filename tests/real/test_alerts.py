"""The alerting rules and the exposition, checked by the real promtool.

`promtool` comes with the Debian package `prometheus` (CI installs it). Without it
these tests fail when CI is set and are skipped otherwise. The runbook links are read
from the files and need no promtool.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.real.test_daemon import wait_for
from tests.real.test_http import CONTRACT, fetch, samples

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus-alerts.yml"
RULE_TESTS = ROOT / "config" / "prometheus-alerts.test.yml"
README = ROOT / "README.md"
ALERTS = (
    "KanbanWatchersDown",
    "KanbanWatchersAbsent",
    "KanbanWatchersWatcherStale",
    "KanbanWatchersWatcherNeverSucceeded",
    "KanbanWatchersTicksFailing",
    "KanbanWatchersGuardTripped",
    "KanbanWatchersProviderCoolingLong",
    "KanbanWatchersDistressCardsPilingUp",
    "KanbanWatchersDeadWorkersNotHealed",
    "KanbanDispatcherStalled",
    "KanbanWorkerLooping",
    "KanbanTaskParked",
)


def runbook_anchor(alert: str) -> str:
    """The README's anchor for an alert's runbook: `runbook-` and the name in lower case."""
    return f"runbook-{alert.lower()}"


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_every_alert_links_its_runbook():
    """Each alert's runbook_url is its anchor in the README of the project's repository."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme_url = project["urls"]["Homepage"].rstrip("/") + "/blob/main/README.md"
    found = rules()
    assert sorted(found) == sorted(ALERTS)
    for alert, rule in found.items():
        url = rule.get("annotations", {}).get("runbook_url")
        assert url == f"{readme_url}#{runbook_anchor(alert)}", (alert, url)


def test_every_runbook_anchor_is_in_the_readme_once():
    """The README carries `<a id="runbook-…"></a>` once for every alert, so the links land."""
    text = README.read_text(encoding="utf-8")
    anchors = [runbook_anchor(alert) for alert in ALERTS]
    if 'id="runbook-' not in text:
        pytest.skip("README.md has no runbook anchors yet: " + ", ".join(anchors))
    wrong = {a: n for a in anchors if (n := text.count(f'<a id="{a}"></a>')) != 1}
    assert not wrong, f"anchors not exactly once in README.md: {wrong}"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must have it")
        pytest.skip(reason)
    return path


def run(promtool: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], input=stdin, capture_output=True, timeout=60, cwd=ROOT)


def output(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout + proc.stderr).decode(errors="replace")


def test_the_alerting_rules_are_valid(promtool):
    """`promtool check rules` accepts the file, and it defines every documented alert."""
    proc = run(promtool, "check", "rules", str(RULES))
    assert proc.returncode == 0, output(proc)
    assert f"SUCCESS: {len(ALERTS)} rules found" in output(proc), output(proc)
    text = RULES.read_text()
    for alert in ALERTS:
        assert f"alert: {alert}\n" in text, alert


def test_the_alerting_rules_pass_their_unit_tests(promtool):
    """`promtool test rules`: each alert fires when it should and stays quiet otherwise."""
    proc = run(promtool, "test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in output(proc), output(proc)
    tests = RULE_TESTS.read_text()
    for alert in ALERTS:
        assert tests.count(f"alertname: {alert}\n") >= 2, f"{alert}: fires and stays quiet"


@pytest.fixture
def daemon(tmp_path, board) -> Iterator[str]:
    """`watchers run` with every watcher on a real board; yields its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = tmp_path / "w.toml"  # a profile, so the provider gauges have a series too
    cfg.write_text('[profiles.coder]\nprovider = "anthropic"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    env.update(
        {
            "WATCHERS_HTTP__LISTEN": f"127.0.0.1:{port}",
            "WATCHERS_AUTO_HEAL__INTERVAL_SECONDS": "0.3",
            "WATCHERS_AUTO_HEAL__JITTER_SECONDS": "0",
            "WATCHERS_DISTRESS__INTERVAL_SECONDS": "0.3",
            "WATCHERS_BUDGET__INTERVAL_SECONDS": "0.3",
            "WATCHERS_LOG__FORMAT": "json",
        }
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchers", "run", "--config", str(cfg), "--board", str(board)],
            stdout=fh,
            stderr=fh,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return fetch(base + "/readyz")[0] == 200
        except OSError:
            return proc.poll() is not None

    try:
        assert wait_for(ready, 20), log.read_text()
        assert proc.poll() is None, log.read_text()
        yield base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_a_real_scrape_passes_promtool_check_metrics_cleanly(promtool, daemon):
    """The body of a live /metrics, piped to `promtool check metrics`: exit 0, no findings."""
    status, headers, body = fetch(daemon + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    names = {name for name, _ in samples(body)}
    assert set(CONTRACT) <= names, set(CONTRACT) - names  # the whole contract is linted
    proc = run(promtool, "check", "metrics", stdin=body)
    findings = [line for line in output(proc).splitlines() if line.strip()]
    assert proc.returncode == 0 and findings == [], "\n".join(findings)
