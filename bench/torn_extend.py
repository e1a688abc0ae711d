"""Does a kanban-watchers daemon beside Hermes make Hermes 0.19 fail its own writes?

Hermes 0.19's `write_txn` runs `_check_file_length_invariant` after every COMMIT: it
reads the board file's size, then the page count in its header (plain `open()`), and
raises `sqlite3.DatabaseError("torn-extend detected: ...")` when the header claims more
pages than the file has. The write itself has committed by then; the caller only sees
the error.

This script measures how often that happens, from one run, side by side:

  a  Hermes alone
  b  Hermes + `watchers run --board <board>` (HTTP off)
  c  Hermes + the daemon with HTTP on a loopback port, `/metrics` scraped periodically

Each scenario gets a fresh temp Hermes home (HERMES_HOME = HERMES_KANBAN_HOME, an empty
`profiles/coder`) and board (`kb.connect`). A writer subprocess then runs Hermes's own
task cycle for --seconds: create_task, claim_task, heartbeat_worker x2, add_comment,
complete_task, each on its own short-lived `kb.connect_closing` connection (as Hermes's
tools do). Exceptions are counted: "torn-extend" ones and all others separately. At the
end it checks that every torn-extend write did land (it is raised after COMMIT) and that
the board passes `PRAGMA integrity_check`.

Everything is bounded: the daemon is stopped with SIGTERM (SIGKILL after 10 s), the
writer is killed if it overruns, only 127.0.0.1 is used, temp dirs are removed.

    .venv/bin/python bench/torn_extend.py [--seconds 40] [--scenarios a,b,c] [--rounds 1]
        [--daemon-src DIR]   # run the daemon from a copy of the repo (PYTHONPATH=DIR)
        [--writers 1]        # writer processes per scenario
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {
    "a": "Hermes alone",
    "b": "Hermes + daemon",
    "c": "Hermes + daemon + /metrics scrapes",
}


# -- the Hermes writer (runs in its own process) -------------------------------------


def writer_main(board: str, seconds: float, pause: float, tag: str) -> None:
    from hermes_cli import kanban_db as kb

    path = Path(board)
    wal = Path(board + "-wal")
    stats = {
        "ops": 0,  # Hermes write calls made
        "ok": 0,
        "torn": 0,
        "other": 0,
        "torn_by_op": {},
        "other_samples": [],
        "torn_samples": [],
        "created": 0,  # create_task calls whose write landed (ok or torn)
        "completed": 0,  # complete_task calls that returned True, or raised torn-extend
        "comments": 0,
        "max_wal_bytes": 0,
        "cycles": 0,
        "torn_where": [],  # (task title, call, unix time) of the first torn-extend errors
    }
    current = {"title": None}

    def call(name: str, fn, *args, **kwargs):
        stats["ops"] += 1
        try:
            with kb.connect_closing(path) as conn:
                out = fn(conn, *args, **kwargs)
            stats["ok"] += 1
            return True, out
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if "torn-extend" in text:
                stats["torn"] += 1
                stats["torn_by_op"][name] = stats["torn_by_op"].get(name, 0) + 1
                if len(stats["torn_where"]) < 50:
                    stats["torn_where"].append((current["title"], name, round(time.time(), 3)))
                if len(stats["torn_samples"]) < 3:
                    stats["torn_samples"].append(text[:300])
                return None, None  # committed, result unknown
            stats["other"] += 1
            if len(stats["other_samples"]) < 5:
                stats["other_samples"].append(f"{name}: {text[:300]}")
            return False, None
        finally:
            with contextlib.suppress(OSError):
                stats["max_wal_bytes"] = max(stats["max_wal_bytes"], wal.stat().st_size)
            if pause:
                time.sleep(pause)

    def task_by_title(title: str) -> str | None:
        with kb.connect_closing(path) as conn:
            row = conn.execute("SELECT id FROM tasks WHERE title = ?", (title,)).fetchone()
        return row[0] if row else None

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        title = f"bench {tag} {n}"
        current["title"] = title
        ok, tid = call(
            "create_task",
            kb.create_task,
            title=title,
            body="x" * 200,
            assignee="coder",
            created_by="bench",
        )
        if ok is False:
            continue
        stats["created"] += 1
        if tid is None:
            tid = task_by_title(title)
            if tid is None:
                continue
        ok, _ = call("claim_task", kb.claim_task, tid, claimer=f"bench:{os.getpid()}")
        if ok is False:
            continue
        for i in range(2):
            call("heartbeat_worker", kb.heartbeat_worker, tid, note=f"beat {i}")
        ok, _ = call("add_comment", kb.add_comment, tid, "coder", "progress " + "y" * 300)
        if ok is not False:
            stats["comments"] += 1
        ok, done = call(
            "complete_task", kb.complete_task, tid, result="ok " + "z" * 200, summary="done"
        )
        if ok is None or done:
            stats["completed"] += 1
        stats["cycles"] += 1
    print(json.dumps(stats), flush=True)


def seed_main(board: str, n: int) -> None:
    """History for the daemon to read: n tasks, 4 in 5 done with a run, heartbeats and a
    comment, the rest left ready (nothing for auto-heal to act on). One connection,
    synchronous=OFF: this is setup, not the measured load."""
    from hermes_cli import kanban_db as kb

    conn = kb.connect(Path(board))
    conn.execute("PRAGMA synchronous=OFF")
    for i in range(n):
        tid = kb.create_task(
            conn, title=f"seed {i}", body="s" * 400, assignee="coder", created_by="seed"
        )
        if i % 5 == 4:
            continue
        kb.claim_task(conn, tid, claimer="seed:1")
        kb.heartbeat_worker(conn, tid, note="seed")
        kb.add_comment(conn, tid, "coder", "seed comment " + "c" * 200)
        kb.complete_task(conn, tid, result="seeded " + "r" * 200, summary="seeded")
    conn.close()


# -- the harness ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_home(
    base: Path, seed: int = 0, template: Path | None = None
) -> tuple[dict[str, str], Path]:
    home = base / "home"
    (home / "profiles" / "coder").mkdir(parents=True)
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("WATCHERS_", "HERMES_")):
            del env[key]
    env["HERMES_HOME"] = str(home)
    env["HERMES_KANBAN_HOME"] = str(home)
    board = home / "kanban.db"
    if template is not None:  # a seeded board made once per run (closed: no WAL beside it)
        shutil.copyfile(template, board)
        return env, board
    code = (
        "import sys; from pathlib import Path; from hermes_cli import kanban_db as kb; "
        "c = kb.connect(Path(sys.argv[1])); c.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(board)], env=env, check=True, timeout=60)
    if seed:
        subprocess.run(
            [sys.executable, __file__, "--seed", str(seed), "--writer", str(board)],
            env=env,
            check=True,
            timeout=900,
        )
    return env, board


def check_board(board: Path, env: dict[str, str], w: dict) -> dict:
    """After the run: did every write that raised torn-extend land anyway?"""
    conn = sqlite3.connect(f"file:{board}?mode=ro", uri=True, timeout=10)
    try:
        tasks = conn.execute("SELECT COUNT(*) FROM tasks WHERE created_by = 'bench'").fetchone()[0]
        done = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE created_by = 'bench' AND status = 'done'"
        ).fetchone()[0]
        comments = conn.execute(
            "SELECT COUNT(*) FROM task_comments WHERE author = 'coder' "
            "AND task_id IN (SELECT id FROM tasks WHERE created_by = 'bench')"
        ).fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        not_done = conn.execute(
            "SELECT title, status FROM tasks WHERE created_by = 'bench' AND status != 'done' "
            "LIMIT 5"
        ).fetchall()
    finally:
        conn.close()
    return {
        "tasks_on_board": tasks,
        "tasks_expected": w["created"],
        "done_on_board": done,
        "done_expected": w["completed"],
        "comments_on_board": comments,
        "comments_expected": w["comments"],
        "integrity": integrity,
        "not_done_sample": not_done,
        "consistent": tasks == w["created"]
        and done == w["completed"]
        and comments == w["comments"]
        and integrity == "ok",
    }


def run_scenario(key: str, args: argparse.Namespace, round_no: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"torn-{key}-", dir=args.tmp))
    daemon: subprocess.Popen | None = None
    stop_scrape = threading.Event()
    scrapes = {"ok": 0, "failed": 0}
    scraper: threading.Thread | None = None
    daemon_log = base / "daemon.log"
    try:
        env, board = make_home(base, template=args.template)
        if key in ("b", "c"):
            denv = dict(env)
            if args.daemon_src:
                denv["PYTHONPATH"] = str(Path(args.daemon_src).resolve())
            port = free_port()
            if key == "b":
                denv["WATCHERS_HTTP__ENABLED"] = "false"
            else:
                denv["WATCHERS_HTTP__LISTEN"] = f"127.0.0.1:{port}"
            with open(daemon_log, "wb") as log:
                daemon = subprocess.Popen(
                    [sys.executable, "-m", "watchers", "run", "--board", str(board)],
                    env=denv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=str(base),
                    start_new_session=True,
                )
            time.sleep(args.warmup)  # let the first ticks open their connections
            if daemon.poll() is not None:
                raise RuntimeError(
                    f"daemon exited early ({daemon.returncode}); see {daemon_log}:\n"
                    + daemon_log.read_text()[-2000:]
                )
            if key == "c":
                url = f"http://127.0.0.1:{port}/metrics"

                def scrape() -> None:
                    while not stop_scrape.wait(args.scrape_interval):
                        try:
                            with urllib.request.urlopen(url, timeout=5) as r:
                                r.read()
                            scrapes["ok"] += 1
                        except OSError:
                            scrapes["failed"] += 1

                scraper = threading.Thread(target=scrape, daemon=True)
                scraper.start()
        writers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--writer",
                    str(board),
                    "--seconds",
                    str(args.seconds),
                    "--pause",
                    str(args.pause),
                    "--tag",
                    f"{key}{round_no}w{i}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(args.writers)
        ]
        results = []
        for p in writers:
            try:
                out, err = p.communicate(timeout=args.seconds + 60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            if p.returncode != 0 or not out.strip():
                raise RuntimeError(f"writer failed ({p.returncode}): {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        w = {
            k: sum(r[k] for r in results)
            for k in ("ops", "ok", "torn", "other", "created", "completed", "comments", "cycles")
        }
        w["max_wal_bytes"] = max(r["max_wal_bytes"] for r in results)
        w["torn_by_op"] = {}
        for r in results:
            for op, n in r["torn_by_op"].items():
                w["torn_by_op"][op] = w["torn_by_op"].get(op, 0) + n
        w["torn_where"] = [t for r in results for t in r["torn_where"]]
        w["torn_samples"] = [s for r in results for s in r["torn_samples"]][:2]
        w["other_samples"] = [s for r in results for s in r["other_samples"]][:5]
        stop_scrape.set()
        if scraper is not None:
            scraper.join(10)
        daemon_rc = None
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon_rc = daemon.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon_rc = daemon.wait(5)
            daemon = None
        w["check"] = check_board(board, env, w)
        w["daemon_rc"] = daemon_rc
        w["scrapes"] = dict(scrapes) if key == "c" else None
        if args.keep:
            w["dir"] = str(base)
        return w
    finally:
        stop_scrape.set()
        if daemon is not None and daemon.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(5)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--scenarios", default="a,b,c")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the scenarios, interleaved")
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.0, help="sleep between Hermes calls (s)")
    ap.add_argument("--warmup", type=float, default=3.0, help="daemon start before writes (s)")
    ap.add_argument("--scrape-interval", type=float, default=2.0)
    ap.add_argument("--daemon-src", help="PYTHONPATH for the daemon (a copy of the repo)")
    ap.add_argument("--tmp", default=None, help="where temp homes go")
    ap.add_argument("--keep", action="store_true", help="keep temp homes (and daemon logs)")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument(
        "--seed-tasks",
        type=int,
        default=0,
        help="history on the board before the run (4 in 5 done), for the daemon to read",
    )
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.writer and args.seed:
        seed_main(args.writer, args.seed)
        return 0
    if args.writer:
        writer_main(args.writer, args.seconds, args.pause, args.tag)
        return 0

    keys = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {unknown}")
    rows: list[tuple[str, int, dict]] = []
    args.template = None
    template_dir = None
    if args.seed_tasks:
        template_dir = Path(tempfile.mkdtemp(prefix="torn-seed-", dir=args.tmp))
        t0 = time.monotonic()
        _, args.template = make_home(template_dir, args.seed_tasks)
        print(
            f"# seeded {args.seed_tasks} tasks in {time.monotonic() - t0:.0f} s "
            f"({args.template.stat().st_size // 1024} KiB)",
            file=sys.stderr,
            flush=True,
        )
    try:
        for r in range(args.rounds):
            for key in keys:
                res = run_scenario(key, args, r)
                rows.append((key, r, res))
                print(
                    f"# round {r} {key}: writes={res['ops']} torn={res['torn']} "
                    f"other={res['other']} wal_max={res['max_wal_bytes']} "
                    f"consistent={res['check']['consistent']} torn_by_op={res['torn_by_op']}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if template_dir is not None:
            shutil.rmtree(template_dir, ignore_errors=True)

    src = args.daemon_src or "(installed watchers)"
    if os.environ.get("TORN_VARIANT"):
        src += f" TORN_VARIANT={os.environ['TORN_VARIANT']}"
    print(
        f"\nseconds={args.seconds:g} writers={args.writers} pause={args.pause:g} "
        f"seed_tasks={args.seed_tasks} "
        f"rounds={args.rounds} daemon={src}"
    )
    hdr = f"{'scenario':<38} {'writes':>7} {'torn-extend':>12} {'other':>6} {'max WAL KiB':>11}  consistent"
    print(hdr)
    print("-" * len(hdr))
    for key in keys:
        mine = [res for k, _, res in rows if k == key]
        writes = sum(m["ops"] for m in mine)
        torn = sum(m["torn"] for m in mine)
        other = sum(m["other"] for m in mine)
        wal = max(m["max_wal_bytes"] for m in mine) // 1024
        per = "/".join(str(m["torn"]) for m in mine)
        cons = all(m["check"]["consistent"] for m in mine)
        name = f"{key} {SCENARIOS[key]}"
        print(f"{name:<38} {writes:>7} {torn:>6} ({per}) {other:>6} {wal:>11}  {cons}")
    for key, r, res in rows:
        for s in res["other_samples"]:
            print(f"  other error ({key}, round {r}): {s}")
        if not res["check"]["consistent"]:
            print(f"  inconsistent board ({key}, round {r}): {res['check']}")
    if rows and any(res["torn_samples"] for _, _, res in rows):
        sample = next(res["torn_samples"][0] for _, _, res in rows if res["torn_samples"])
        print(f"  torn-extend sample: {sample}")
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"scenario": k, "round": r, **res} for k, r, res in rows], indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
