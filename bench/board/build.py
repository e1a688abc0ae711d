"""build_board: the mix of tasks, drawn from a seed and bulk-inserted in one transaction."""

from __future__ import annotations

import gc
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.board.builder import BoardBuilder
from bench.board.rows import Ref


def _resolve(value: Any) -> Any:
    if isinstance(value, Ref):
        return value.id
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


def build_board(path: Path, n_tasks: int, n_running: int, seed: int) -> dict[str, Any]:
    """Bulk-insert the history (one transaction); returns the running task ids and counts."""
    from watchers.store.schema import create_board

    rng = random.Random(seed)
    b = BoardBuilder(rng, int(time.time()))
    n_blocked = max(4, n_tasks // 100)
    n_infra = n_blocked // 4
    n_task_caused = n_blocked // 4
    n_hand = n_blocked - n_infra - n_task_caused
    n_ready = int(n_tasks * 0.015)
    n_todo = n_tasks // 100
    n_triage = n_tasks // 200
    n_distress = max(2, n_tasks // 4000)  # done episodes, in the window and older
    n_distress_running = min(n_running, max(1, n_running // 100))

    t0 = time.monotonic()
    # distress history first (its cards are tasks too: the finished ones fill up the total)
    for _ in range(n_distress):
        b.distress_done(recent=True)
        b.distress_done(recent=False)
    for _ in range(max(1, n_distress // 2)):
        b.distress_reassigned()
        b.distress_card_open()
    for _ in range(max(1, n_distress // 5)):
        b.distress_card_done()
    for _ in range(n_distress_running):
        b.distress_reassigned(run=True)
    # budget history (its cards are tasks too)
    n_budget = max(2, n_tasks // 5000)
    for i in range(n_budget):
        b.budget_repeated(done_card=i % 3 == 0)
        b.budget_attempts()
        b.budget_warned(done=i % 2 == 0)
    for _ in range(max(1, n_budget // 4)):
        b.budget_reblocked()
        b.budget_malformed()
    n_finished = n_tasks - len(b.tasks) - (n_running - n_distress_running)
    n_finished -= n_blocked + n_ready + n_todo + n_triage
    n_finished -= n_infra  # each escalated task comes with its budget card
    n_archived = n_finished // 5
    if n_finished <= 0:
        raise SystemExit("--tasks is too small for the mix")
    for i in range(n_finished):
        b.finished(archived=i < n_archived)
    ready_ids = [b.waiting("ready") for _ in range(n_ready)]
    for _ in range(n_triage):
        b.waiting("triage")
    for _ in range(n_todo):
        b.todo(rng.choice(ready_ids))
    for _ in range(n_hand):
        b.blocked_by_hand()
    for _ in range(n_task_caused):
        b.gave_up_task_caused()
    for _ in range(n_infra):
        b.gave_up_infra_escalated()
    for _ in range(n_running - n_distress_running):
        b.to_run()
    rng.shuffle(b.tasks)  # rowid order unrelated to status, as on a real board

    latest = max(e[0] for e in b.events)
    if latest > b.now:
        raise RuntimeError(f"generated history reaches {latest - b.now} s into the future")
    # ids in time order, as a board that grew over a month has them
    b.runs.sort(key=lambda r: (r[0], r[1]))
    for i, run in enumerate(b.runs, 1):
        run[2].id = i
    b.events.sort(key=lambda e: (e[0], e[1]))
    for i, ev in enumerate(b.events, 1):
        ev[2].id = i
    gen_s = time.monotonic() - t0

    create_board(path)
    t1 = time.monotonic()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # a bulk build; durability is not measured
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO tasks (id, title, body, assignee, status, priority, created_by, "
            "created_at, started_at, completed_at, workspace_kind, workspace_path, branch_name, "
            "claim_lock, claim_expires, tenant, result, idempotency_key, consecutive_failures, "
            "worker_pid, last_failure_error, max_runtime_seconds, last_heartbeat_at, "
            "current_run_id, skills, model_override, max_retries, goal_mode, session_id, "
            "block_kind, block_recurrences, goal_max_turns) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            b.tasks,
        )
        conn.executemany(
            "INSERT INTO task_runs (id, task_id, profile, step_key, status, claim_lock, "
            "claim_expires, worker_pid, max_runtime_seconds, last_heartbeat_at, started_at, "
            "ended_at, outcome, summary, metadata, error) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((r[2].id, *r[3]) for r in b.runs),
        )
        conn.executemany(
            "INSERT INTO task_events (id, task_id, run_id, kind, payload, created_at) "
            "VALUES (?,?,?,?,?,?)",
            (
                (
                    e[2].id,
                    e[3],
                    e[4].id if e[4] is not None else None,
                    e[5],
                    json.dumps(_resolve(e[6]), ensure_ascii=False) if e[6] else None,
                    e[0],
                )
                for e in b.events
            ),
        )
        conn.executemany(
            "INSERT INTO task_comments (task_id, author, body, created_at) VALUES (?,?,?,?)",
            sorted(b.comments, key=lambda c: c[3]),
        )
        conn.executemany("INSERT INTO task_links (parent_id, child_id) VALUES (?,?)", b.links)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    insert_s = time.monotonic() - t1
    counts = {
        "tasks": len(b.tasks),
        "task_runs": len(b.runs),
        "task_events": len(b.events),
        "task_comments": len(b.comments),
        "task_links": len(b.links),
        "blocked_gave_up_infra_escalated": n_infra,
        "blocked_gave_up_task_caused": n_task_caused,
        "blocked_other": n_hand,
        "distress": dict(sorted(b.dstats.items())),
        "budget": dict(sorted(b.bstats.items())),
    }
    running_ids = list(b.running_ids)
    heartbeat_plan = dict(b.heartbeat_plan)
    del b
    gc.collect()
    return {
        "running_ids": running_ids,
        "heartbeat_plan": heartbeat_plan,
        "counts": counts,
        "generate_s": round(gen_s, 2),
        "insert_s": round(insert_s, 2),
    }
