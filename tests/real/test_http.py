"""The metrics and health endpoints of a real daemon on real boards, over loopback HTTP."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.conftest import rows
from tests.real.test_daemon import wait_for
from watchers.daemon import Daemon
from watchers.metrics import WATCHER_ACTIONS
from watchers.settings import load_settings
from watchers.store.schema import create_board

CONTRACT = (
    "watchers_actions_total",
    "watchers_cards_total",
    "watchers_ticks_total",
    "watchers_tick_duration_seconds_bucket",
    "watchers_tick_duration_seconds_count",
    "watchers_last_success_timestamp_seconds",
    "watchers_board_tasks",
    "watchers_running_workers",
    "watchers_open_distress_cards",
    "watchers_provider_cooling",
    "watchers_provider_cooldown_until_timestamp_seconds",
    "watchers_guard_trips_total",
    "watchers_build_info",
    "watchers_dispatcher_last_claim_timestamp_seconds",
    "watchers_ready_oldest_age_seconds",
)


Response = tuple[int, dict[str, str], bytes]


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Response:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    if method == "POST":
        req.data = b"x=1"
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


def config(tmp_path: Path, *, http: str = "", extra: str = "", watchers=("auto-heal",)) -> Path:
    cfg = tmp_path / "w.toml"
    cfg.write_text(
        f'[http]\nlisten = "127.0.0.1:0"\n{http}\n'
        "[auto_heal]\ninterval_seconds = 0.3\njitter_seconds = 0\nstart_grace_seconds = 0\n"
        f"[distress]\nenabled = {str('distress' in watchers).lower()}\n"
        f"[budget]\nenabled = {str('budget' in watchers).lower()}\n"
        f"[dispatcher]\nenabled = {str('dispatcher' in watchers).lower()}\n"
        "[store]\nbusy_timeout_seconds = 0.2\n"
        f"{extra}\n"
    )
    return cfg


class Served:
    def __init__(self, daemon: Daemon, thread: threading.Thread) -> None:
        self.daemon = daemon
        self.thread = thread

    def url(self, path: str) -> str:
        assert self.daemon.http is not None
        host, port = self.daemon.http.address
        return f"{self.daemon.http.scheme}://{host}:{port}{path}"

    def get(self, path: str, **kw) -> Response:
        return fetch(self.url(path), **kw)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(cfg: Path, boards: list[Path]) -> Served:
        daemon = Daemon(lambda: load_settings(cfg), boards)
        thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
        thread.start()
        served = Served(daemon, thread)
        started.append(served)
        assert wait_for(lambda: daemon.http is not None or not thread.is_alive(), 10)
        assert daemon.http is not None, "the http server did not start"
        return served

    yield start
    for s in started:
        s.daemon.request_stop()
        s.thread.join(15)
        assert not s.thread.is_alive()


def test_every_contract_metric_exists_at_zero_and_readyz_waits_for_the_first_round(
    tmp_path, board, serve
):
    """All names are there from the start; /readyz turns 200 once every job ticked."""
    cfg = config(
        tmp_path,
        watchers=("auto-heal", "distress", "budget"),
        extra='[profiles.coder]\nprovider = "anthropic"\n',
    )
    s = serve(cfg, [board])
    status, _, body = s.get("/readyz")
    assert status == 503 and json.loads(body)["status"] == "starting"  # budget ticks at +4 s
    status, headers, body = s.get("/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    parsed = samples(body)
    names = {name for name, _ in parsed}
    assert set(CONTRACT) <= names, set(CONTRACT) - names
    for watcher in ("auto-heal", "distress", "budget"):
        for action in ("reap", "reclaim", "reset", "escalate", "reassign", "card", "warn", "note"):
            possible = action in WATCHER_ACTIONS[watcher]  # only pairs that can happen
            exported = value(parsed, "watchers_actions_total", watcher=watcher, action=action)
            assert exported == (0 if possible else None), (watcher, action)
        assert value(parsed, "watchers_ticks_total", watcher=watcher, outcome="error") == 0
        assert value(parsed, "watchers_ticks_total", watcher=watcher, outcome="skipped") == 0
        assert (
            value(
                parsed, "watchers_last_success_timestamp_seconds", watcher=watcher, board="default"
            )
            is not None
        )
    for status_ in ("triage", "todo", "ready", "running", "blocked", "done"):
        assert value(parsed, "watchers_board_tasks", board="default", status=status_) == 0
    for verdict in ("alive", "gone", "zombie", "reused", "remote", "unknown"):
        assert value(parsed, "watchers_running_workers", board="default", verdict=verdict) == 0
    for blocker in ("rate_limited", "credential_failure", "env_blocker", "iteration_budget"):
        assert (
            value(parsed, "watchers_open_distress_cards", board="default", blocker_type=blocker)
            == 0
        )
    assert value(parsed, "watchers_provider_cooling", provider="anthropic") == 0
    assert (
        value(parsed, "watchers_provider_cooldown_until_timestamp_seconds", provider="anthropic")
        == 0
    )
    assert value(parsed, "watchers_guard_trips_total", board="default") == 0
    never = value(parsed, "watchers_dispatcher_last_claim_timestamp_seconds", board="default")
    assert never is not None and math.isnan(never)  # no claim ever on this board
    assert value(parsed, "watchers_ready_oldest_age_seconds", board="default") == 0
    [info] = [k for k in parsed if k[0] == "watchers_build_info"]
    assert dict(info[1])["version"]
    allowed = {"watcher", "action", "outcome", "board", "status", "verdict", "blocker_type"}
    allowed |= {"provider", "version", "le", "reason"}  # never a task id
    assert {k for _, labels in parsed for k, _ in labels} <= allowed

    assert wait_for(lambda: s.get("/readyz")[0] == 200, 15)
    assert s.daemon.first_round.is_set()
    status, _, body = s.get("/healthz")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    parsed = samples(s.get("/metrics")[2])
    for watcher in ("auto-heal", "distress", "budget"):
        assert value(parsed, "watchers_ticks_total", watcher=watcher, outcome="ok") >= 1
        assert value(parsed, "watchers_tick_duration_seconds_count", watcher=watcher) >= 1
        last = value(
            parsed, "watchers_last_success_timestamp_seconds", watcher=watcher, board="default"
        )
        assert time.time() - 60 < last <= time.time()


def test_a_reap_is_counted_and_the_board_gauges_follow_the_board(
    tmp_path, board, dispatcher, serve
):
    """A dead worker's reap increments watchers_actions_total{auto-heal,reap}."""
    live = dispatcher.create_task("lives", "alice")
    dispatcher.claim(live)
    dispatcher.start_worker(live)
    s = serve(config(tmp_path), [board])
    s.daemon.metrics.boards.max_age = 0.2  # the default reuses a board's snapshot for 5 s
    before = samples(s.get("/metrics")[2])
    assert value(before, "watchers_actions_total", watcher="auto-heal", action="reap") == 0
    assert value(before, "watchers_running_workers", board="default", verdict="alive") == 1
    task = dispatcher.create_task("dies", "alice")
    dispatcher.claim(task)
    dispatcher.start_worker(task)
    dispatcher.kill_worker(task)
    assert wait_for(
        lambda: rows(board, "SELECT status FROM tasks WHERE id = ?", (task,))[0][0] == "ready", 15
    )

    def counted() -> bool:
        parsed = samples(s.get("/metrics")[2])
        return value(parsed, "watchers_actions_total", watcher="auto-heal", action="reap") == 1

    assert wait_for(counted, 10)
    parsed = samples(s.get("/metrics")[2])
    assert value(parsed, "watchers_actions_total", watcher="auto-heal", action="reclaim") == 0
    assert value(parsed, "watchers_guard_trips_total", board="default") == 0
    assert wait_for(
        lambda: (
            value(
                samples(s.get("/metrics")[2]),
                "watchers_board_tasks",
                board="default",
                status="ready",
            )
            == 1
        ),
        10,
    )
    assert s.get("/healthz")[0] == 200


def test_healthz_names_the_board_whose_ticks_keep_failing_and_scrapes_stay_quick(
    tmp_path, board, serve
):
    """A rollback-journal board held in a long write transaction: 503 naming auto-heal
    on that board. (Merely locked, unchanged, it would need no reading at all.)"""
    locked = create_board(tmp_path / "locked.db")
    conn = sqlite3.connect(str(locked), isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    s = serve(config(tmp_path), [board, locked])
    assert wait_for(lambda: s.get("/healthz")[0] == 200, 10)
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("PRAGMA user_version = 7")  # a write in progress: the journal appears
    try:
        assert wait_for(lambda: s.get("/healthz")[0] == 503, 10)
        status, headers, body = s.get("/healthz")
        assert status == 503 and headers["Content-Type"] == "application/json"
        report = json.loads(body)
        assert report["status"] == "stale"
        assert [(x["watcher"], x["board"]) for x in report["stale"]] == [("auto-heal", "locked")]
        t0 = time.monotonic()
        status, _, body = s.get("/metrics")
        assert status == 200 and time.monotonic() - t0 < 3
        parsed = samples(body)
        assert value(parsed, "watchers_ticks_total", watcher="auto-heal", outcome="skipped") >= 1
        # never read (locked since before the first scrape): its gauges are missing, and why
        assert value(parsed, "watchers_board_tasks", board="locked", status="ready") is None
        assert value(parsed, "watchers_board_read_error", board="locked", reason="busy") == 1
        assert value(parsed, "watchers_board_tasks", board="default", status="ready") == 0
        assert value(parsed, "watchers_board_read_error", board="default", reason="busy") == 0
        assert s.get("/readyz")[0] == 200
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert wait_for(lambda: s.get("/healthz")[0] == 200, 10)


def test_healthz_is_503_once_the_scheduler_is_gone(tmp_path, board, serve):
    """Health depends on the scheduler being alive, not only on past successes."""
    s = serve(config(tmp_path), [board])
    assert wait_for(lambda: s.get("/healthz")[0] == 200, 10)
    assert s.daemon._scheduler is not None
    s.daemon._scheduler.shutdown(wait=True)
    status, _, body = s.get("/healthz")
    assert status == 503 and "scheduler" in json.loads(body)["reason"]


def test_basic_auth_guards_metrics_with_the_credential_and_never_logs_it(
    tmp_path, board, serve, monkeypatch
):
    """401 without or with a wrong password, 200 with the one from the credentials dir."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "metrics-password").write_text("s3cret-pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with capture_logs() as logs:
        s = serve(config(tmp_path, http='basic_auth_user = "prom"'), [board])
        status, headers, _ = s.get("/metrics")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")

        def auth(pw: str) -> dict[str, str]:
            return {"Authorization": "Basic " + base64.b64encode(f"prom:{pw}".encode()).decode()}

        assert s.get("/metrics", headers=auth("wrong"))[0] == 401
        status, _, body = s.get("/metrics", headers=auth("s3cret-pw"))
        assert status == 200 and b"watchers_ticks_total" in body
        assert s.get("/readyz")[0] in (200, 503)  # probes stay open
    assert "s3cret-pw" not in repr(logs)
    assert any(e.get("basic_auth") is True for e in logs if e["event"] == "http listening")


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        return cert, key
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither the openssl CLI nor the cryptography package is available")
    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(pk, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def test_tls_serves_the_endpoints_over_https(tmp_path, board, serve):
    """With a cert and key, the same endpoints answer over HTTPS only."""
    cert, key = _self_signed(tmp_path)
    s = serve(config(tmp_path, http=f'tls_cert_file = "{cert}"\ntls_key_file = "{key}"'), [board])
    assert s.url("/metrics").startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    status, _, body = s.get("/metrics", context=ctx)
    assert status == 200 and b"watchers_build_info" in body
    assert wait_for(lambda: s.get("/readyz", context=ctx)[0] == 200, 10)
    plain = s.url("/metrics").replace("https://", "http://")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        fetch(plain)


def test_every_endpoint_is_read_only(tmp_path, board, serve):
    """POST, PUT, DELETE: 405 with Allow: GET, HEAD; unknown paths 404; HEAD has no body."""
    s = serve(config(tmp_path), [board])
    for path in ("/metrics", "/healthz", "/readyz", "/"):
        for method in ("POST", "PUT", "DELETE"):
            status, headers, _ = s.get(path, method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD", (path, method)
    assert s.get("/nope")[0] == 404
    status, headers, body = s.get("/healthz", method="HEAD")
    assert status in (200, 503) and body == b"" and int(headers["Content-Length"]) > 0


def test_watchers_run_serves_metrics_on_the_configured_port_and_stops_on_sigterm(tmp_path, board):
    """The CLI wiring: WATCHERS_HTTP__LISTEN picks the port; SIGTERM still exits 0 quickly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATCHERS_")}
    env.update(
        {
            "WATCHERS_HTTP__LISTEN": f"127.0.0.1:{port}",
            "WATCHERS_AUTO_HEAL__INTERVAL_SECONDS": "0.3",
            "WATCHERS_DISTRESS__ENABLED": "false",
            "WATCHERS_BUDGET__ENABLED": "false",
            "WATCHERS_DISPATCHER__ENABLED": "false",
            "WATCHERS_LOG__FORMAT": "json",
        }
    )
    log = tmp_path / "daemon.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "watchers", "run", "--board", str(board)],
            stdout=fh,
            stderr=fh,
            env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return fetch(base + "/readyz")[0] == 200
            except OSError:
                return proc.poll() is not None

        assert wait_for(up, 15), log.read_text()
        assert proc.poll() is None, log.read_text()
        assert fetch(base + "/healthz")[0] == 200
        parsed = samples(fetch(base + "/metrics")[2])
        assert value(parsed, "watchers_ticks_total", watcher="auto-heal", outcome="ok") >= 1
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        events = [json.loads(line).get("event") for line in log.read_text().splitlines()]
        assert "http listening" in events and "http stopped" in events
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_runs_the_scheduler_skips_behind_a_hung_tick_are_counted_as_skipped(tmp_path, serve):
    """A tick stuck on a locked board makes the scheduler skip runs: each one is counted."""
    locked = create_board(tmp_path / "locked.db")
    conn = sqlite3.connect(str(locked), isolation_level=None)
    conn.execute("PRAGMA journal_mode=DELETE")
    cfg = tmp_path / "hung.toml"
    cfg.write_text(
        '[http]\nlisten = "127.0.0.1:0"\n'
        "[auto_heal]\ninterval_seconds = 0.3\njitter_seconds = 0\n"
        "[distress]\nenabled = false\n[budget]\nenabled = false\n[dispatcher]\nenabled = false\n"
        "[store]\nbusy_timeout_seconds = 4\n"
        "[daemon]\nmisfire_grace_seconds = 60\n"
    )
    conn.execute("BEGIN EXCLUSIVE")
    try:
        s = serve(cfg, [locked])

        def skipped() -> float:
            parsed = samples(s.get("/metrics")[2])
            return (
                value(parsed, "watchers_ticks_total", watcher="auto-heal", outcome="skipped") or 0
            )

        assert wait_for(lambda: skipped() >= 2, 15)
    finally:
        conn.execute("ROLLBACK")
        conn.close()
