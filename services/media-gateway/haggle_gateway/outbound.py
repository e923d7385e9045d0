"""Agent audio on its way to Twilio: buffering into chunks, pacing, one mark per chunk, `clear` on a barge-in,
and labelled markers (the goodbye, the end of a key press). Playback itself is tracked by `PlaybackTracker`
(docs/twilio-media-streams.md, "Marks" and "Clear").

Pacing: the model may stream a response several times faster than real time (docs/xai-realtime.md,
"Responses"). Everything sent to Twilio is queued there until played, and a `clear` returns one mark echo per
queued chunk at once; so at most `lead_ms` of audio is kept queued at Twilio and the rest is held here, released
as mark echoes say the line has played what came before. A barge-in then drops what is held without sending it.

Marks: a mark per chunk would be 50 marks a second each way at 20 ms chunks, for nothing the call needs: one mark
per `MARK_EVERY_MS` of audio (and at the end of each item, and wherever the audio stalls: `seal_stalled`, on
every tick) bounds how late a barge-in learns what was heard to that much, and labelled markers are always
their own mark, so the goodbye, key presses and the voicemail message are tracked exactly.

Sends are serialised with a lock: the Twilio pump (echoes release audio; clear on barge-in) and the realtime pump
(audio) both write. The synchronous forms (`audio_now`, `release_now`, for the sockets' read
callbacks) run only while no send holds the lock, and write what is due in one go (a media message and its mark in
one write).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from haggle import metrics

from . import twilio_media as tm
from .audio import Transcoder
from .links import LinkClosed, TwilioLink
from .playback import PlaybackTracker, Truncation

TWILIO_BYTES_PER_MS = 8  # mu-law 8 kHz
TWILIO_FRAME_MS = 20
MARK_EVERY_MS = 100.0  # audio between two marks at most (while the model streams without a pause)

_FRAMES_OUT = metrics.AUDIO_FRAMES.labels(direction="out")


@dataclass(slots=True)
class _Held:
    item_id: str | None  # None: a labelled marker
    audio: bytes = b""
    label: str = ""


class AudioOut:
    def __init__(self, link: TwilioLink, stream_sid: str, transcoder: Transcoder, chunk_ms: int,
                 on_sent: Callable[[str], None], *, lead_ms: float = 1000.0) -> None:
        self.tracker = PlaybackTracker()
        self.media_out = 0
        self.clears: list[float] = []
        self.max_queued_ms = 0.0  # the most audio ever queued at Twilio at once (what a clear could drop)
        self._link = link
        self._stream_sid = stream_sid
        self._transcoder = transcoder
        self._chunk_bytes = chunk_ms * TWILIO_BYTES_PER_MS
        self._lead_ms = lead_ms
        self._lock = asyncio.Lock()
        self._buf = bytearray()
        self._item: str | None = None
        self._ended: set[str] = set()
        self._held: deque[_Held] = deque()
        self._on_sent = on_sent  # an audio chunk of this item went out
        self._unmarked_ms = 0.0  # audio sent since the last mark
        self._chunks = 0  # audio chunks sent (so a tick can tell the stream stalled)
        self._chunks_at_tick = 0

    async def send(self, text: str) -> None:
        # acquire/release rather than `async with`: the context manager's two extra coroutines are measurable on
        # every message to Twilio.
        await self._lock.acquire()
        try:
            await self._link.send(text)
        except Exception as exc:
            raise LinkClosed(str(exc)) from exc
        finally:
            self._lock.release()

    @property
    def item(self) -> str | None:
        """The item whose audio is being buffered (not yet all sent)."""
        return self._item

    @property
    def busy(self) -> bool:
        """Audio is queued at Twilio or held here."""
        return self.tracker.playing or any(h.item_id is not None for h in self._held)

    @property
    def pending_ms(self) -> float:
        """Audio queued at Twilio or held here, in ms: how long until it has all played."""
        held = sum(len(h.audio) for h in self._held) + len(self._buf)
        return self.tracker.outstanding_ms + held / TWILIO_BYTES_PER_MS

    def playing_items(self) -> list[str]:
        """Items queued at Twilio, held here, or still in our buffer."""
        items = self.tracker.playing_items()
        for held in self._held:
            if held.item_id is not None and held.item_id not in items:
                items.append(held.item_id)
        if self._buf and self._item is not None and self._item not in items:
            items.append(self._item)
        return items

    async def audio(self, item_id: str, model_audio: bytes) -> None:
        """Queue model audio (converted to the line's mu-law); full chunks go out."""
        if self._queue_audio(item_id, model_audio):
            await self.release()

    def can_send_now(self) -> bool:
        """`audio_now` may run: no send is waiting on the link, and the link takes a write at once."""
        return not self._lock.locked() and self._link.writable_now

    def audio_now(self, item_id: str, model_audio: bytes) -> None:
        """`audio` without awaiting (from the model socket's read callback); only after `can_send_now()`. The link
        is not waited on: pacing (`lead_ms`) already bounds what is queued at Twilio."""
        if self._queue_audio(item_id, model_audio):
            self.release_now()

    def release_now(self) -> None:
        """`release` without awaiting; only after `can_send_now()`. What is due goes out in one write."""
        if self._held:
            due = self._due()
            if due:
                try:
                    self._link.send_now(*due)
                except Exception as exc:
                    raise LinkClosed(str(exc)) from exc

    def _queue_audio(self, item_id: str, model_audio: bytes) -> bool:
        """Buffer the audio; True when a chunk is held ready to go (then `release` is due)."""
        ulaw = self._transcoder.to_twilio(model_audio)
        if self._item is not None and self._item != item_id:
            self._hold()  # the previous item's tail goes ahead of this one
        elif not self._buf and len(ulaw) == self._chunk_bytes:  # a whole chunk (streaming pcmu): no copying
            self._item = item_id
            self._held.append(_Held(item_id, ulaw))
            return True
        self._item = item_id
        self._buf += ulaw
        if len(self._buf) >= self._chunk_bytes:
            self._hold()
        return bool(self._held)

    async def end_of_item(self, item_id: str) -> None:
        """An item's audio is complete: send the resampler's tail with it (once per item)."""
        if item_id != self._item or item_id in self._ended:
            return
        self._ended.add(item_id)
        self._buf += self._transcoder.end_of_utterance()
        await self.flush()
        await self._seal_if_drained()

    async def flush(self) -> None:
        self._hold()
        await self.release()

    def _hold(self) -> None:
        """The buffered audio becomes a chunk waiting for its turn to be sent."""
        if self._buf and self._item is not None:
            self._held.append(_Held(self._item, bytes(self._buf)))
            self._buf.clear()

    async def raw(self, ulaw: bytes, item_id: str) -> None:
        """Audio we made ourselves (DTMF tones), in frame-sized chunks, queued after everything before it."""
        await self.flush()
        step = TWILIO_FRAME_MS * TWILIO_BYTES_PER_MS
        for start in range(0, len(ulaw), step):
            self._held.append(_Held(item_id, ulaw[start:start + step]))
        await self.release()
        await self._seal_if_drained()

    async def marker(self, label: str) -> None:
        """After everything queued so far: a mark whose echo (an Echo with this label) means it has all played."""
        await self.flush()
        self._held.append(_Held(None, label=label))
        await self.release()

    async def release(self) -> None:
        """Send held audio while less than `lead_ms` is queued at Twilio. Called on every echo and tick."""
        if self._held:
            for text in self._due():
                await self.send(text)

    def _due(self) -> list[str]:
        """Take what `release` sends off the held queue, recorded as sent: the messages, in order."""
        out: list[str] = []
        heldq, tracker = self._held, self.tracker
        while heldq and (heldq[0].item_id is None or tracker.outstanding_ms < self._lead_ms):
            held = heldq.popleft()
            item_id = held.item_id
            if item_id is None:
                self._unmarked_ms = 0.0  # a marker's echo credits the audio before it
                out.append(tm.mark_message(self._stream_sid, tracker.marker(held.label)))
                continue
            ms = len(held.audio) / TWILIO_BYTES_PER_MS
            self._unmarked_ms += ms
            after = heldq[0].item_id if heldq else ""
            # Mark every MARK_EVERY_MS, where the next chunk is another item's, and after an item's last chunk
            # (a marker next needs none: its own echo credits this chunk).
            marked = (self._unmarked_ms >= MARK_EVERY_MS or (after is not None and after != item_id and (
                after or item_id != self._item or item_id in self._ended)))
            mark = tracker.audio_sent(item_id, ms, marked=marked)
            out.append(tm.media_message(self._stream_sid, held.audio))
            if marked:
                self._unmarked_ms = 0.0
                out.append(tm.mark_message(self._stream_sid, mark))
            _FRAMES_OUT.inc()
            self.media_out += 1
            self._chunks += 1
            if tracker.outstanding_ms > self.max_queued_ms:
                self.max_queued_ms = tracker.outstanding_ms
            self._on_sent(item_id)
        return out

    async def seal_stalled(self) -> None:
        """On every tick: audio sent unmarked with nothing sent since the last tick gets its mark now (a response
        that paused, or ended without its end reaching us), so playback of it is still tracked."""
        if self._chunks == self._chunks_at_tick and not self._held:
            await self._seal()
        self._chunks_at_tick = self._chunks

    async def _seal_if_drained(self) -> None:
        if not self._held:
            await self._seal()

    async def _seal(self) -> None:
        name = self.tracker.seal()
        if name is not None:
            self._unmarked_ms = 0.0
            await self.send(tm.mark_message(self._stream_sid, name))

    async def clear(self, now: float) -> list[Truncation]:
        """Stop the audio at Twilio: forget what is held and buffered, start a new playback generation, send
        `clear`."""
        cuts = self.tracker.interrupt()
        cut_items = {cut.item_id for cut in cuts}
        for held in self._held:  # audio of an item that never reached Twilio: nothing of it was heard
            if held.item_id is not None and held.item_id not in cut_items:
                cut_items.add(held.item_id)
                cuts.append(Truncation(item_id=held.item_id, content_index=0,
                                       played_ms=int(self.tracker.played_ms(held.item_id)),
                                       sent_ms=int(self.tracker.sent_ms(held.item_id))))
        self._held.clear()
        self._buf.clear()
        self._item = None
        self._unmarked_ms = 0.0
        self._transcoder.discard_outbound()
        await self.send(tm.clear_message(self._stream_sid))
        self.clears.append(now)
        return cuts

    async def abandon(self) -> None:
        """The session is gone: send the audio already here, then forget the item."""
        if self._item is not None and self._item not in self._ended:
            self._ended.add(self._item)
            self._buf += self._transcoder.end_of_utterance()
            await self.flush()
        await self._seal_if_drained()
        self._item = None
        self._buf.clear()
