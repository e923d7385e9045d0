"""What the callee actually heard: mark-based playback tracking with generations
(docs/twilio-media-streams.md, "Marks").

Twilio echoes a mark once the audio sent before it has played, but `clear` echoes every pending mark at
once, so an echo alone does not prove playback. Every outbound chunk gets a unique mark `g<gen>-<seq>`
mapped to (item_id, content_index, ms). Echoes of the current generation credit their chunk (and any
earlier pending chunk: Twilio plays in order) as played; `interrupt()` bumps the generation before the
`clear` is sent, so the flood of echoes the clear triggers reads as stale and credits nothing.

Non-audio markers (`marker("bye")`) ride the same queue: the echo of a current-generation marker proves the
audio before it played out (used to hang up only after the goodbye was heard).

Not every chunk needs its own mark on the wire: a chunk recorded with `marked=False` waits in the queue under a
key that is never sent, and is credited by the echo of the next mark after it (Twilio plays in order). The
sender (`AudioOut`) decides how often to mark; the tracker only requires that the last chunk queued is marked
eventually (`seal`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum


class EchoKind(Enum):
    AUDIO = "audio"  # a chunk of the current generation finished playing
    MARKER = "marker"  # a labelled marker of the current generation came back
    STALE = "stale"  # from a generation that was cleared: ignore
    UNKNOWN = "unknown"  # not a name we sent (or already credited)


@dataclass(frozen=True, slots=True)
class Echo:
    kind: EchoKind
    label: str | None = None
    item_id: str | None = None


# Echoes are values: the common ones are made once (one echo per outbound chunk per call: the hot path).
_STALE = Echo(EchoKind.STALE)
_UNKNOWN = Echo(EchoKind.UNKNOWN)


@dataclass(frozen=True)
class Truncation:
    """Where to cut an assistant item after a barge-in: never beyond what was sent."""

    item_id: str
    content_index: int
    played_ms: int
    sent_ms: int

    @property
    def audio_end_ms(self) -> int:
        return min(self.played_ms, self.sent_ms)


@dataclass(slots=True)
class _Pending:
    item_id: str | None
    content_index: int
    ms: float
    label: str | None = None
    marked: bool = True  # a mark with this name was sent (its echo is owed)


class PlaybackTracker:
    def __init__(self) -> None:
        self.generation = 0
        self._seq = 0
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._played_ms: dict[str, float] = {}
        self._sent_ms: dict[str, float] = {}
        self._content_index: dict[str, int] = {}
        self._audio_echoes: dict[str, Echo] = {}
        self._stale_due = 0  # echoes a `clear` will return for marks it dropped
        # Running totals of the pending queue (read on every chunk sent: no walk over the queue).
        self._outstanding_ms = 0.0
        self._audio_pending = 0
        self._marked_pending = 0
        self._tail: _Pending | None = None  # the newest pending entry
        self._tail_key = ""  # its name

    def _name(self, label: str | None = None) -> str:
        self._seq += 1
        base = f"g{self.generation}-{self._seq}"
        return f"{base}-{label}" if label else base

    def audio_sent(self, item_id: str, ms: float, content_index: int = 0, *, marked: bool = True) -> str:
        """Record a chunk handed to Twilio; returns the mark name to send right after it. With `marked=False` no
        mark is sent for it: the echo of a later mark credits it."""
        tail = self._tail
        if tail is not None and not tail.marked and tail.item_id == item_id and tail.content_index == content_index:
            # Unmarked audio since the last mark is one entry that grows (its name is never sent), not one per
            # chunk: the echo that credits it pops one entry.
            tail.ms += ms
            self._outstanding_ms += ms
            self._sent_ms[item_id] += ms
            if not marked:
                return self._tail_key
            # This chunk carries the run's mark: the run moves to the mark's name (it stays last in the queue).
            self._seq += 1
            name = f"g{self.generation}-{self._seq}"
            del self._pending[self._tail_key]
            self._pending[name] = tail
            self._tail_key = name
            tail.marked = True
            self._marked_pending += 1
            return name
        self._seq += 1
        name = f"g{self.generation}-{self._seq}"
        entry = _Pending(item_id, content_index, ms, None, marked)
        self._pending[name] = entry
        self._tail = entry
        self._tail_key = name
        self._outstanding_ms += ms
        self._audio_pending += 1
        if marked:
            self._marked_pending += 1
        self._sent_ms[item_id] = self._sent_ms.get(item_id, 0.0) + ms
        self._content_index.setdefault(item_id, content_index)
        return name

    def marker(self, label: str) -> str:
        """A mark that carries no audio: its echo means everything sent before it has played."""
        name = self._name(label)
        entry = _Pending(item_id=None, content_index=0, ms=0.0, label=label)
        self._pending[name] = entry
        self._tail = entry
        self._tail_key = name
        self._marked_pending += 1
        return name

    @property
    def unsealed(self) -> bool:
        """The newest chunk queued carries no mark: nothing would ever credit it."""
        return self._tail is not None and not self._tail.marked

    def seal(self) -> str | None:
        """A mark name for the audio queued since the last mark (an empty chunk of the same item), or None if
        the newest chunk is marked already."""
        tail = self._tail
        if tail is None or tail.marked:
            return None
        assert tail.item_id is not None
        return self.audio_sent(tail.item_id, 0.0, tail.content_index)

    def on_echo(self, name: str) -> Echo:
        entry = self._pending.get(name)
        if entry is None or not entry.marked:
            generation = _generation_of(name)
            if generation is not None and generation < self.generation:
                return _STALE
            return _UNKNOWN
        # Twilio plays in order: everything queued before this mark has played too.
        last: _Pending | None = None
        played = self._played_ms
        while self._pending:
            key, entry = self._pending.popitem(last=False)
            if entry.marked:
                self._marked_pending -= 1
            if entry.item_id is not None:
                played[entry.item_id] = played.get(entry.item_id, 0.0) + entry.ms
                self._outstanding_ms -= entry.ms
                self._audio_pending -= 1
            if key == name:
                last = entry
                break
        assert last is not None
        if not self._pending:
            self._tail = None
            self._outstanding_ms = 0.0  # no float drift across a long call
        if last.label is not None:
            return Echo(EchoKind.MARKER, label=last.label)
        key = last.item_id or ""
        echo = self._audio_echoes.get(key)
        if echo is None:
            echo = self._audio_echoes[key] = Echo(EchoKind.AUDIO, item_id=last.item_id)
        return echo

    def interrupt(self) -> list[Truncation]:
        """Call just before sending `clear`: forget pending audio, start a new generation, and say where each
        interrupted item should be truncated (items that had not started playing get 0)."""
        items: list[str] = []
        for entry in self._pending.values():
            if entry.item_id is not None and entry.item_id not in items:
                items.append(entry.item_id)
        cuts = [
            Truncation(
                item_id=item,
                content_index=self._content_index.get(item, 0),
                played_ms=int(self._played_ms.get(item, 0.0)),
                sent_ms=int(self._sent_ms.get(item, 0.0)),
            )
            for item in items
        ]
        self._stale_due += self._marked_pending  # the clear echoes only the marks that were sent
        self._pending.clear()
        self._tail = None
        self._outstanding_ms = 0.0
        self._audio_pending = self._marked_pending = 0
        self.generation += 1
        return cuts

    def audio_mark(self, name: str) -> bool:
        """`name` is a pending audio mark of the current generation (no label): its echo only credits playback."""
        entry = self._pending.get(name)
        return entry is not None and entry.marked and entry.label is None

    def expected(self, name: str) -> bool:
        """True if `name` is an echo we are owed: a pending mark, or one of the marks a `clear` dropped (each of
        those counted once). A peer inventing mark names gets False."""
        entry = self._pending.get(name)
        if entry is not None:
            return entry.marked
        generation = _generation_of(name)
        if generation is not None and generation < self.generation and self._stale_due > 0:
            self._stale_due -= 1
            return True
        return False

    @property
    def playing(self) -> bool:
        """Audio of the current generation is still queued at Twilio (sent, not yet echoed)."""
        return self._audio_pending > 0

    @property
    def outstanding_ms(self) -> float:
        return self._outstanding_ms

    def played_ms(self, item_id: str) -> float:
        return self._played_ms.get(item_id, 0.0)

    def sent_ms(self, item_id: str) -> float:
        return self._sent_ms.get(item_id, 0.0)

    def playing_items(self) -> list[str]:
        seen: list[str] = []
        for entry in self._pending.values():
            if entry.item_id is not None and entry.item_id not in seen:
                seen.append(entry.item_id)
        return seen


def _generation_of(name: str) -> int | None:
    if not name.startswith("g"):
        return None
    head = name[1:].split("-", 1)[0]
    return int(head) if head.isdigit() else None
