"""The passes: one APScheduler job per (watcher, board), one sweep per watcher, wakes.

A board's full pass opens it, runs one watcher over it and closes it. It runs first at
once, then whenever something brings it forward: the sweep (each interval, per watcher:
a board whose version changed, whose deadline or wake is due, whose last pass failed,
or whose last full pass is older than the safety net), a wake (a worker's exit, a write
the change feed saw, a deadline the last pass named). Everything else a sweep finds is
recorded as a pass over an unchanged board: no scans.

What the passes report (last success, last report, unusable boards, the first round)
lives here too, under one lock; the daemon's health and metrics read copies of it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.events import JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from watchers.autoheal.watcher import AutoHeal
from watchers.boards import unique_slugs
from watchers.budget.watcher import Budget
from watchers.changes import Version, board_version
from watchers.clock import Clock
from watchers.dispatcher.watcher import Dispatcher
from watchers.distress.watcher import Distress
from watchers.errors import BoardError, StoreBusy
from watchers.health import interval_of
from watchers.model import TickReport
from watchers.probe import Probe
from watchers.process import BIG_PASS_SECONDS, trim_heap
from watchers.runner import Watcher, run_tick
from watchers.settings import Settings
from watchers.store.board import BoardStore, board_slug

log = structlog.get_logger("watchers.daemon")  # the daemon's own lines, as they always were

FIRST_TICK_STAGGER_SECONDS = 2.0
LIGHT_FIRST_TICK_SECONDS = 1.0
"""The dispatcher check's first pass (a few index reads, no history) goes between the
others' without taking a place in their stagger."""
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
    if settings.dispatcher.enabled or only == Dispatcher.name:
        watchers.append(Dispatcher(probe))
    if only is not None:
        watchers = [w for w in watchers if w.name == only]
    return watchers


def first_tick_offsets(watchers: list[Watcher]) -> list[tuple[Watcher, float]]:
    """Each watcher's first pass, in seconds from the start. First passes read the most
    (history, every open task): they are staggered so their peaks do not add up;
    auto-heal, the urgent one, goes first. The dispatcher check reads little and takes no
    place in the stagger."""
    out: list[tuple[Watcher, float]] = []
    index = 0
    for watcher in watchers:
        if isinstance(watcher, Dispatcher):
            out.append((watcher, LIGHT_FIRST_TICK_SECONDS))
            continue
        out.append((watcher, FIRST_TICK_STAGGER_SECONDS * index))
        index += 1
    return out


def make_scheduler(settings: Settings, jobs: int) -> BackgroundScheduler:
    return BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=max(2, min(16, jobs)))},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(settings.daemon.misfire_grace_seconds),
        },
    )


class Passes:
    """Every (watcher, board) job of one daemon and what their passes reported."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        probe: Probe,
        *,
        on_pass_start: Callable[[Path, float], None] | None = None,
        on_skipped: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings  # as of the last schedule()
        self.clock = clock
        self.probe = probe
        self._on_pass_start = on_pass_start  # auto-heal passes only (the reflex's clock)
        self._on_skipped = on_skipped
        self.scheduler: BackgroundScheduler | None = None
        self.jobs: dict[str, _Job] = {}
        self.listeners: list[Callable[[TickReport], None]] = []
        self.lock = threading.Lock()  # guards everything below and each job's wake state
        self.last_success: dict[tuple[str, str], float] = {}
        self.last_report: dict[tuple[str, str], TickReport] = {}
        self.unusable: dict[str, str] = {}  # board slug -> why it cannot be opened now
        self.first_round = threading.Event()
        self.paths: tuple[Path, ...] = ()
        self.slugs: dict[Path, str] = {}
        self.due: dict[tuple[str, str], float] = {}  # (watcher, slug) -> first tick due

    # -- what they reported (thread-safe copies) -------------------------------------

    def slug_of(self, path: Path) -> str:
        """The board's unique name in this daemon (see boards.unique_slugs)."""
        with self.lock:
            slug = self.slugs.get(path)
        return slug if slug is not None else board_slug(path)

    def successes(self) -> dict[tuple[str, str], float]:
        with self.lock:
            return dict(self.last_success)

    def scheduled(self) -> dict[tuple[str, str], float]:
        with self.lock:
            return dict(self.due)

    def unusable_boards(self) -> dict[str, str]:
        with self.lock:
            return dict(self.unusable)

    def counts(self) -> tuple[int, int]:
        """(jobs, boards) scheduled now."""
        with self.lock:
            return len(self.due), len(set(self.paths))

    def scheduler_alive(self) -> bool:
        scheduler = self.scheduler
        if scheduler is None or not scheduler.running:
            return False
        thread = getattr(scheduler, "_thread", None)
        return thread is None or bool(thread.is_alive())

    def know(self, paths: list[Path]) -> None:
        """The boards this daemon watches, with their unique names (before any job is
        scheduled: a scrape right after start already lists every board)."""
        slugs = unique_slugs(paths)
        with self.lock:
            self.paths = tuple(paths)
            self.slugs = slugs

    # -- wakes -----------------------------------------------------------------------

    def wake(self, watcher: str, board: Path, at: float | None = None) -> bool:
        """Want a full pass of `watcher` over `board` at `at` (epoch seconds; now when
        None), whatever the board's version says. A job that is running now is woken when
        its pass ends. False when no such job is scheduled."""
        key = f"{watcher}:{board}"
        job = self.jobs.get(key)
        if job is None or self.scheduler is None:
            return False
        when = self.clock.now() if at is None else at
        with self.lock:
            if job.wake_at is None or when < job.wake_at:
                job.wake_at = when
            running = job.running
        return True if running else self.bring_forward(key, when)

    def bring_forward(self, key: str, when: float) -> bool:
        scheduler = self.scheduler
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

    # -- a board's full pass ---------------------------------------------------------

    def tick(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            return
        with job.lock:
            job.ticks += 1
            settings = self.settings
            now = self.clock.now()
            started = time.monotonic()
            with self.lock:
                job.running = True
                if job.wake_at is not None and job.wake_at <= now + WAKE_SLACK_SECONDS:
                    job.wake_at = None  # answered by this pass
            if isinstance(job.watcher, AutoHeal) and self._on_pass_start is not None:
                self._on_pass_start(job.path, started)
            version = board_version(job.path)
            with structlog.contextvars.bound_contextvars(
                watcher=job.watcher.name, board=str(job.path), tick=job.ticks
            ):
                report = self._run_job(job, settings)
            job.full += 1
            if report.duration_seconds >= BIG_PASS_SECONDS or report.outcomes:
                trim_heap()
            job.version = version if report.ok else None
            if report.ok:
                job.full_at = started
            job.done += 1
            due = job.watcher.deadline(job.path)
            with self.lock:
                job.running = False
                if due is not None and (job.wake_at is None or due < job.wake_at):
                    job.wake_at = due  # a grace, a backoff, a budget line... ends first
                wanted = job.wake_at
            if wanted is not None:
                self.bring_forward(key, wanted)
        self.deliver(report)

    def _run_job(self, job: _Job, settings: Settings) -> TickReport:
        slug = self.slug_of(job.path)
        try:
            store = BoardStore.open(
                job.path, slug=slug, busy_timeout=settings.store.busy_timeout_seconds
            )
        except (BoardError, StoreBusy) as exc:
            transient = isinstance(exc, StoreBusy)
            (log.warning if transient else log.error)("board unusable", error=str(exc))
            with self.lock:
                if isinstance(exc, BoardError):
                    self.unusable[slug] = exc.problem
                else:
                    self.unusable.pop(slug, None)
            return TickReport(
                job.watcher.name, slug, self.clock.now(), 0.0, error=str(exc), transient=transient
            )
        with self.lock:
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

    def deliver(self, *reports: TickReport) -> None:
        with self.lock:
            for report in reports:
                self.last_report[(report.watcher, report.board)] = report
                if report.ok:
                    self.last_success[(report.watcher, report.board)] = report.started_at
            first = not self.first_round.is_set() and all(j.done > 0 for j in self.jobs.values())
            if first:
                self.first_round.set()
        if first:
            log.info("first round done", jobs=len(self.jobs))
        for report in reports:
            for listener in self.listeners:
                try:
                    listener(report)
                except Exception:
                    log.exception("report listener failed")

    # -- the sweep ---------------------------------------------------------------------

    def sweep(self, watcher: str) -> None:
        """Every interval, per watcher: look at each board's version. A board that changed,
        whose deadline or wake is due, whose last pass failed, or whose last full pass is
        older than the safety net gets its pass now; the others are recorded as passes
        over an unchanged board (no scans). One wake-up per watcher and interval, however
        many boards there are."""
        now = self.clock.now()
        mono = time.monotonic()
        interval, _ = interval_of(self.settings, watcher)
        full_every = max(FULL_PASS_SECONDS, interval)
        unchanged: list[TickReport] = []
        for key, job in list(self.jobs.items()):
            if job.watcher.name != watcher:
                continue
            with self.lock:
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
                self.bring_forward(key, now)
                continue
            unchanged.append(TickReport(watcher, self.slug_of(job.path), now, 0.0, unchanged=True))
        if unchanged:
            self.deliver(*unchanged)

    # -- scheduling ----------------------------------------------------------------------

    def schedule(
        self, scheduler: BackgroundScheduler, settings: Settings, paths: list[Path]
    ) -> list[Watcher]:
        """(Re)create every job for `settings` and `paths` on `scheduler`; the watchers."""
        self.scheduler = scheduler
        for key in list(self.jobs):
            scheduler.remove_job(key)
            self.jobs.pop(key)
        for job in scheduler.get_jobs():
            if job.id.startswith(f"{SWEEP}:"):
                scheduler.remove_job(job.id)
        self.probe.close()
        self.settings = settings
        watchers = enabled_watchers(settings, self.probe)
        now = datetime.now(UTC)
        due: dict[tuple[str, str], float] = {}
        self.know(paths)  # named before any job can run
        slugs = self.slugs
        for watcher, offset in first_tick_offsets(watchers):
            interval, jitter = interval_of(settings, watcher.name)
            first = now + timedelta(seconds=offset)
            for path in paths:
                key = f"{watcher.name}:{path}"
                self.jobs[key] = _Job(watcher, path)
                due[(watcher.name, slugs[path])] = self.clock.now() + offset
                # The board's full pass: first at once, then when the sweep, an exit, a
                # write or a deadline brings it forward, at the latest at the safety net.
                # However late the pool gets to it (a thousand boards' first round), it runs.
                scheduler.add_job(
                    self.tick,
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
                self.sweep,
                "interval",
                args=(watcher.name,),
                id=f"{SWEEP}:{watcher.name}",
                name=f"{SWEEP}:{watcher.name}",
                seconds=interval,
                jitter=jitter or None,
                next_run_time=first + timedelta(seconds=interval),
            )
        with self.lock:
            self.due = due
            if not self.jobs:
                self.first_round.set()  # nothing to run: nothing to wait for
        return watchers

    def on_skipped(self, event: JobEvent) -> None:
        """Runs on the scheduler's thread: count the run it skipped (a hung tick shows here)."""
        job = self.jobs.get(str(event.job_id))
        if job is not None:
            if self._on_skipped is not None:
                self._on_skipped(job.watcher.name)
            log.warning(
                "tick skipped: the previous one is still running or it ran late",
                watcher=job.watcher.name,
                board=str(job.path),
            )

    def slug_names(self) -> Iterable[str]:
        with self.lock:
            return list(self.slugs.values())
