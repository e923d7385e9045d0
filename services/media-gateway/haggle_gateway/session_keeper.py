"""The realtime side's connection: the current session, and reopening it once when it is lost mid-call.

While the session is down, sends are dropped (a reopened session starts from the replayed conversation) and the
callee's audio is kept (the most recent `reconnect_buffer_ms`) for the new session.

How a reopened session learns the conversation: the published utterances are replayed as conversation items
(user lines `input_text`, assistant lines `output_text`; `rt.history_item`). Folding them into the instructions
as quoted transcript would put the provider's words in instruction position, which the prompt's data/instruction
split rules out (see prompt.py); items are where the callee's words live anyway. The instructions only gain a
fixed note (prompt.RESUMED_NOTE) that the call resumed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from haggle_contracts import events as ev

from haggle import metrics

from . import realtime_events as rt
from .links import RealtimeSession
from .realtime_client import RealtimeError
from .transcript import FinalUtterance

log = logging.getLogger(__name__)

MAX_REPLAYED_UTTERANCES = 60  # a reopened session gets at most this many earlier lines
TWILIO_FRAME_MS = 20

# Opens a fresh realtime session for this call; the flag asks for the "resumed call" instructions.
Reopen = Callable[[bool], Awaitable[RealtimeSession]]


class ReopenFailed(Exception):
    """The session could not be reopened; the message says why."""


class SessionKeeper:
    def __init__(self, session: RealtimeSession, reopen: Reopen | None, *, max_reopens: int, timeout_s: float,
                 buffer_ms: int) -> None:
        self.session = session
        self.number = 0  # 0, then 1 after a reopen
        self.down = False
        self.reopens = 0
        self._reopen = reopen
        self._max_reopens = max_reopens
        self._timeout_s = timeout_s
        self._history: list[FinalUtterance] = []
        self._backlog: deque[str] = deque(maxlen=max(1, buffer_ms // TWILIO_FRAME_MS))
        self._feed: Callable[[rt.ServerEvent], bool] | None = None

    async def send(self, event: dict[str, Any]) -> None:
        """Send to the model. While the session is down the event is dropped; a failed send marks it down, and
        the pump's next receive reopens it."""
        if self.down:
            return
        try:
            await self.session.send(event)
        except RealtimeError as exc:
            self._send_failed(exc)

    def send_now(self, event: dict[str, Any]) -> None:
        """`send` without awaiting; only after `can_send_now()`."""
        if self.down:
            return
        try:
            self.session.send_now(event)
        except RealtimeError as exc:
            self._send_failed(exc)

    def _send_failed(self, exc: RealtimeError) -> None:
        self.down = True
        log.info("realtime send failed: %s", exc)

    def attach(self, feed: Callable[[rt.ServerEvent], bool] | None) -> None:
        """Offer the model's events to `feed` as they are read, on this session and on any reopened one."""
        self._feed = feed
        self.session.attach(feed)

    def lost(self) -> None:
        """The session is gone (its socket closed); sends are dropped until it is reopened."""
        self.down = True
        self.session.attach(None)

    def recv(self) -> Coroutine[Any, Any, rt.ServerEvent]:
        # The session's own coroutine, not one wrapping it: one coroutine level less on every model event.
        return self.session.recv()

    async def close(self) -> None:
        await self.session.close()

    async def audio_in(self, model_audio: str) -> None:
        if self.down:
            self._backlog.append(model_audio)
            return
        await self.send(rt.input_audio_append(model_audio))

    def can_send_now(self) -> bool:
        """`audio_in_now` can take the callee's audio without waiting: the session is down (the audio is kept) or
        its socket takes a write at once."""
        return self.down or self.session.writable_now

    def audio_in_now(self, model_audio: str) -> None:
        """`audio_in` without awaiting; only after `can_send_now()`."""
        if self.down:
            self._backlog.append(model_audio)
            return
        self.send_now(rt.input_audio_append(model_audio))

    def remember(self, utterance: FinalUtterance) -> None:
        if utterance.revision:
            self._history = [utterance if u.item_id == utterance.item_id else u for u in self._history]
        else:
            self._history.append(utterance)

    def drop_backlog(self) -> None:
        self._backlog.clear()

    @property
    def may_reopen(self) -> bool:
        return self._reopen is not None and self.reopens < self._max_reopens

    def said_anything(self) -> bool:
        return any(u.role == ev.Role.ASSISTANT for u in self._history[-MAX_REPLAYED_UTTERANCES:])

    async def reopen(self, cause: RealtimeError) -> tuple[int, int]:
        """Open a new session and replay the conversation; returns (lines, audio ms) replayed.
        Raises ReopenFailed."""
        assert self._reopen is not None
        self.reopens += 1
        self.session.attach(None)
        await self.session.close()
        history = self._history[-MAX_REPLAYED_UTTERANCES:]
        resumed = any(u.role == ev.Role.ASSISTANT for u in history)
        try:
            client = await asyncio.wait_for(self._reopen(resumed), self._timeout_s)
        except (RealtimeError, OSError, TimeoutError) as exc:
            metrics.REALTIME_ERRORS.labels(kind="reopen_failed").inc()
            raise ReopenFailed(f"realtime session lost ({cause}); reopening failed: {exc}") from exc
        self.session, self.number = client, self.number + 1
        backlog, self._backlog = list(self._backlog), deque(maxlen=self._backlog.maxlen)
        try:
            for utterance in history:
                await client.send(rt.history_item(utterance.role.value, utterance.text))
            for audio in backlog:
                await client.send(rt.input_audio_append(audio))
            if resumed and (history[-1].role == ev.Role.USER or history[-1].interrupted):
                await client.send(rt.response_create())  # it is our turn: answer, or finish the cut-off line
        except RealtimeError as exc:
            metrics.REALTIME_ERRORS.labels(kind="reopen_failed").inc()
            raise ReopenFailed(f"reopened realtime session lost at once: {exc}") from exc
        self.down = False
        client.attach(self._feed)
        return len(history), len(backlog) * TWILIO_FRAME_MS
