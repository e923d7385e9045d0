"""Transcript assembly: cumulative snapshots, missing `.done` text, spoken order and contiguous seq."""

from __future__ import annotations

from datetime import UTC, datetime

from haggle_contracts.events import Role
from haggle_gateway.transcript import TranscriptAssembler

WALL = datetime(2026, 1, 1, tzinfo=UTC)


def test_cumulative_snapshots_keep_the_latest_and_publish_once() -> None:
    t = TranscriptAssembler(settle_s=1.0)
    t.open("u1", Role.USER, 0.0, WALL)
    t.user_snapshot("u1", "Yes, this", None, 0.1, WALL)
    t.user_snapshot("u1", "Yes, this is Joe's", None, 0.2, WALL)
    assert t.release(0.5) == []  # still changing
    t.user_snapshot("u1", "Yes, this is Joe's Plumbing.", True, 0.6, WALL)
    (u,) = t.release(0.6)
    assert (u.seq, u.role, u.text) == (0, Role.USER, "Yes, this is Joe's Plumbing.")
    t.user_snapshot("u1", "Yes, this is Joe's Plumbing.", True, 0.65, WALL)  # late repeat: nothing new
    assert t.release(0.7) == []
    # A revision after `completed`: the same line (id and seq) with the new text, once.
    t.user_snapshot("u1", "Yes, this is Joe's Plumbing. Hello?", True, 0.7, WALL)
    (r,) = t.release(0.7)
    assert (r.item_id, r.seq, r.text, r.revision) == ("u1", 0, "Yes, this is Joe's Plumbing. Hello?", 1)
    assert t.release(5.0) == [] and t.flush(5.0) == []


def test_snapshots_without_status_settle_after_quiet() -> None:
    t = TranscriptAssembler(settle_s=1.0)
    t.user_snapshot("u1", "Hello", None, 0.0, WALL)
    assert t.release(0.9) == []
    (u,) = t.release(1.0)
    assert u.text == "Hello"


def test_assistant_text_comes_from_deltas_when_done_lacks_it() -> None:
    t = TranscriptAssembler()
    t.open("a1", Role.ASSISTANT, 0.0, WALL)
    for piece in ("Hi, ", "is this ", "Joe's Plumbing?"):
        t.assistant_delta("a1", piece, 0.1, WALL)
    t.assistant_done("a1", None, 0.2, WALL)
    (u,) = t.release(0.2)
    assert (u.role, u.text) == (Role.ASSISTANT, "Hi, is this Joe's Plumbing?")


def test_done_transcript_wins_over_deltas() -> None:
    t = TranscriptAssembler()
    t.assistant_delta("a1", "Hi is th", 0.0, WALL)
    t.assistant_done("a1", "Hi, is this Joe's Plumbing?", 0.1, WALL)
    assert [u.text for u in t.release(0.1)] == ["Hi, is this Joe's Plumbing?"]


def test_spoken_order_holds_when_the_user_transcript_lands_late() -> None:
    """The provider spoke first; their transcription arrives after the agent's reply finished."""
    t = TranscriptAssembler(settle_s=1.0)
    t.open("u1", Role.USER, 0.0, WALL)
    t.open("a1", Role.ASSISTANT, 0.5, WALL)
    t.assistant_done("a1", "Hi, is this Joe's?", 1.0, WALL)
    assert t.release(1.0) == []  # the agent's line waits behind the provider's
    t.user_snapshot("u1", "Hello?", True, 1.2, WALL)
    released = t.release(1.2)
    assert [(u.seq, u.role, u.text) for u in released] == [
        (0, Role.USER, "Hello?"), (1, Role.ASSISTANT, "Hi, is this Joe's?")]


def test_slots_that_never_get_text_are_dropped_without_a_seq_gap() -> None:
    t = TranscriptAssembler(abandon_s=2.0)
    t.open("noise", Role.USER, 0.0, WALL)  # a commit the server never transcribed
    t.open("a1", Role.ASSISTANT, 0.1, WALL)
    t.assistant_done("a1", "Hello?", 0.2, WALL)
    assert t.release(1.0) == []
    (u,) = t.release(2.0)
    assert (u.seq, u.item_id) == (0, "a1")


def test_interrupted_and_flushed_items() -> None:
    t = TranscriptAssembler()
    t.open("a1", Role.ASSISTANT, 0.0, WALL)
    t.assistant_delta("a1", "I have a leaking", 0.1, WALL)
    t.mark_interrupted("a1")
    t.user_snapshot("u1", "Sorry, what?", None, 0.2, WALL)
    flushed = t.flush(0.3)
    assert [(u.seq, u.text, u.interrupted) for u in flushed] == [
        (0, "I have a leaking", True), (1, "Sorry, what?", False)]
    assert t.released_count == 2
