"""The `watchers` command. Names, flags and exit codes here are a contract.

Exit codes: 0 ok (also when the reader of stdout went away); 66 a board is missing,
unreadable or not a Hermes board; 69 the HTTP address (`http.listen`) cannot be bound;
78 invalid configuration; 1 anything unexpected, or a tick that failed (one-line reason
on stderr, traceback in the log); 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from watchers import AVAILABLE_WATCHERS, WATCHER_NAMES, __version__
from watchers.boards import discover_boards, unique_slugs
from watchers.clock import SystemClock
from watchers.daemon import Daemon
from watchers.demo.run import run_demo
from watchers.errors import (
    BoardError,
    ConfigError,
    ListenError,
    StoreBusy,
    UsageError,
    WatchersError,
)
from watchers.exitcodes import ExitCode
from watchers.logs import configure_logging, console_logs
from watchers.model import Outcome, Result, TickReport
from watchers.passes import enabled_watchers
from watchers.probe import ProcessProbe
from watchers.runner import run_tick
from watchers.settings import Settings, load_settings
from watchers.status import SCHEMA_VERSION, board_status, render_problem, render_status
from watchers.store.board import BoardStore
from watchers.store.schema import create_board

log = structlog.get_logger("watchers.cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="watchers",
        description="Self-healing watchers for Hermes Agent Kanban boards.",
    )
    p.add_argument("--version", action="version", version=f"kanban-watchers {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def boards(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--board",
            action="append",
            type=Path,
            default=[],
            metavar="PATH",
            help="a board's kanban.db (repeatable); default: discovered as Hermes does",
        )

    def config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")

    def command(name: str, summary: str, example: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    run = command(
        "run",
        "run the daemon in the foreground until SIGTERM/SIGINT",
        "watchers run --board ~/.hermes/kanban.db --config /etc/kanban-watchers/watchers.toml",
    )
    boards(run)
    config(run)

    once = command(
        "once",
        "one pass of each enabled (or the named) watcher over each board, then exit",
        "watchers once --dry-run --watcher auto-heal   # what auto-heal would do now",
    )
    boards(once)
    config(once)
    once.add_argument(
        "--watcher", metavar="NAME", help=f"only this watcher ({', '.join(WATCHER_NAMES)})"
    )
    once.add_argument("--dry-run", action="store_true", help="decide and print, change nothing")
    once.add_argument("--json", action="store_true", help="print a JSON array of actions")

    status = command(
        "status",
        "tasks by status, every running task's worker verdict, provider cooldowns",
        "watchers status --json | jq '.boards[] | {board, errors}'",
    )
    boards(status)
    config(status)
    status.add_argument(
        "--json", action="store_true", help=f"print JSON (schema_version {SCHEMA_VERSION})"
    )

    check = command(
        "check-config",
        "validate and print the effective settings (secrets masked)",
        "watchers check-config --config /etc/kanban-watchers/watchers.toml",
    )
    config(check)

    command("demo", "heal a live demo board (no Hermes needed)", "watchers demo")

    init = command(
        "init-board", "create an empty Hermes-compatible board", "watchers init-board /tmp/b.db"
    )
    init.add_argument("path", type=Path)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None))


def _check_watcher(name: str | None) -> None:
    if name is None:
        return
    if name not in WATCHER_NAMES:
        raise UsageError(f"unknown watcher {name!r} (known: {', '.join(WATCHER_NAMES)})")
    if name not in AVAILABLE_WATCHERS:
        raise UsageError(
            f"watcher {name!r} is not available in this release "
            f"(available: {', '.join(AVAILABLE_WATCHERS)})"
        )


def _open_boards(
    args: argparse.Namespace, settings: Settings, readonly: bool
) -> tuple[list[BoardStore], list[BoardError], dict[Path, StoreBusy], dict[Path, str]]:
    """Open every board; missing ones (66) and busy ones (retry) are reported, not fatal.
    Also every board found, in order, with its name."""
    paths, source = discover_boards(args.board, settings.boards)
    if not paths:
        raise BoardError(Path(source.removeprefix("boards under ")), "no Hermes boards found there")
    stores: list[BoardStore] = []
    errors: list[BoardError] = []
    busy: dict[Path, StoreBusy] = {}
    names = unique_slugs(paths)  # the same names as `watchers run` and its metrics
    slugs = {path: names[path] for path in paths}  # in the order found
    for path in paths:
        try:
            stores.append(
                BoardStore.open(
                    path,
                    slug=slugs[path],
                    busy_timeout=settings.store.busy_timeout_seconds,
                    readonly=readonly,
                )
            )
        except BoardError as exc:
            errors.append(exc)
        except StoreBusy as exc:
            busy[path] = exc
    for problem in (*errors, *busy.values()):
        print(f"watchers: {problem}", file=sys.stderr)
    return stores, errors, busy, slugs


def _line(o: Outcome) -> str:
    a = o.action
    ev = a.evidence
    bits = [a.watcher, a.board, a.task_id, a.kind.value, a.reason, o.result.value]
    extra = []
    if ev.get("pid") is not None:
        extra.append(f"pid {ev['pid']}")
    if ev.get("seen"):
        extra.append(str(ev["seen"]))
    if isinstance(ev.get("failures"), int) and ev.get("failure_limit") is not None:
        extra.append(f"failures {ev['failures']}/{ev.get('failure_limit')}")
    if a.kind.value == "reassign":
        extra.append(
            f"{a.plan['from']} ({a.plan['from_provider']}) -> {a.plan['to']} ({a.plan['to_provider']})"
        )
    if a.kind.value == "card":
        extra.append(str(a.plan["title"]))
    if o.result in (Result.HELD, Result.FAILED) and o.detail:
        extra.append(o.detail)
    return " ".join(bits) + (f"  ({'; '.join(extra)})" if extra else "")


def cmd_once(args: argparse.Namespace) -> int:
    _check_watcher(args.watcher)
    settings = _settings(args)
    level = settings.log.level
    if console_logs(settings.log.format) and level in ("debug", "info"):
        level = "warning"  # on a terminal each action is printed once, below, not logged too
    configure_logging(level, settings.log.format)
    stores, errors, busy, _ = _open_boards(args, settings, readonly=args.dry_run)
    probe = ProcessProbe(settings.hostname)
    clock = SystemClock()
    reports: list[TickReport] = []
    try:
        for store in stores:
            for watcher in enabled_watchers(settings, probe, args.watcher):
                reports.append(run_tick(watcher, store, settings, clock, dry_run=args.dry_run))
    finally:
        for store in stores:
            store.close()
        probe.close()
    outcomes = [o for r in reports for o in r.outcomes]
    if args.json:
        print(json.dumps([o.as_record() for o in outcomes], indent=2, default=str))
    else:
        for o in outcomes:
            print(_line(o))
        if any(o.result is Result.HELD for o in outcomes):
            print("guard: actions were held back; see the log", file=sys.stderr)
    failed = [r for r in reports if r.error]
    for r in failed:
        print(f"watchers: {r.watcher} on {r.board}: tick failed: {r.error}", file=sys.stderr)
    if errors:
        return ExitCode.NO_INPUT
    return ExitCode.UNEXPECTED if failed or busy else ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log.level, settings.log.format)
    stores, errors, busy, slugs = _open_boards(args, settings, readonly=True)
    probe = ProcessProbe(settings.hostname)
    now = SystemClock().now()
    read: dict[Path, dict[str, Any]] = {}
    try:
        for store in stores:
            try:
                read[store.path] = {**board_status(store, probe, settings, now), "errors": []}
            except WatchersError as exc:
                print(f"watchers: {exc}", file=sys.stderr)
                errors.append(BoardError(store.path, str(exc)))
    finally:
        for store in stores:
            store.close()
        probe.close()
    problems = {e.path: e.problem for e in errors} | {p: str(b) for p, b in busy.items()}
    boards = [
        read.get(path)
        or {
            "board": slug,
            "path": str(path),
            "errors": [problems.get(path, "not read")],
        }
        for path, slug in slugs.items()
    ]
    if args.json:
        print(json.dumps({"schema_version": SCHEMA_VERSION, "boards": boards}, indent=2))
    else:
        print(
            "\n\n".join(
                render_status(b)
                if not b["errors"]
                else render_problem(b["board"], b["path"], b["errors"])
                for b in boards
            )
        )
    if errors:
        return ExitCode.NO_INPUT
    return ExitCode.UNEXPECTED if busy else ExitCode.OK


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    print(json.dumps(settings.masked(), indent=2))
    print("configuration ok", file=sys.stderr)
    return ExitCode.OK


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(settings.log.level, settings.log.format)
    daemon = Daemon(lambda: load_settings(args.config), args.board)
    code = daemon.run()
    if daemon.abandoned_ticks:
        # a hung tick's thread would keep the interpreter alive: leave now, as promised
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    return int(run_demo())


def cmd_init_board(args: argparse.Namespace) -> int:
    try:
        create_board(args.path)
    except FileExistsError:
        print(f"watchers: {args.path} already exists", file=sys.stderr)
        return ExitCode.NO_INPUT
    print(f"created empty board {args.path}")
    return ExitCode.OK


COMMANDS = {
    "run": cmd_run,
    "once": cmd_once,
    "status": cmd_status,
    "check-config": cmd_check_config,
    "demo": cmd_demo,
    "init-board": cmd_init_board,
}


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging()  # until the settings are read: nothing may reach stdout
    try:
        return int(COMMANDS[args.command](args))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"watchers: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except (ConfigError, BoardError) as exc:
        print(f"watchers: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        _quiet_stdout()  # a reader that stopped reading (`| head`) is no failure
        return ExitCode.OK
    except ListenError as exc:
        print(f"watchers: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return ExitCode.UNEXPECTED
    except Exception as exc:
        log.exception("unexpected error", command=args.command)
        print(f"watchers: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return ExitCode.UNEXPECTED
