"""Fewer marks: one per ~100 ms of streamed audio, still exact at item ends, markers and stalls."""

from __future__ import annotations

import asyncio
import json

from haggle_gateway.audio import transcoder_for
from haggle_gateway.links import Frame
from haggle_gateway.outbound import MARK_EVERY_MS, AudioOut
from haggle_gateway.playback import EchoKind, PlaybackTracker


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    async def receive(self) -> Frame:
        return Frame(closed=True)

    async def send(self, text: str) -> None:
        self.send_now(text)

    writable_now = True

    def send_now(self, *texts: str) -> None:
        self.sent.extend(json.loads(text) for text in texts)

    def attach(self, feed: object) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None

    def marks(self) -> list[str]:
        return [m["mark"]["name"] for m in self.sent if m["event"] == "mark"]  # type: ignore[index]

    def media(self) -> int:
        return sum(1 for m in self.sent if m["event"] == "media")


def _out(link: RecordingLink) -> AudioOut:
    return AudioOut(link, "MZ1", transcoder_for("pcmu"), 20, lambda _item: None)


def test_unmarked_chunks_are_credited_by_the_next_mark() -> None:
    t = PlaybackTracker()
    t.audio_sent("a", 20.0, marked=False)
    t.audio_sent("a", 20.0, marked=False)
    assert t.unsealed and t.outstanding_ms == 40.0 and t.playing
    name = t.seal()
    assert name is not None and not t.unsealed and t.seal() is None
    assert t.on_echo(name).kind is EchoKind.AUDIO
    assert t.played_ms("a") == 40.0 and not t.playing and t.outstanding_ms == 0.0


def test_unsent_mark_names_are_not_echoes_and_clear_owes_only_sent_marks() -> None:
    t = PlaybackTracker()
    hidden = t.audio_sent("a", 20.0, marked=False)
    sent = t.audio_sent("a", 20.0)
    assert not t.expected(hidden) and t.on_echo(hidden).kind is EchoKind.UNKNOWN
    assert t.expected(sent)
    cuts = t.interrupt()
    assert [(c.item_id, c.played_ms, c.sent_ms) for c in cuts] == [("a", 0, 40)]
    assert t.expected(sent)  # the one mark the clear echoes
    assert not t.expected(sent)  # and no more


def test_streamed_audio_gets_a_mark_per_interval_and_one_at_the_item_end() -> None:
    async def scenario() -> RecordingLink:
        link = RecordingLink()
        out = _out(link)
        for _ in range(25):  # 500 ms in 20 ms deltas, as the model streams them
            await out.audio("item1", b"\xff" * 160)
        await out.end_of_item("item1")
        return link

    link = asyncio.run(scenario())
    assert link.media() == 25
    assert len(link.marks()) == 500 / MARK_EVERY_MS
    assert link.sent[-1]["event"] == "mark"  # the item's last chunk is marked


def test_a_marker_follows_the_audio_and_credits_it_exactly() -> None:
    async def scenario() -> tuple[RecordingLink, AudioOut]:
        link = RecordingLink()
        out = _out(link)
        for _ in range(3):
            await out.audio("bye-item", b"\xff" * 160)
        await out.marker("bye")
        return link, out

    link, out = asyncio.run(scenario())
    marks = link.marks()
    assert len(marks) == 1 and marks[0].endswith("-bye")
    echo = out.tracker.on_echo(marks[0])
    assert echo.kind is EchoKind.MARKER and out.tracker.played_ms("bye-item") == 60.0 and not out.busy


def test_a_stalled_stream_is_sealed_on_the_next_tick_only() -> None:
    async def scenario() -> tuple[RecordingLink, AudioOut, list[int]]:
        link = RecordingLink()
        out = _out(link)
        counts = []
        await out.audio("item1", b"\xff" * 160)
        await out.seal_stalled()  # audio went out since the last tick: not stalled yet
        counts.append(len(link.marks()))
        await out.seal_stalled()  # nothing since: the tail gets its mark
        counts.append(len(link.marks()))
        await out.seal_stalled()
        counts.append(len(link.marks()))
        return link, out, counts

    link, out, counts = asyncio.run(scenario())
    assert counts == [0, 1, 1]
    assert out.tracker.on_echo(link.marks()[0]).kind is EchoKind.AUDIO
    assert out.tracker.played_ms("item1") == 20.0 and not out.busy
