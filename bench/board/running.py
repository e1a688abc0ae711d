"""The board's running tasks, claimed by this host on live `/bin/sh` workers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import stop_workers
from bench.targets import CLAIM_BACKDATE_S


def start_running(
    path: Path, task_ids: Sequence[str], heartbeat_plan: dict[str, int]
) -> tuple[Any, dict[str, int]]:
    """Claim each task as this host's dispatcher, start its worker, heartbeat once (and
    `heartbeat_plan[id]` more times, within the minute). Claims are backdated so
    attempts are past the start grace."""
    from watchers.demo.dispatcher import DemoDispatcher

    disp = DemoDispatcher(path, light_workers=True)
    disp.conn.execute("PRAGMA synchronous=NORMAL")  # the stand-in dispatcher's own connection
    run_ids: dict[str, int] = {}
    try:
        for tid in task_ids:
            claimed_at = int(time.time()) - CLAIM_BACKDATE_S
            run_ids[tid] = disp.claim(tid, now=claimed_at)
            disp.start_worker(tid)
            disp.heartbeat(tid, now=claimed_at + CLAIM_BACKDATE_S // 2)
            for i in range(heartbeat_plan.get(tid, 0)):
                disp.heartbeat(tid, now=claimed_at + CLAIM_BACKDATE_S // 2 + 1 + i)
    except BaseException:
        stop_workers(disp)
        raise
    return disp, run_ids
