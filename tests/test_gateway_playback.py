"""The mark-based playback tracker: what was heard, and why echoes after a `clear` count for nothing."""

from __future__ import annotations

from haggle_gateway.playback import EchoKind, PlaybackTracker


def test_each_chunk_gets_a_unique_mark_and_echoes_credit_played_ms() -> None:
    t = PlaybackTracker()
    names = [t.audio_sent("item1", 40.0) for _ in range(3)]
    assert len(set(names)) == 3
    assert t.playing and t.outstanding_ms == 120.0
    echo = t.on_echo(names[0])
    assert echo.kind == EchoKind.AUDIO and echo.item_id == "item1"
    assert t.played_ms("item1") == 40.0 and t.sent_ms("item1") == 120.0
    assert t.on_echo(names[0]).kind == EchoKind.UNKNOWN  # an echo counts once


def test_a_later_echo_credits_earlier_chunks_too() -> None:
    """Twilio plays in order: if mark 3 is back, 1 and 2 have played."""
    t = PlaybackTracker()
    names = [t.audio_sent("a", 50.0) for _ in range(3)]
    t.on_echo(names[2])
    assert t.played_ms("a") == 150.0 and not t.playing


def test_interrupt_truncates_at_played_and_ignores_stale_echoes() -> None:
    t = PlaybackTracker()
    first = [t.audio_sent("a", 100.0) for _ in range(3)]
    t.on_echo(first[0])  # 100 ms of "a" heard
    later = t.audio_sent("b", 80.0)  # a second item queued behind it
    cuts = t.interrupt()
    assert [(c.item_id, c.audio_end_ms, c.sent_ms) for c in cuts] == [("a", 100, 300), ("b", 0, 80)]
    assert not t.playing
    # The clear makes Twilio echo everything that was pending, at once: none of it was heard.
    for name in [*first[1:], later]:
        assert t.on_echo(name).kind == EchoKind.STALE
    assert t.played_ms("a") == 100.0 and t.played_ms("b") == 0.0
    # The new generation works normally.
    fresh = t.audio_sent("c", 20.0)
    assert fresh.startswith(f"g{t.generation}-")
    assert t.on_echo(fresh).kind == EchoKind.AUDIO


def test_truncation_never_exceeds_audio_sent() -> None:
    t = PlaybackTracker()
    name = t.audio_sent("a", 30.0)
    t.on_echo(name)
    t.audio_sent("a", 30.0)
    (cut,) = t.interrupt()
    assert cut.audio_end_ms == 30 <= cut.sent_ms == 60


def test_markers_report_when_everything_before_them_played() -> None:
    t = PlaybackTracker()
    audio = t.audio_sent("bye-item", 500.0)
    bye = t.marker("bye")
    assert bye.endswith("-bye")
    assert t.on_echo(audio).kind == EchoKind.AUDIO
    echo = t.on_echo(bye)
    assert echo.kind == EchoKind.MARKER and echo.label == "bye"


def test_a_marker_flushed_by_clear_is_stale() -> None:
    t = PlaybackTracker()
    t.audio_sent("x", 100.0)
    bye = t.marker("bye")
    t.interrupt()
    assert t.on_echo(bye).kind == EchoKind.STALE


def test_foreign_mark_names_are_unknown() -> None:
    t = PlaybackTracker()
    for name in ("", "responsePart", "g-1", "gx-2", "g0-999"):
        assert t.on_echo(name).kind == EchoKind.UNKNOWN
