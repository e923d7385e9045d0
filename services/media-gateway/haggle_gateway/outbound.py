"""Agent audio on its way to Twilio: buffering into chunks, one mark per chunk, `clear` on a barge-in, and
labelled markers (the goodbye). Playback itself is tracked by `PlaybackTracker` (docs/twilio-media-streams.md,
"Marks" and "Clear").

Sends are serialised with a lock: the Twilio pump (clear on barge-in) and the realtime pump (audio) both write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from haggle import metrics

from . import twilio_media as tm
from .audio import Transcoder
from .links import LinkClosed, TwilioLink
from .playback import PlaybackTracker, Truncation

TWILIO_BYTES_PER_MS = 8  # mu-law 8 kHz
TWILIO_FRAME_MS = 20

_FRAMES_OUT = metrics.AUDIO_FRAMES.labels(direction="out")


class AudioOut:
    def __init__(self, link: TwilioLink, stream_sid: str, transcoder: Transcoder, chunk_ms: int,
                 on_sent: Callable[[str], None]) -> None:
        self.tracker = PlaybackTracker()
        self.media_out = 0
        self.clears: list[float] = []
        self._link = link
        self._stream_sid = stream_sid
        self._transcoder = transcoder
        self._chunk_bytes = chunk_ms * TWILIO_BYTES_PER_MS
        self._lock = asyncio.Lock()
        self._buf = bytearray()
        self._item: str | None = None
        self._ended: set[str] = set()
        self._on_sent = on_sent  # an audio chunk of this item went out

    async def send(self, text: str) -> None:
        async with self._lock:
            try:
                await self._link.send(text)
            except Exception as exc:
                raise LinkClosed(str(exc)) from exc

    @property
    def item(self) -> str | None:
        """The item whose audio is being buffered (not yet all sent)."""
        return self._item

    def playing_items(self) -> list[str]:
        """Items queued at Twilio or still in our buffer."""
        items = self.tracker.playing_items()
        if self._buf and self._item is not None and self._item not in items:
            items.append(self._item)
        return items

    async def audio(self, item_id: str, model_audio: bytes) -> None:
        """Queue model audio (converted to the line's mu-law); full chunks go out."""
        ulaw = self._transcoder.to_twilio(model_audio)
        if self._item is not None and self._item != item_id:
            await self.flush()
        self._item = item_id
        self._buf += ulaw
        if len(self._buf) >= self._chunk_bytes:
            await self.flush()

    async def end_of_item(self, item_id: str) -> None:
        """An item's audio is complete: send the resampler's tail with it (once per item)."""
        if item_id != self._item or item_id in self._ended:
            return
        self._ended.add(item_id)
        self._buf += self._transcoder.end_of_utterance()
        await self.flush()

    async def flush(self) -> None:
        if not self._buf or self._item is None:
            return
        chunk, item_id = bytes(self._buf), self._item
        self._buf.clear()
        mark = self.tracker.audio_sent(item_id, len(chunk) / TWILIO_BYTES_PER_MS)
        await self.send(tm.media_message(self._stream_sid, chunk))
        await self.send(tm.mark_message(self._stream_sid, mark))
        _FRAMES_OUT.inc()
        self.media_out += 1
        self._on_sent(item_id)

    async def raw(self, ulaw: bytes, item_id: str) -> None:
        """Audio we made ourselves (DTMF tones), sent in frame-sized chunks, each tracked like agent audio."""
        await self.flush()
        step = TWILIO_FRAME_MS * TWILIO_BYTES_PER_MS
        for start in range(0, len(ulaw), step):
            chunk = ulaw[start:start + step]
            mark = self.tracker.audio_sent(item_id, len(chunk) / TWILIO_BYTES_PER_MS)
            await self.send(tm.media_message(self._stream_sid, chunk))
            await self.send(tm.mark_message(self._stream_sid, mark))
            _FRAMES_OUT.inc()
            self.media_out += 1
            self._on_sent(item_id)

    async def marker(self, label: str) -> str:
        """After everything buffered: a mark whose echo means it has all played."""
        await self.flush()
        name = self.tracker.marker(label)
        await self.send(tm.mark_message(self._stream_sid, name))
        return name

    async def clear(self, now: float) -> list[Truncation]:
        """Stop the audio at Twilio: forget the buffer, start a new playback generation, send `clear`."""
        cuts = self.tracker.interrupt()
        self._buf.clear()
        self._item = None
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
        self._item = None
        self._buf.clear()
