"""Per-call transcript assembly: which utterance is final, in what order, with what text.

Why this is not "append every transcript event": Grok repeats `...input_audio_transcription.completed` per
item as cumulative snapshots (keep the latest, never append), it may omit `transcript` on
`response.output_audio_transcript.done` (use the accumulated deltas, or `response.done`'s output), and the
provider's transcription often lands after the agent has already started answering.

So each utterance takes a slot in spoken order when it begins (speech start / commit for the provider,
output item for the agent). A slot becomes final when the server says so (`status: completed`, transcript
`.done`, `response.done`), or for snapshots without a status after `settle_s` without changes. Slots are
released strictly in order, each released slot gets the next `seq` (contiguous from 0), and slots that never
got any text are dropped after `abandon_s`. The class is pure: callers pass the clock in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime

from haggle_contracts.events import Role

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinalUtterance:
    item_id: str
    seq: int
    role: Role
    text: str
    spoken_at: datetime
    interrupted: bool = False
    revision: int = 0  # > 0: a later text for an utterance already released (same item_id and seq)


@dataclass
class _Slot:
    item_id: str
    role: Role
    opened: float
    spoken_at: datetime
    text: str = ""
    deltas: list[str] = field(default_factory=list)
    final: bool = False
    updated: float = 0.0
    interrupted: bool = False
    has_snapshot: bool = False


class TranscriptAssembler:
    def __init__(self, *, settle_s: float = 1.0, abandon_s: float = 6.0, assistant_abandon_s: float = 60.0) -> None:
        self.settle_s = settle_s
        self.abandon_s = abandon_s
        self.assistant_abandon_s = assistant_abandon_s
        self._slots: list[_Slot] = []
        self._by_id: dict[str, _Slot] = {}
        self._released: set[str] = set()
        self._published: dict[str, FinalUtterance] = {}  # user lines released, for revisions
        self._revisions: list[FinalUtterance] = []
        self._next_seq = 0

    @property
    def released_count(self) -> int:
        return self._next_seq

    def open(self, item_id: str, role: Role, now: float, wall: datetime) -> None:
        """Reserve the item's place in spoken order (idempotent)."""
        if not item_id or item_id in self._by_id or item_id in self._released:
            return
        slot = _Slot(item_id=item_id, role=role, opened=now, spoken_at=wall, updated=now)
        self._slots.append(slot)
        self._by_id[item_id] = slot

    def _slot(self, item_id: str, role: Role, now: float, wall: datetime) -> _Slot | None:
        if item_id in self._released:
            log.debug("late transcript update for released item %s ignored", item_id)
            return None
        self.open(item_id, role, now, wall)
        return self._by_id.get(item_id)

    def user_snapshot(self, item_id: str, text: str, final: bool | None, now: float, wall: datetime) -> None:
        """A cumulative input transcription: replaces the previous text for the item, never appends. The server
        may revise a transcript after calling it completed (docs/xai-realtime.md, "Input transcripts"): the last
        text wins, before release by replacing the slot's text, after release as a revision of the utterance."""
        text = text.strip()
        published = self._published.get(item_id)
        if published is not None:
            if text and text != published.text:
                revised = replace(published, text=text, revision=published.revision + 1)
                self._published[item_id] = revised
                self._revisions.append(revised)
            return
        slot = self._slot(item_id, Role.USER, now, wall)
        if slot is None or (slot.final and not text):
            return
        slot.text = text
        slot.has_snapshot = True
        slot.updated = now
        if final:
            slot.final = True

    def assistant_delta(self, item_id: str, delta: str, now: float, wall: datetime) -> None:
        slot = self._slot(item_id, Role.ASSISTANT, now, wall)
        if slot is None or slot.final:
            return
        slot.deltas.append(delta)
        slot.updated = now

    def assistant_done(self, item_id: str, transcript: str | None, now: float, wall: datetime) -> None:
        """`.output_audio_transcript.done` or `response.done`: final, with the server's text if it gave one."""
        slot = self._slot(item_id, Role.ASSISTANT, now, wall)
        if slot is None or slot.final:
            return
        slot.text = (transcript if transcript else "".join(slot.deltas)).strip()
        slot.final = True
        slot.updated = now

    def mark_interrupted(self, item_id: str) -> None:
        slot = self._by_id.get(item_id)
        if slot is not None:
            slot.interrupted = True

    def drop(self, item_id: str) -> None:
        """Forget a slot (e.g. an audio commit that the server then discarded)."""
        slot = self._by_id.pop(item_id, None)
        if slot is not None:
            self._slots.remove(slot)

    def release(self, now: float) -> list[FinalUtterance]:
        """Utterances that are final now, in spoken order, each with its seq, then revisions of released ones.
        Call on every event and tick."""
        out: list[FinalUtterance] = []
        while self._slots:
            head = self._slots[0]
            if not head.final:
                if head.role == Role.USER and head.has_snapshot and now - head.updated >= self.settle_s:
                    head.final = True
                elif head.role == Role.ASSISTANT and head.deltas and now - head.updated >= self.assistant_abandon_s:
                    head.text = "".join(head.deltas).strip()
                    head.final = True
                elif not head.has_snapshot and not head.deltas and now - head.opened >= self._abandon(head):
                    self._pop_head(emit=False)
                    continue
                else:
                    break
            utterance = self._pop_head(emit=True)
            if utterance is not None:
                out.append(utterance)
        return out + self._take_revisions()

    def _take_revisions(self) -> list[FinalUtterance]:
        revisions, self._revisions = self._revisions, []
        return revisions

    def flush(self, now: float) -> list[FinalUtterance]:
        """At call end: everything with text is final (in order), everything without text is dropped."""
        out: list[FinalUtterance] = []
        while self._slots:
            head = self._slots[0]
            if not head.final:
                if head.role == Role.ASSISTANT and not head.text:
                    head.text = "".join(head.deltas).strip()
                    head.interrupted = head.interrupted or bool(head.text)
                head.final = True
            utterance = self._pop_head(emit=True)
            if utterance is not None:
                out.append(utterance)
        return out + self._take_revisions()

    def _abandon(self, slot: _Slot) -> float:
        return self.abandon_s if slot.role == Role.USER else self.assistant_abandon_s

    def _pop_head(self, *, emit: bool) -> FinalUtterance | None:
        slot = self._slots.pop(0)
        self._by_id.pop(slot.item_id, None)
        self._released.add(slot.item_id)
        if not emit or not slot.text:
            return None
        utterance = FinalUtterance(
            item_id=slot.item_id,
            seq=self._next_seq,
            role=slot.role,
            text=slot.text,
            spoken_at=slot.spoken_at,
            interrupted=slot.interrupted,
        )
        self._next_seq += 1
        if slot.role == Role.USER:
            self._published[slot.item_id] = utterance
        return utterance
