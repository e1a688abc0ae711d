"""The dispatcher check's pure parts: Hermes's dispatch rules, stalls, deadlines, and the
text of /proc/locks. No board, no clock, no /proc."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from watchers.dispatcher.decide import DEADLINE_SLACK_SECONDS, next_deadline, stalled
from watchers.dispatcher.locks import holders, parse_proc_locks
from watchers.dispatcher.observe import DispatchState
from watchers.hermes.dispatching import (
    GLOBAL_CAP,
    PROFILE_CAP,
    UNASSIGNED,
    UNKNOWN_PROFILE,
    DispatchRules,
    parse_kanban_config,
)
from watchers.passes import enabled_watchers, first_tick_offsets
from watchers.probe import StaticProbe
from watchers.settings import DispatcherSettings, Settings

NOW = 1_800_000_000.0
S = DispatcherSettings()  # stall_seconds = 600
RULES = DispatchRules(profiles=frozenset({"coder", "reviewer"}))


def waiting(minutes: float, *, claimed_minutes_ago: float | None = None, n: int = 1):
    """A board whose oldest dispatchable task has waited `minutes`."""
    return DispatchState(
        board="default",
        last_claim_at=None if claimed_minutes_ago is None else int(NOW - claimed_minutes_ago * 60),
        ready=n,
        dispatchable=n,
        running=0,
        oldest_since=int(NOW - minutes * 60),
        oldest_task="t_0000aaaa",
    )


def test_dispatchable_work_waiting_past_stall_seconds_with_no_claim_is_a_stall():
    """20 minutes of waiting, the last claim an hour ago: stalled, with what was seen."""
    stall = stalled(waiting(20, claimed_minutes_ago=60, n=4), S, NOW)
    assert stall is not None
    assert (stall.board, stall.dispatchable, stall.oldest_task) == ("default", 4, "t_0000aaaa")
    assert stall.waiting_seconds == 1200 and stall.last_claim_at == int(NOW - 3600)


def test_a_board_that_never_had_a_claim_is_stalled_too():
    """No run at all (the dispatcher never ran here) is no excuse."""
    stall = stalled(waiting(11), S, NOW)
    assert stall is not None and stall.last_claim_at is None


def test_a_recent_claim_of_anything_means_the_dispatcher_runs():
    """The dispatcher claimed 5 minutes ago: the old task waits for other reasons."""
    assert stalled(waiting(60, claimed_minutes_ago=5), S, NOW) is None


def test_work_waiting_less_than_stall_seconds_is_no_stall():
    """9 minutes of waiting is within the 10 the dispatcher is given."""
    assert stalled(waiting(9, claimed_minutes_ago=120), S, NOW) is None
    assert stalled(waiting(10, claimed_minutes_ago=120), S, NOW) is None  # not longer: equal


def test_nothing_ready_is_no_stall():
    """An idle board with an idle dispatcher is fine."""
    idle = DispatchState("default", last_claim_at=None, ready=0, dispatchable=0, running=0)
    assert stalled(idle, S, NOW) is None


def test_ready_work_that_is_all_held_back_is_no_stall():
    """Ready tasks Hermes would not spawn (no profile, a cap) are not the dispatcher's fault."""
    held = DispatchState(
        "default", None, ready=3, dispatchable=0, running=2, held_back={UNKNOWN_PROFILE: 3}
    )
    assert stalled(held, S, NOW) is None


def test_a_state_whose_waits_were_not_looked_up_is_never_a_stall():
    """Waits are skipped only after a recent claim; the creation time is then no evidence."""
    assert stalled(replace(waiting(60, claimed_minutes_ago=120), exact=False), S, NOW) is None


def test_stall_seconds_is_the_setting():
    """A shorter stall_seconds makes a shorter wait a stall."""
    assert stalled(waiting(3), DispatcherSettings(stall_seconds=120), NOW) is not None


@pytest.mark.parametrize(
    ("assignee", "running", "running_by", "why"),
    [
        ("coder", 0, {}, None),
        ("  Coder ", 0, {}, None),  # Hermes strips and lower-cases profile names
        ("default", 0, {}, None),  # the root's own profile always exists
        (None, 0, {}, UNASSIGNED),
        ("", 0, {}, UNASSIGNED),
        ("orion-cc", 0, {}, UNKNOWN_PROFILE),  # a terminal's lane: pulled, never spawned
    ],
)
def test_a_ready_task_is_dispatchable_when_an_existing_profile_would_run_it(
    assignee, running, running_by, why
):
    """Assignee known = an existing Hermes profile."""
    assert RULES.held_back(assignee, running, running_by) == why


def test_an_unassigned_task_goes_to_the_default_assignee_when_that_profile_exists():
    """kanban.default_assignee: Hermes assigns and spawns unassigned ready work."""
    assert (
        DispatchRules(default_assignee="coder", profiles=frozenset({"coder"})).held_back(
            None, 0, {}
        )
        is None
    )
    missing = DispatchRules(default_assignee="ghost", profiles=frozenset({"coder"}))
    assert missing.held_back(None, 0, {}) == UNASSIGNED


def test_when_the_profiles_cannot_be_read_any_assignee_counts():
    """An unreadable Hermes root must not hide a stall behind unknown profiles."""
    assert DispatchRules(profiles=None).held_back("anyone", 0, {}) is None
    assert DispatchRules(profiles=None).held_back(None, 0, {}) == UNASSIGNED


def test_at_the_global_cap_nothing_is_dispatchable():
    """max_in_progress (or max_spawn, a live cap too) running tasks: Hermes waits."""
    capped = replace(RULES, max_in_progress=4)
    assert capped.held_back("coder", 4, {"coder": 4}) == GLOBAL_CAP
    assert capped.held_back("coder", 3, {"coder": 3}) is None
    assert replace(RULES, max_in_progress=9, max_spawn=2).held_back("coder", 2, {}) == GLOBAL_CAP


def test_an_assignee_at_the_per_profile_cap_is_held_back_and_the_others_are_not():
    """max_in_progress_per_profile counts each assignee's running tasks."""
    capped = replace(RULES, max_in_progress_per_profile=2)
    busy = {"coder": 2, "reviewer": 1}
    assert capped.held_back("coder", 3, busy) == PROFILE_CAP
    assert capped.held_back("reviewer", 3, busy) is None


def test_the_kanban_section_is_read_as_hermes_coerces_it():
    """Caps below 1, not numbers or booleans are ignored; a blank default assignee is none."""
    cfg = {
        "kanban": {
            "max_in_progress": "3",
            "max_in_progress_per_profile": 0,
            "max_spawn": True,
            "default_assignee": "  ",
        }
    }
    assert parse_kanban_config(cfg) == {
        "max_in_progress": 3,
        "max_spawn": None,
        "max_in_progress_per_profile": None,
        "default_assignee": None,
    }
    assert parse_kanban_config({"kanban": "nonsense"}) == {}
    assert parse_kanban_config(["not", "a", "mapping"]) == {}
    assert parse_kanban_config({"kanban": {"max_in_progress": 10**30}})["max_in_progress"]


def test_the_deadline_is_when_the_oldest_wait_passes_stall_seconds():
    """Waiting 4 minutes, no claim ever: due 6 minutes (and a second) from now."""
    due = next_deadline(waiting(4), S, NOW)
    assert due == NOW + 360 + DEADLINE_SLACK_SECONDS


def test_the_deadline_waits_for_the_last_claim_to_age_too():
    """Waiting 30 minutes, a claim 2 minutes ago: due when that claim is 10 minutes old."""
    due = next_deadline(waiting(30, claimed_minutes_ago=2), S, NOW)
    assert due == NOW + 480 + DEADLINE_SLACK_SECONDS


def test_no_deadline_when_nothing_is_dispatchable_or_the_board_is_stalled_already():
    """New ready work or a claim is a write to the board: the sweep sees those."""
    idle = DispatchState("default", last_claim_at=None, ready=0, dispatchable=0, running=0)
    assert next_deadline(idle, S, NOW) is None
    assert next_deadline(waiting(60), S, NOW) is None


PROC_LOCKS = """\
1: POSIX  ADVISORY  WRITE 812 fe:01:524291 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 fe:01:1048577 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4300 fe:01:1048577 0 EOF
3: FLOCK  ADVISORY  WRITE 0 103:0a:77 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:06:1048577 0 EOF
5: LEASE  ACTIVE    READ  99 fe:01:1048577 0 EOF
garbage line
6: FLOCK  ADVISORY  WRITE notapid fe:01:1 0 EOF
"""


def test_proc_locks_lines_parse_with_hex_devices_and_waiters_marked():
    """`MAJOR:MINOR` are hex, the inode decimal; `->` lines wait, they do not hold."""
    entries = parse_proc_locks(PROC_LOCKS.splitlines())
    assert [(e.kind, e.pid, e.major, e.minor, e.inode, e.waiting) for e in entries] == [
        ("POSIX", 812, 0xFE, 1, 524291, False),
        ("FLOCK", 4242, 0xFE, 1, 1048577, False),
        ("FLOCK", 4300, 0xFE, 1, 1048577, True),
        ("FLOCK", 0, 0x103, 0x0A, 77, False),
        ("OFDLCK", -1, 0, 6, 1048577, False),
        ("LEASE", 99, 0xFE, 1, 1048577, False),
    ]


def test_only_flock_and_posix_holders_of_that_very_file_count():
    """Same inode on another device, waiters and leases are not holders."""
    entries = parse_proc_locks(PROC_LOCKS.splitlines())
    assert holders(entries, os.makedev(0xFE, 1), 1048577) == [4242]
    assert holders(entries, os.makedev(0xFE, 1), 524291) == [812]
    assert holders(entries, os.makedev(0x103, 0x0A), 77) == [0]  # another PID namespace
    assert holders(entries, os.makedev(8, 1), 1048577) == []


def test_the_check_runs_by_default_and_its_first_pass_takes_no_place_in_the_stagger():
    """auto-heal at 0 s, distress 2 s, budget 4 s as before; the dispatcher check at 1 s."""
    offsets = first_tick_offsets(enabled_watchers(Settings(), StaticProbe()))
    assert [(w.name, o) for w, o in offsets] == [
        ("auto-heal", 0.0),
        ("distress", 2.0),
        ("budget", 4.0),
        ("dispatcher", 1.0),
    ]
