"""The table that lets a board's repeated texts be kept once: shared, and bounded however
many texts a board makes up."""

from watchers.store import rows
from watchers.store.rows import SHARED_MAX, SHARED_MAX_CHARS, shared


def test_equal_texts_read_apart_become_one_object() -> None:
    first = "".join(["claude", "-", "worker"])
    second = "".join(["claude-", "worker"])
    assert first is not second
    assert shared(first) is shared(second)


def test_a_board_making_up_texts_cannot_grow_the_table_past_its_bound() -> None:
    for i in range(SHARED_MAX * 3 + 7):
        assert shared(f"made-up profile {i}") == f"made-up profile {i}"
        assert len(rows._shared) <= SHARED_MAX


def test_a_long_text_is_returned_as_it_is_and_never_held() -> None:
    long = "x" * (SHARED_MAX_CHARS + 1)
    assert shared(long) is long
    assert long not in rows._shared
