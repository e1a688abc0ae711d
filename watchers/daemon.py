"""The long-running daemon: one scheduled job per (watcher, board).

Signal handlers only set flags and wake the main thread; the main thread reloads
(SIGHUP) or shuts down (SIGTERM/SIGINT), letting a running tick finish within a
bounded time. A failing tick is reported and retried on the next interval; a hung
one stays visible through `last_success` (health and metrics build on it).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watchers.autoheal.watcher import AutoHeal
from watchers.boards import discover_boards, unique_slugs
from watchers.budget.watcher import Budget
from watchers.changes import ChangeFeed, Version, board_version
from watchers.clock import Clock, SystemClock
from watchers.distress.watcher import Distress
from watchers.errors import BoardError, ConfigError, ListenError, StoreBusy
from watchers.health import interval_of, verdict
from watchers.http import Health, HttpServer, basic_auth, make_app
from watchers.logs import configure_logging
from watchers.metrics import Metrics
from watchers.model import TickReport
from watchers.notify import SystemdNotify
from watchers.probe import Probe, ProcessProbe
from watchers.process import (
    BIG_PASS_SECONDS,
    enable_faulthandler,
    install_signals,
    limit_malloc_arenas,
    restore_signals,
    trim_heap,
)
from watchers.reflex import Reflex
from watchers.runner import Watcher, run_tick
from watchers.settings import Settings
from watchers.store.board import BoardStore, board_slug

log = structlog.get_logger("watchers.daemon")

FIRST_TICK_STAGGER_SECONDS = 2.0


FULL_PASS_SECONDS = 600.0
"""An unchanged board is still read in full this often (or every interval, when that is
longer): a safety net for a change no version test and no event reported."""
SWEEP = "sweep"  # job ids `sweep:<watcher>`
WAKE_SLACK_SECONDS = 0.05  # a pass this close to a wake's time answers it


@dataclass(slots=True)
class _Job:
    watcher: Watcher
    path: Path
    identity: tuple[int, int] | None = None  # the file the last tick read
    lock: threading.Lock = field(default_factory=threading.Lock)
    ticks: int = 0  # started
    done: int = 0  # finished (the first round is over when every job finished one)
    full: int = 0  # passes that read the board (the others found it unchanged)
    version: Version | None = None  # the board's version when the last full pass began
    full_at: float = float("-inf")  # monotonic start of the last full pass that succeeded
    wake_at: float | None = None  # epoch: a pass is wanted then, whatever the version says
    running: bool = False


def enabled_watchers(settings: Settings, probe: Probe, only: str | None = None) -> list[Watcher]:
    watchers: list[Watcher] = []
    if settings.auto_heal.enabled or only == AutoHeal.name:
        watchers.append(AutoHeal(probe))
    if settings.distress.enabled or only == Distress.name:
        watchers.append(Distress(probe))
    if settings.budget.enabled or only == Budget.name:
        watchers.append(Budget(probe))
    if only is not None:
        watchers = [w for w in watchers if w.name == only]
    return watchers


class Daemon:
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
        self._listeners: list[Callable[[TickReport], None]] = [on_report] if on_report else []
        self._jobs: dict[str, _Job] = {}
        self._wake = threading.Event()
        self._stop = False
        self._reload = False
        self._scheduler: BackgroundScheduler | None = None
        self.last_success: dict[tuple[str, str], float] = {}
        self.last_report: dict[tuple[str, str], TickReport] = {}
        self.unusable: dict[str, str] = {}  # board slug -> why it cannot be opened now
        self.first_round = threading.Event()
        self.abandoned_ticks = False  # a hung tick outlived shutdown: the process must exit hard
        self._state_lock = threading.Lock()
        self._paths: tuple[Path, ...] = ()
        self._slugs: dict[Path, str] = {}
        self._scheduled: dict[tuple[str, str], float] = {}  # (watcher, slug) -> first tick due
        self.metrics = Metrics(self)  # a registry of its own: daemons (and tests) stay apart
        self.add_listener(self.metrics.observe)
        self.http: HttpServer | None = None
        self.notify = SystemdNotify(self.health, self.first_round, self._status_line)
        self.reflex = Reflex(self.probe, self.wake_auto_heal)
        self.changes = ChangeFeed(self._board_changed)

    # -- seams -------------------------------------------------------------------

    def add_listener(self, listener: Callable[[TickReport], None]) -> None:
        self._listeners.append(listener)

    def slug_of(self, path: Path) -> str:
        """The board's unique name in this daemon (see boards.unique_slugs)."""
        with self._state_lock:
            slug = self._slugs.get(path)
        return slug if slug is not None else board_slug(path)

    @property
    def boards(self) -> list[Path]:
        return sorted(set(self._paths))

    def successes(self) -> dict[tuple[str, str], float]:
        """A copy of `last_success`: epoch start of each job's last successful tick."""
        with self._state_lock:
            return dict(self.last_success)

    def scheduled(self) -> dict[tuple[str, str], float]:
        """Every scheduled (watcher, board slug), with when its first tick was due."""
        with self._state_lock:
            return dict(self._scheduled)

    def scheduler_alive(self) -> bool:
        scheduler = self._scheduler
        if scheduler is None or not scheduler.running:
            return False
        thread = getattr(scheduler, "_thread", None)
        return thread is None or bool(thread.is_alive())

    def health(self) -> Health:
        """Healthy while the scheduler runs and every job succeeded within
        STALE_AFTER_INTERVALS of its interval (see `watchers.health`)."""
        with self._state_lock:
            unusable = dict(self.unusable)
        return verdict(
            scheduler_alive=self.scheduler_alive(),
            now=self.clock.now(),
            settings=self.settings,
            scheduled=self.scheduled(),
            successes=self.successes(),
            unusable=unusable,
        )

    def _status_line(self) -> str:
        """systemd's STATUS= once running: what is being watched."""
        with self._state_lock:
            jobs, boards = len(self._scheduled), len(set(self._paths))
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

    # -- the job -------------------------------------------------------------------

    def wake_auto_heal(self, board: Path, at: float | None = None) -> bool:
        """Bring the next auto-heal pass over `board` forward to `at` (epoch seconds; now
        when None). False when no such job is scheduled."""
        return self.wake(AutoHeal.name, board, at)

    def _board_changed(self, board: Path) -> None:
        """The change feed saw a write to `board`: auto-heal reads it now (new claims are
        watched from then on); the others see the new version at their next pass."""
        self.wake(AutoHeal.name, board)

    def wake(self, watcher: str, board: Path, at: float | None = None) -> bool:
        """Want a full pass of `watcher` over `board` at `at` (epoch seconds; now when
        None), whatever the board's version says. A job that is running now is woken when
        its pass ends. False when no such job is scheduled."""
        key = f"{watcher}:{board}"
        job = self._jobs.get(key)
        if job is None or self._scheduler is None:
            return False
        when = self.clock.now() if at is None else at
        with self._state_lock:
            if job.wake_at is None or when < job.wake_at:
                job.wake_at = when
            running = job.running
        return True if running else self._bring_forward(key, when)

    def _bring_forward(self, key: str, when: float) -> bool:
        scheduler = self._scheduler
        if scheduler is None:
            return False
        at = datetime.fromtimestamp(max(when, self.clock.now()), UTC)
        try:
            job = scheduler.get_job(key)
            if job is None:
                return False
            if job.next_run_time is None or at < job.next_run_time:
                scheduler.modify_job(key, next_run_time=at)
        except (LookupError, RuntimeError):  # removed by a reload, or shutting down
            return False
        return True

    def _tick(self, key: str) -> None:
        job = self._jobs.get(key)
        if job is None:
            return
        with job.lock:
            job.ticks += 1
            settings = self.settings
            now = self.clock.now()
            started = time.monotonic()
            with self._state_lock:
                job.running = True
                if job.wake_at is not None and job.wake_at <= now + WAKE_SLACK_SECONDS:
                    job.wake_at = None  # answered by this pass
            if isinstance(job.watcher, AutoHeal):
                self.reflex.pass_started(job.path, started)
            version = board_version(job.path)
            with structlog.contextvars.bound_contextvars(
                watcher=job.watcher.name, board=str(job.path), tick=job.ticks
            ):
                report = self._run_job(job, settings)
            job.full += 1
            if report.duration_seconds >= BIG_PASS_SECONDS:
                trim_heap()
            job.version = version if report.ok else None
            if report.ok:
                job.full_at = started
            job.done += 1
            due = job.watcher.deadline(job.path)
            with self._state_lock:
                job.running = False
                if due is not None and (job.wake_at is None or due < job.wake_at):
                    job.wake_at = due  # a grace, a backoff, a budget line... ends first
                wanted = job.wake_at
            if wanted is not None:
                self._bring_forward(key, wanted)
        self._deliver(report)

    def _deliver(self, *reports: TickReport) -> None:
        with self._state_lock:
            for report in reports:
                self.last_report[(report.watcher, report.board)] = report
                if report.ok:
                    self.last_success[(report.watcher, report.board)] = report.started_at
            first = not self.first_round.is_set() and all(j.done > 0 for j in self._jobs.values())
            if first:
                self.first_round.set()
        if first:
            log.info("first round done", jobs=len(self._jobs))
        for report in reports:
            for listener in self._listeners:
                try:
                    listener(report)
                except Exception:
                    log.exception("report listener failed")

    def _sweep(self, watcher: str) -> None:
        """Every interval, per watcher: look at each board's version. A board that changed,
        whose deadline or wake is due, whose last pass failed, or whose last full pass is
        older than the safety net gets its pass now; the others are recorded as passes
        over an unchanged board (no scans). One wake-up per watcher and interval, however
        many boards there are."""
        now = self.clock.now()
        mono = time.monotonic()
        settings = self.settings
        interval, _ = interval_of(settings, watcher)
        full_every = max(FULL_PASS_SECONDS, interval)
        unchanged: list[TickReport] = []
        for key, job in list(self._jobs.items()):
            if job.watcher.name != watcher:
                continue
            with self._state_lock:
                busy, wanted = job.running, job.wake_at
            if busy or job.done == 0:
                continue  # a pass is under way (or the first one still to come)
            due = job.watcher.deadline(job.path)
            version = board_version(job.path)
            if (
                version is None
                or version != job.version
                or mono - job.full_at >= full_every
                or (due is not None and due <= now)
                or (wanted is not None and wanted <= now + WAKE_SLACK_SECONDS)
            ):
                self._bring_forward(key, now)
                continue
            unchanged.append(TickReport(watcher, self.slug_of(job.path), now, 0.0, unchanged=True))
        if unchanged:
            self._deliver(*unchanged)

    def _run_job(self, job: _Job, settings: Settings) -> TickReport:
        slug = self.slug_of(job.path)
        try:
            store = BoardStore.open(
                job.path, slug=slug, busy_timeout=settings.store.busy_timeout_seconds
            )
        except (BoardError, StoreBusy) as exc:
            transient = isinstance(exc, StoreBusy)
            (log.warning if transient else log.error)("board unusable", error=str(exc))
            with self._state_lock:
                if isinstance(exc, BoardError):
                    self.unusable[slug] = exc.problem
                else:
                    self.unusable.pop(slug, None)
            return TickReport(
                job.watcher.name, slug, self.clock.now(), 0.0, error=str(exc), transient=transient
            )
        with self._state_lock:
            self.unusable.pop(slug, None)
        if job.identity is not None and store.identity != job.identity:
            log.warning("board file changed; reopening", change="replaced")
        job.identity = store.identity
        try:
            return run_tick(job.watcher, store, settings, self.clock)
        finally:
            # No connection of ours stays open between ticks. While one is open, Hermes's
            # own last close cannot checkpoint and delete the WAL, so Hermes checkpoints
            # from inside its commits (every 100 pages) instead; one that overlaps any read
            # of ours stops short, can leave the file shorter than its header's page count,
            # and Hermes 0.19's post-commit length check then fails the committed write
            # with "torn-extend detected". Reopened each tick, the board is Hermes's alone
            # between ticks, as without us (and a replaced file is simply opened anew).
            store.close()

    # -- scheduling ------------------------------------------------------------------

    def _schedule(
        self, scheduler: BackgroundScheduler, settings: Settings, paths: list[Path]
    ) -> None:
        for key in list(self._jobs):
            scheduler.remove_job(key)
            self._jobs.pop(key)
        for job in scheduler.get_jobs():
            if job.id.startswith(f"{SWEEP}:"):
                scheduler.remove_job(job.id)
        self.probe.close()
        watchers = enabled_watchers(settings, self.probe)
        now = datetime.now(UTC)
        scheduled: dict[tuple[str, str], float] = {}
        slugs = unique_slugs(paths)
        for index, watcher in enumerate(watchers):
            interval, jitter = interval_of(settings, watcher.name)
            # First ticks read the most (history, every open task): stagger them a little
            # so their peaks do not add up; auto-heal, the urgent one, goes first.
            first = now + timedelta(seconds=FIRST_TICK_STAGGER_SECONDS * index)
            for path in paths:
                key = f"{watcher.name}:{path}"
                self._jobs[key] = _Job(watcher, path)
                scheduled[(watcher.name, slugs[path])] = self.clock.now() + (
                    FIRST_TICK_STAGGER_SECONDS * index
                )
                # The board's full pass: first at once, then when the sweep, an exit, a
                # write or a deadline brings it forward, at the latest at the safety net.
                # However late the pool gets to it (a thousand boards' first round), it runs.
                scheduler.add_job(
                    self._tick,
                    "interval",
                    args=(key,),
                    id=key,
                    name=key,
                    seconds=max(FULL_PASS_SECONDS, interval),
                    jitter=jitter or None,
                    next_run_time=first,
                    misfire_grace_time=None,
                )
            scheduler.add_job(
                self._sweep,
                "interval",
                args=(watcher.name,),
                id=f"{SWEEP}:{watcher.name}",
                name=f"{SWEEP}:{watcher.name}",
                seconds=interval,
                jitter=jitter or None,
                next_run_time=first + timedelta(seconds=interval),
            )
        self.changes.watch(paths)
        with self._state_lock:
            self._paths = tuple(paths)
            self._slugs = slugs
            self._scheduled = scheduled
            if not self._jobs:
                self.first_round.set()  # nothing to run: nothing to wait for
        self.metrics.prepare(slugs.values())
        log.info(
            "scheduled",
            watchers=[w.name for w in watchers],
            boards=[str(p) for p in paths],
        )

    def _on_skipped(self, event: JobEvent) -> None:
        """Runs on the scheduler's thread: count the run it skipped (a hung tick shows here)."""
        job = self._jobs.get(str(event.job_id))
        if job is not None:
            self.metrics.skipped(job.watcher.name)
            log.warning(
                "tick skipped: the previous one is still running or it ran late",
                watcher=job.watcher.name,
                board=str(job.path),
            )

    def _make_scheduler(self, settings: Settings, jobs: int) -> BackgroundScheduler:
        return BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=max(2, min(16, jobs)))},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int(settings.daemon.misfire_grace_seconds),
            },
        )

    # -- main loop -------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the exit code."""
        limit_malloc_arenas()
        enable_faulthandler()
        settings = self.settings
        paths = self.check_boards(settings)
        self._start_http(settings)  # first: a taken address fails alone, before anything runs
        previous = install_signals(self.request_stop, self.request_reload)
        scheduler = self._make_scheduler(settings, len(paths) * 3)
        self._scheduler = scheduler
        try:
            self.changes.start(paths)
            self._schedule(scheduler, settings, paths)
            scheduler.add_listener(self._on_skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
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
