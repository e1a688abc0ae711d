"""The HTTP server under abuse, on a real `watchers run` over loopback: a thousand idle or
trickling connections hold no threads, and /healthz keeps answering."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from pathlib import Path

from tests.real.test_daemon import run_daemon, wait_for  # noqa: F401 (fixture)

CONNECTIONS = 1000


def proc_status(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    m = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
    assert m, field
    return int(m.group(1))


def healthz(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status


def test_a_thousand_idle_and_trickling_connections_do_not_stop_healthz(board, run_daemon):
    """Threads stay bounded, memory grows by little, and every probe is answered."""
    d = run_daemon("--board", str(board))
    [url] = [line["url"] for line in d.lines() if line.get("event") == "http listening"]
    base = url.removesuffix("/metrics")
    host, port = re.match(r"https?://([^:/]+):(\d+)", base).groups()  # type: ignore[union-attr]
    assert wait_for(lambda: healthz(base + "/healthz") == 200, 20)
    pid = d.proc.pid
    threads_before = proc_status(pid, "Threads")
    rss_before = proc_status(pid, "VmRSS")

    held: list[socket.socket] = []
    try:
        for i in range(CONNECTIONS):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:
                s.sendall(b"GET /heal")  # a head that never completes
            held.append(s)
        for s in held[1::2]:  # trickle: one more byte each, twice
            s.sendall(b"t")
        answers = [healthz(base + "/healthz") for _ in range(5)]
        threads = proc_status(pid, "Threads")
        rss = proc_status(pid, "VmRSS")
    finally:
        for s in held:
            s.close()

    assert answers == [200] * 5
    assert threads <= threads_before + 4, (threads_before, threads)
    assert rss - rss_before < 32 * 1024, (rss_before, rss)  # KiB
    assert healthz(base + "/healthz") == 200
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0


def test_a_head_that_is_too_large_or_too_slow_is_answered_and_closed(board, run_daemon):
    """431 for an oversized head; 408 once the head has taken too long (bounded wait)."""
    d = run_daemon("--board", str(board))
    [url] = [line["url"] for line in d.lines() if line.get("event") == "http listening"]
    host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()  # type: ignore[union-attr]

    with socket.create_connection((host, int(port)), timeout=10) as big:
        big.sendall(b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * 20_000 + b"\r\n\r\n")
        assert big.recv(64).startswith(b"HTTP/1.1 431")
    with socket.create_connection((host, int(port)), timeout=20) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert slow.recv(64).startswith(b"HTTP/1.1 408")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=10) == 0
