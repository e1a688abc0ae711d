"""The long-running daemon: the process around the passes.

The passes themselves (one scheduled job per (watcher, board), the sweep, wakes) are
`watchers.passes`. Here: boards at start and reload, the HTTP server, signals, systemd
notifications, health, and shutdown. Signal handlers only set flags and wake the main
thread; the main thread reloads (SIGHUP) or shuts down (SIGTERM/SIGINT), letting a
running tick finish within a bounded time. A failing tick is reported and retried; a
hung one stays visible through the last success (health and metrics build on it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler

from watchers.autoheal.watcher import AutoHeal
from watchers.boards import discover_boards
from watchers.changes import ChangeFeed
from watchers.clock import Clock, SystemClock
from watchers.errors import BoardError, ConfigError, ListenError, StoreBusy
from watchers.health import verdict
from watchers.http import Health, HttpServer, basic_auth, make_app
from watchers.logs import configure_logging
from watchers.metrics import Metrics
from watchers.model import TickReport
from watchers.notify import SystemdNotify
from watchers.passes import Passes, enabled_watchers, make_scheduler
from watchers.probe import Probe, ProcessProbe
from watchers.process import (
    enable_faulthandler,
    install_signals,
    limit_malloc_arenas,
    restore_signals,
)
from watchers.reflex import Reflex
from watchers.settings import Settings
from watchers.store.board import BoardStore

__all__ = ["Daemon", "enabled_watchers"]

log = structlog.get_logger("watchers.daemon")


class Daemon:
    """The process around the passes (watchers.passes): boards, HTTP, signals, reload,
    shutdown, health."""

    def __init__(
        self,
        load: Callable[[], Settings],
        board_args: Sequence[Path] = (),
        *,
        clock: Clock | None = None,
        probe: Probe | None = None,
        on_report: Callable[[TickReport], None] | None = None,
    ) -> None:
        self._load = load
        self._board_args = list(board_args)
        self.settings = load()
        self.clock = clock or SystemClock()
        self.probe = probe or ProcessProbe(self.settings.hostname)
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self.abandoned_ticks = False  # a hung tick outlived shutdown: the process must exit hard
        self.metrics = Metrics(self)  # a registry of its own: daemons (and tests) stay apart
        self.reflex = Reflex(self.probe, self.wake_auto_heal)
        self.passes = Passes(
            self.settings,
            self.clock,
            self.probe,
            on_pass_start=self.reflex.pass_started,
            on_skipped=self.metrics.skipped,
        )
        if on_report is not None:
            self.add_listener(on_report)
        self.add_listener(self.metrics.observe)
        self.http: HttpServer | None = None
        self.notify = SystemdNotify(self.health, self.first_round, self._status_line)
        self.changes = ChangeFeed(self._board_changed)

    # -- seams -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[TickReport], None]) -> None:
        self.passes.listeners.append(listener)

    @property
    def first_round(self) -> threading.Event:
        return self.passes.first_round

    @property
    def last_report(self) -> dict[tuple[str, str], TickReport]:
        return self.passes.last_report

    @property
    def _scheduler(self) -> BackgroundScheduler | None:
        return self.passes.scheduler

    def slug_of(self, path: Path) -> str:
        """The board's unique name in this daemon (see boards.unique_slugs)."""
        return self.passes.slug_of(path)

    @property
    def boards(self) -> list[Path]:
        return sorted(set(self.passes.paths))

    def successes(self) -> dict[tuple[str, str], float]:
        """A copy of `last_success`: epoch start of each job's last successful tick."""
        return self.passes.successes()

    def scheduled(self) -> dict[tuple[str, str], float]:
        """Every scheduled (watcher, board slug), with when its first tick was due."""
        return self.passes.scheduled()

    def scheduler_alive(self) -> bool:
        return self.passes.scheduler_alive()

    def health(self) -> Health:
        """Healthy while the scheduler runs and every job succeeded within
        STALE_AFTER_INTERVALS of its interval (see `watchers.health`)."""
        return verdict(
            scheduler_alive=self.scheduler_alive(),
            now=self.clock.now(),
            settings=self.settings,
            scheduled=self.scheduled(),
            successes=self.successes(),
            unusable=self.passes.unusable_boards(),
        )

    def _status_line(self) -> str:
        """systemd's STATUS= once running: what is being watched."""
        jobs, boards = self.passes.counts()
        return f"watching {boards} board(s) with {jobs} job(s)"

    def request_stop(self) -> None:
        self._stop = True
        self._wake.set()

    def request_reload(self) -> None:
        self._reload = True
        self._wake.set()

    # -- boards ------------------------------------------------------------------

    def resolve_boards(self, settings: Settings) -> tuple[list[Path], bool]:
        """Board paths, and whether they were named (named boards must open)."""
        paths, source = discover_boards(self._board_args, settings.boards)
        named = source in ("--board", "the boards setting")
        if not paths:
            raise BoardError(
                Path(source.removeprefix("boards under ")), "no Hermes boards found there"
            )
        return paths, named

    def check_boards(self, settings: Settings) -> list[Path]:
        paths, named = self.resolve_boards(settings)
        usable = []
        for path in paths:
            try:
                BoardStore.open(
                    path, busy_timeout=settings.store.busy_timeout_seconds, readonly=True
                ).close()
                usable.append(path)
            except StoreBusy as exc:
                log.warning("board busy at start; will retry", board=str(path), error=str(exc))
                usable.append(path)
            except BoardError as exc:
                if named:
                    raise
                log.error("board unusable; will retry each tick", board=str(path), error=str(exc))
                usable.append(path)
        return usable

    # -- wakes ---------------------------------------------------------------------

    def wake_auto_heal(self, board: Path, at: float | None = None) -> bool:
        """Bring the next auto-heal pass over `board` forward to `at` (epoch seconds; now
        when None). False when no such job is scheduled."""
        return self.passes.wake(AutoHeal.name, board, at)

    def _board_changed(self, board: Path) -> None:
        """The change feed saw a write to `board`: auto-heal reads it now (new claims are
        watched from then on); the others see the new version at their next pass."""
        self.passes.wake(AutoHeal.name, board)

    def wake(self, watcher: str, board: Path, at: float | None = None) -> bool:
        """See Passes.wake."""
        return self.passes.wake(watcher, board, at)

    def _schedule(
        self, scheduler: BackgroundScheduler, settings: Settings, paths: list[Path]
    ) -> None:
        watchers = self.passes.schedule(scheduler, settings, paths)
        self.changes.watch(paths)
        self.metrics.prepare(self.passes.slug_names())
        log.info(
            "scheduled",
            watchers=[w.name for w in watchers],
            boards=[str(p) for p in paths],
        )

    # -- main loop -------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the exit code."""
        limit_malloc_arenas()
        enable_faulthandler()
        settings = self.settings
        paths = self.check_boards(settings)
        self.passes.know(paths)
        self.metrics.prepare(self.passes.slug_names())
        self._start_http(settings)  # first: a taken address fails alone, before anything runs
        previous = install_signals(self.request_stop, self.request_reload)
        scheduler = make_scheduler(settings, len(paths) * 3)
        try:
            self.changes.start(paths)
            self._schedule(scheduler, settings, paths)
            scheduler.add_listener(
                self.passes.on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
            )
            scheduler.start()
            self.notify.start()
            self.reflex.start()
            log.info("started", pid=os.getpid(), host=settings.hostname or self.probe.hostname)
            while not self._stop:
                self._wake.wait()
                self._wake.clear()
                if self._reload and not self._stop:
                    self._reload = False
                    self._do_reload(scheduler)
        finally:
            code = self._shutdown(scheduler)
            restore_signals(previous)
        return code

    def _start_http(self, settings: Settings) -> None:
        if not settings.http.enabled:
            return
        app = make_app(
            self.metrics.registry,
            self.health,
            self.first_round.is_set,
            basic_auth(settings.http),
        )
        server = HttpServer(settings.http, app)
        try:
            server.start()
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {settings.http.listen} (http.listen): "
                f"{os.strerror(exc.errno) if exc.errno else exc}; choose another address or port"
            ) from None
        self.http = server

    def _do_reload(self, scheduler: BackgroundScheduler) -> None:
        try:
            settings = self._load()
            paths = self.check_boards(settings)
        except (ConfigError, BoardError) as exc:
            log.error("reload refused; keeping the running configuration", error=str(exc))
            return
        except Exception as exc:  # a reload must never take the running daemon down
            log.error(
                "reload refused; keeping the running configuration",
                error=f"unexpected {type(exc).__name__} while reading the configuration",
            )
            return
        if settings.http != self.settings.http:
            log.warning("http settings changed: they take effect on the next restart")
        self.settings = settings
        configure_logging(settings.log.level, settings.log.format)
        self._schedule(scheduler, settings, paths)
        log.info("configuration reloaded")

    def _shutdown(self, scheduler: BackgroundScheduler) -> int:
        log.info("stopping: letting running ticks finish")
        self.notify.stopping()
        self.reflex.stop()
        self.changes.stop()
        timeout = self.settings.daemon.shutdown_timeout_seconds
        if self.http is not None:
            self.http.stop()
            self.http = None
        done = threading.Event()

        def stop() -> None:
            if scheduler.running:  # it may have died on its own: health said so
                scheduler.shutdown(wait=True)
            done.set()

        threading.Thread(target=stop, name="shutdown", daemon=True).start()
        if not done.wait(timeout):
            log.error("a tick did not finish in time; exiting anyway", timeout_seconds=timeout)
            self.abandoned_ticks = True
            return 1
        self.probe.close()
        self.metrics.close()
        log.info("stopped")
        return 0
