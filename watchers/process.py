"""The daemon's one seam to the operating system: signal handlers that only call back,
a stack dump on systemd's watchdog abort, and glibc's heap kept small."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


def install_signals(on_stop: Callable[[], None], on_reload: Callable[[], None]) -> dict[int, Any]:
    """SIGTERM/SIGINT call `on_stop`, SIGHUP `on_reload` (main thread only); the handlers
    they replace, for `restore_signals`."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: FrameType | None) -> None:
        on_stop()

    def hup(signum: int, frame: FrameType | None) -> None:
        on_reload()

    previous: dict[int, Any] = {}
    for sig, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, hup)):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def enable_faulthandler() -> None:
    """On a watchdog timeout systemd sends SIGABRT: dump every thread's stack to stderr
    (the journal) first. Left alone when already on (e.g. under pytest)."""
    if faulthandler.is_enabled():
        return
    with contextlib.suppress(AttributeError, OSError, ValueError):
        faulthandler.enable(all_threads=True)


BIG_PASS_SECONDS = 0.1
"""After a pass this long (a first load, a large board's history) the heap is trimmed;
after a pass that acted, too (its writes and logs leave freed memory glibc would keep:
about 0.4 MiB over 24 heals on the benchmark board). Either is rare; a trim costs about
a millisecond."""


def trim_heap() -> None:
    """Give the memory a big pass freed back to the system (glibc keeps it otherwise);
    best effort, about a millisecond."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena and keeps what a tick freed in it; a
    long-running daemon with a thread pool is smaller with two arenas (best effort)."""
    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, 2)
