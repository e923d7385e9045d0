"""The Twilio side of a bidirectional Media Stream, playing a scripted provider (docs/twilio-media-streams.md).

Why a faithful client: the media gateway's hardest logic (playback tracking with marks, barge-in with `clear`,
turn timing) only shows its bugs against a peer that keeps Twilio's clock. This client connects to the
`<Stream>` url, sends `connected`, `start` and one 20 ms `media` frame per 20 ms of wall clock (paced against
a start time, so no drift), plays outbound audio in real time (8 bytes per ms) to decide when marks come back,
and speaks the persona's provider lines when a person would: after the agent finished talking, or on purpose
while it is still talking. Everything it sees and does is written to a `StreamLog` for tests to assert on.

The harder lines of the real world come from the persona's script: a provider line can be hold
music, a voicemail beep or silence (`Turn.sound`); two provider lines in a row are `Persona.pause_before` apart;
a phone menu (`Turn.menu`) waits for a key decoded from the agent's audio with the gateway's own DTMF decoder,
replays after `menu_timeout_ms` or a wrong key, and hangs up after `menu_max_plays`; after a beep the agent's
audio is recorded (`StreamLog.recording`, `message_ms`) until `record_max_ms`. Agent audio that is neither
silence nor DTMF while a menu or hold music plays is counted in `StreamLog.talked_over_bytes`, and per line in
`ProviderLine.agent_audio_bytes`, so tests can assert nothing was said over them."""

from __future__ import annotations

import asyncio
import audioop
import base64
import binascii
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from haggle_gateway import dtmf
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from haggle_sim import audio
from haggle_sim.personas import Persona, Turn

logger = logging.getLogger(__name__)

OUTBOUND_EVENTS = frozenset({"media", "mark", "clear"})
SILENT_FRAME = audio.silence(audio.FRAME_MS)
_SPEECH_RMS = 300.0  # agent audio louder than this counts as sound (line noise and silence stay far below)
_EDGE_LEVEL = 1000  # a sample above this is part of the sound
_MIN_SPAN = 80  # samples (10 ms)


def line_audio(persona: Persona, turn: Turn, seed: int) -> bytes:
    """The mu-law a provider line plays: speech, hold music, a beep or silence, `persona.turn_ms(turn)` long."""
    ms = persona.turn_ms(turn)
    if turn.sound == "music":
        return audio.music(ms, seed=seed)
    if turn.sound == "beep":
        return audio.beep(ms)
    if turn.sound == "silence":
        return audio.silence(ms)
    return audio.speech_like(ms, seed=seed)


def sound_bytes(data: bytes) -> int:
    """How many bytes of agent audio are sound: 20 ms frames that are neither silence nor a DTMF key (tones on
    a menu are the answer it expects, not talking over it)."""
    return sum(len(frame) for frame in audio.frames(data) if _is_sound(frame))


def _is_sound(frame: bytes) -> bool:
    if audio.rms_ulaw(frame) < _SPEECH_RMS:
        return False
    pcm = memoryview(audioop.ulaw2lin(frame, 2)).cast("h")
    loud = [i for i, x in enumerate(pcm) if abs(x) > _EDGE_LEVEL]
    if len(loud) < 2 or loud[-1] - loud[0] < _MIN_SPAN:
        return False  # a few ms of sound at a frame's edge (a tone's tail) is no speech
    # Classify only the part that sounds: a tone that starts or stops inside the frame is still a tone.
    return dtmf.classify_block([float(x) for x in pcm[loud[0]:loud[-1] + 1]]) is None


@dataclass(frozen=True)
class OutboundMessage:
    """One valid message the server sent to "Twilio", with the loop time it arrived."""

    at: float
    event: str  # "media" | "mark" | "clear"
    payload: bytes | None = None  # decoded mu-law, for media
    name: str | None = None  # for mark


@dataclass
class ProviderLine:
    """When a provider line was spoken on the inbound track (loop times)."""

    turn_index: int  # index into `Persona.turns`
    text: str
    started_at: float
    ended_at: float | None = None
    barge_in: bool = False  # started while agent audio was still playing, on purpose
    cut_off: bool = False  # the stream stopped before the line was finished
    sound: str = "speech"
    agent_audio_bytes: int = 0  # agent audio (not silence, not DTMF) that arrived while this line played


@dataclass
class StreamLog:
    """What happened on one media stream: the record tests read."""

    url: str
    stream_sid: str
    custom_parameters: dict[str, str]
    start_message: dict[str, Any] | None = None
    connected_at: float | None = None
    connect_error: str | None = None
    media_frames_sent: int = 0
    received: list[OutboundMessage] = field(default_factory=list)
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    provider_lines: list[ProviderLine] = field(default_factory=list)
    agent_bytes_received: int = 0
    played_audio: bytearray = field(default_factory=bytearray)
    cleared_bytes: int = 0
    violations: list[str] = field(default_factory=list)
    stop_sent_at: float | None = None
    end_reason: str | None = None
    # Phone menus, hold and voicemail:
    digits_received: list[tuple[float, str]] = field(default_factory=list)  # DTMF decoded from agent audio
    menu_plays: int = 0  # how often a menu was played (a replay after no key or a wrong key counts)
    wrong_digits: str = ""  # keys pressed that the menu did not offer
    talked_over_bytes: int = 0  # agent speech while a menu or hold music played, or between them
    beep_at: float | None = None  # when a voicemail's beep ended (recording starts)
    recording: bytearray = field(default_factory=bytearray)  # agent audio after the beep

    @property
    def played_bytes(self) -> int:
        return len(self.played_audio)

    @property
    def digits(self) -> str:
        return "".join(d for _, d in self.digits_received)

    @property
    def message_ms(self) -> int:
        """How much non-silent audio the voicemail recorded after its beep."""
        speech = sum(1 for chunk in audio.frames(bytes(self.recording)) if audio.rms_ulaw(chunk) >= _SPEECH_RMS)
        return speech * audio.FRAME_MS

    def events(self, name: str) -> list[OutboundMessage]:
        return [m for m in self.received if m.event == name]


class _Playback:
    """Twilio's outbound buffer: audio plays at 8 bytes/ms from its arrival; marks wait for their audio."""

    def __init__(self, log: StreamLog, now: float) -> None:
        self._log = log
        self._buffer = bytearray()
        self._clock = now  # playback position in loop time while audio is buffered
        self._enqueued = 0
        self._consumed = 0  # played + cleared
        self._pending_marks: list[tuple[str, int]] = []
        self.idle_since = now  # exact loop time the buffer last ran dry (or was cleared)

    @property
    def busy(self) -> bool:
        return bool(self._buffer)

    def advance(self, now: float) -> None:
        if not self._buffer:
            self._clock = now
            return
        n = min(len(self._buffer), int((now - self._clock) * audio.SAMPLE_RATE))
        if n <= 0:
            return
        self._log.played_audio += self._buffer[:n]
        del self._buffer[:n]
        self._consumed += n
        self._clock += n / audio.SAMPLE_RATE
        if not self._buffer:
            self.idle_since = self._clock
            self._clock = now

    def enqueue(self, data: bytes, now: float) -> bool:
        """Buffer audio; True when it starts playback from an idle buffer."""
        self.advance(now)
        was_idle = not self._buffer
        if was_idle:
            self._clock = now
        self._buffer += data
        self._enqueued += len(data)
        return was_idle

    def add_mark(self, name: str, now: float) -> bool:
        """Queue a mark behind the buffered audio; True when it is due at once (nothing buffered)."""
        self.advance(now)
        if not self._buffer:
            return True
        self._pending_marks.append((name, self._enqueued))
        return False

    def due_marks(self) -> list[str]:
        due = [name for name, end in self._pending_marks if end <= self._consumed]
        self._pending_marks = [(name, end) for name, end in self._pending_marks if end > self._consumed]
        return due

    def clear(self, now: float) -> list[str]:
        """Drop unplayed audio; every pending mark comes back at once."""
        self.advance(now)
        self._log.cleared_bytes += len(self._buffer)
        self._consumed += len(self._buffer)
        self._buffer.clear()
        self.idle_since = now
        marks = [name for name, _ in self._pending_marks]
        self._pending_marks.clear()
        return marks


class MediaStreamClient:
    """Runs one Media Stream until the call ends; `run()` returns why it ended.

    End reasons: "provider-hangup", "stream-closed" (the server closed the WebSocket),
    "stream-connect-failed", "stream-dropped" (fault injection: `drop_after_s` after connecting, the TCP
    connection is aborted, with no `stop` and no close frame), or whatever reason `stop()` was given (REST
    hang-up, time limit, redirect...).
    """

    def __init__(
        self,
        *,
        log: StreamLog,
        account_sid: str,
        call_sid: str,
        persona: Persona,
        headers: dict[str, str] | None = None,
        reply_gap_ms: int = 300,
        connect_timeout: float = 5.0,
        drop_after_s: float | None = None,
        on_connected: Callable[[float], None] | None = None,
    ) -> None:
        self.log = log
        self._account_sid = account_sid
        self._call_sid = call_sid
        self._persona = persona
        self._headers = headers or {}
        self._reply_gap = reply_gap_ms / 1000
        self._connect_timeout = connect_timeout
        self._drop_after_s = drop_after_s
        self._on_connected = on_connected  # told when the persona's audio starts (answering-machine detection)
        self._frame_s = audio.FRAME_MS / 1000
        self._loop = asyncio.get_running_loop()
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._stop_reason: str | None = None
        self._stopped = asyncio.Event()
        self._playback = _Playback(log, self._loop.time())
        # Silence the callee has listened to since the agent's audio ran out (see `_listen`).
        self._silence_s = 0.0
        self._last_look: float | None = None
        # Provider script state.
        self._next_turn = 0  # index into persona.turns where the search for the next provider line starts
        self._speech: list[bytes] = []
        self._speech_pos = 0
        self._line: ProviderLine | None = None
        self._agent_bytes_since_line = 0
        self._agent_audio_started_at: float | None = None
        self._last_line_end: float | None = None
        # Phone menu, hold and voicemail state.
        # Decoding costs a Goertzel bank per 25 ms of agent audio: only lines with a phone menu listen for keys.
        self._decoder = dtmf.DtmfDecoder() if any(t.menu for t in persona.turns) else None
        self._menu: tuple[int, str] | None = None  # (turn index, keys that lead on) of the menu being answered
        self._menu_digit: str | None = None  # the first key pressed since the menu started
        self._menu_deadline: float | None = None  # replay the menu if no key by then
        self._hold = False  # from the start of hold music to the next spoken line
        self._record_until: float | None = None
        self._hangup = False
        hang = persona.hangup_after_turn
        if hang is not None and not (0 <= hang < len(persona.turns)
                                     and persona.turns[hang].speaker == "provider"):
            logger.warning("persona %s: hangup_after_turn=%s is not a provider turn; ignored",
                           persona.phone, hang)

    def stop(self, reason: str) -> None:
        """End the stream from the call's side (sends `stop`, closes the socket)."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stopped.set()

    async def run(self) -> str:
        try:
            ws = await websockets.connect(
                self.log.url,
                additional_headers=self._headers,
                open_timeout=self._connect_timeout,
                close_timeout=2,
                proxy=None,
                compression=None,
                user_agent_header="Twilio.TmeWs/1.0",
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self.log.connect_error = f"{type(exc).__name__}: {exc}"
            logger.warning("call %s: media stream connect to %s failed: %s",
                           self._call_sid, self.log.url, exc)
            return self._finish("stream-connect-failed")
        async with ws:
            self.log.connected_at = self._loop.time()
            if self._on_connected is not None:
                self._on_connected(self.log.connected_at)
            reason = await self._converse(ws)
            if reason not in ("stream-closed", "stream-dropped"):
                await self._send_stop(ws)
        return self._finish(reason)

    def _finish(self, reason: str) -> str:
        if self._line is not None:
            self._line.ended_at = self._loop.time()
            self._line.cut_off = True
            self._line = None
        self.log.end_reason = reason
        return reason

    async def _converse(self, ws: ClientConnection) -> str:
        sid = self.log.stream_sid
        try:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        except ConnectionClosed:
            return "stream-closed"
        start = {
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "streamSid": sid,
            "start": {
                "accountSid": self._account_sid,
                "streamSid": sid,
                "callSid": self._call_sid,
                "tracks": ["inbound"],
                "customParameters": dict(self.log.custom_parameters),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": audio.SAMPLE_RATE, "channels": 1},
            },
        }
        self.log.start_message = start
        try:
            await ws.send(json.dumps(start))
        except ConnectionClosed:
            return "stream-closed"
        receiver = asyncio.create_task(self._receive(ws), name=f"twilio-media-rx-{self._call_sid}")
        try:
            return await self._pump(ws, receiver)
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)

    async def _pump(self, ws: ClientConnection, receiver: asyncio.Task[None]) -> str:
        """One inbound frame per 20 ms of loop clock, measured from a fixed start (no cumulative drift)."""
        t0 = self._loop.time()
        drop_at = None if self._drop_after_s is None else t0 + self._drop_after_s
        n = 0
        while True:
            delay = t0 + n * self._frame_s - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stopped.is_set():
                return self._stop_reason or "stopped"
            if receiver.done():
                return "stream-closed"
            now = self._loop.time()
            if drop_at is not None and now >= drop_at:
                logger.info("call %s: dropping the media stream (fault injection)", self._call_sid)
                ws.transport.abort()  # the connection dies: no `stop`, no close frame
                return "stream-dropped"
            await self._tick_playback(ws, now)
            self._listen(now)
            self._maybe_start_line(now)
            if self._hangup or (self._record_until is not None and now >= self._record_until):
                return "provider-hangup"
            frame = self._next_frame()
            msg = {
                "event": "media",
                "sequenceNumber": "",
                "streamSid": self.log.stream_sid,
                "media": {"track": "inbound", "chunk": str(n + 1), "timestamp": str(n * audio.FRAME_MS),
                          "payload": base64.b64encode(frame).decode("ascii")},
            }
            try:
                await self._send(ws, msg)
            except ConnectionClosed:
                return "stream-closed"
            self.log.media_frames_sent += 1
            n += 1
            if self._line is not None and self._speech_pos >= len(self._speech):
                if self._end_line(now + self._frame_s):
                    return "provider-hangup"

    # --- provider script -------------------------------------------------------------------------------

    def _listen(self, now: float) -> None:
        """Count the silence the callee hears, once per frame tick. A person hears silence only while listening:
        each tick adds at most two frames' time, so a stall of this process's loop (a loaded test machine) is not
        silence they sat through. Replying after one would talk over agent audio that was already on its way."""
        last, self._last_look = self._last_look, now
        playback = self._playback
        if playback.busy or last is None:
            self._silence_s = 0.0
            return
        step = min(now - last, 2 * self._frame_s)
        if playback.idle_since > last:  # the audio ran out (or was cleared) since the last look
            self._silence_s = min(step, now - playback.idle_since)
        else:
            self._silence_s += step

    def _upcoming(self) -> tuple[int, bool] | None:
        """The next provider turn's index, and whether an agent turn comes before it in the script."""
        turns = self._persona.turns
        agent_first = False
        for i in range(self._next_turn, len(turns)):
            if turns[i].speaker == "provider":
                return i, agent_first
            agent_first = agent_first or not turns[i].silent  # a silent turn (keys, nothing) is no line to await
        return None

    def _maybe_start_line(self, now: float) -> None:
        if self._line is not None:
            return
        if self._menu is not None:
            step = self._menu_step(now)
            if step == "replay":
                self._start_line(self._menu[0], now, barge_in=False)
            if step != "go":
                return
            self._menu = None
        upcoming = self._upcoming()
        if upcoming is None:
            return
        index, after_agent = upcoming
        turn = self._persona.turns[index]
        barge_in = False
        if not after_agent and self._last_line_end is not None:
            if now - self._last_line_end < self._persona.pause_before(turn) / 1000:
                return  # two provider lines in a row: the pause between them
        if after_agent:
            if self._agent_bytes_since_line == 0:
                return  # the agent has not said anything since our last line: stay silent
            finished = not self._playback.busy and self._silence_s >= self._reply_gap
            barge_in = (
                not finished
                and turn.barge_in_after_ms is not None
                and self._agent_audio_started_at is not None
                and now - self._agent_audio_started_at >= turn.barge_in_after_ms / 1000
            )
            if not (finished or barge_in):
                return
        self._start_line(index, now, barge_in=barge_in)

    def _start_line(self, index: int, now: float, *, barge_in: bool) -> None:
        turn = self._persona.turns[index]
        self._speech = list(audio.frames(line_audio(self._persona, turn, index)))
        self._speech_pos = 0
        self._line = ProviderLine(turn_index=index, text=turn.text, started_at=now, barge_in=barge_in,
                                  sound=turn.sound)
        self.log.provider_lines.append(self._line)
        self._next_turn = index + 1
        self._agent_bytes_since_line = 0
        self._agent_audio_started_at = None
        if turn.menu:
            self._menu = (index, turn.menu.upper())
            self._menu_digit = None
            self._menu_deadline = None
            self.log.menu_plays += 1
        if turn.sound == "music":
            self._hold = True
        elif turn.sound == "speech" and not turn.menu:
            self._hold = False
        logger.debug("call %s: provider plays turn %d (%s, barge-in: %s)", self._call_sid, index, turn.sound,
                     barge_in)

    def _menu_step(self, now: float) -> str | None:
        """A menu waiting for a key: "go" (a valid key, its tones played), "replay", or None (keep waiting)."""
        assert self._menu is not None
        if self._menu_digit is not None:
            if self._playback.busy or self._silence_s < self._reply_gap:
                return None  # let the agent's tones finish first
            if self._menu_digit in self._menu[1]:
                return "go"
        elif self._menu_deadline is None or now < self._menu_deadline:
            return None
        if self.log.menu_plays >= self._persona.menu_max_plays:
            logger.info("call %s: menu played %d times without a valid key; hanging up", self._call_sid,
                        self.log.menu_plays)
            self._hangup = True
            return None
        return "replay"

    def _next_frame(self) -> bytes:
        if self._line is not None and self._speech_pos < len(self._speech):
            frame = self._speech[self._speech_pos]
            self._speech_pos += 1
            return frame
        return SILENT_FRAME

    def _end_line(self, at: float) -> bool:
        """Close the current line; True when the persona hangs up after it."""
        assert self._line is not None
        self._line.ended_at = at
        index = self._line.turn_index
        sound = self._line.sound
        self._line = None
        self._last_line_end = at
        if self._menu is not None and self._menu[0] == index:
            self._menu_deadline = at + self._persona.menu_timeout_ms / 1000
        if sound == "beep" and self.log.beep_at is None:
            self.log.beep_at = at  # a voicemail records from here
            self._record_until = at + self._persona.record_max_ms / 1000
        return self._persona.hangup_after_turn == index

    # --- outbound (server -> Twilio) -------------------------------------------------------------------

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                await self._on_message(ws, raw)
        except ConnectionClosed:
            pass
        except Exception:  # a stand-in bug: the stream ends as if closed, but loudly
            logger.exception("call %s: media stream receiver failed", self._call_sid)

    async def _on_message(self, ws: ClientConnection, raw: str | bytes) -> None:
        now = self._loop.time()
        msg = self._validate(raw)
        if msg is None:
            return
        event = msg["event"]
        if event == "media":
            data = msg["_payload"]
            self.log.received.append(OutboundMessage(at=now, event="media", payload=data))
            self.log.agent_bytes_received += len(data)
            self._agent_bytes_since_line += len(data)
            self._hear_agent(data, now)
            if self._playback.enqueue(data, now) and self._agent_audio_started_at is None:
                self._agent_audio_started_at = now
        elif event == "mark":
            name = msg["mark"]["name"]
            self.log.received.append(OutboundMessage(at=now, event="mark", name=name))
            if self._playback.add_mark(name, now):
                await self._echo_marks(ws, [name])
        else:
            self.log.received.append(OutboundMessage(at=now, event="clear"))
            marks = self._playback.clear(now)
            self._agent_bytes_since_line = 0
            self._agent_audio_started_at = None
            await self._echo_marks(ws, marks)

    def _hear_agent(self, data: bytes, now: float) -> None:
        """What the line does with the agent's audio: decode keys, notice talking over a menu or hold, record."""
        for digit in self._decoder.feed(data) if self._decoder is not None else "":
            self.log.digits_received.append((now, digit))
            if self._menu is not None and self._menu_digit is None:
                self._menu_digit = digit
                if digit not in self._menu[1]:
                    self.log.wrong_digits += digit
        if self.log.beep_at is not None:
            self.log.recording += data
        guarded = self._menu is not None or self._hold
        if guarded or self._line is not None:
            sound = sound_bytes(data)
            if guarded:
                self.log.talked_over_bytes += sound
            if self._line is not None:
                self._line.agent_audio_bytes += sound

    def _validate(self, raw: str | bytes) -> dict[str, Any] | None:
        """Strict checks Twilio applies (or silently fails on); a bad message is recorded and dropped."""
        if isinstance(raw, bytes):
            return self._violation(f"binary frame of {len(raw)} bytes (Twilio 31950: must be JSON text)")
        try:
            msg = json.loads(raw)
        except ValueError:
            return self._violation(f"not JSON: {raw[:80]!r}")
        if not isinstance(msg, dict):
            return self._violation(f"not a JSON object: {raw[:80]!r}")
        event = msg.get("event")
        if event not in OUTBOUND_EVENTS:
            return self._violation(f"unknown event {event!r}")
        if msg.get("streamSid") != self.log.stream_sid:
            return self._violation(f"{event}: streamSid {msg.get('streamSid')!r} != {self.log.stream_sid!r}")
        if event == "media":
            payload = msg.get("media", {}).get("payload") if isinstance(msg.get("media"), dict) else None
            if not isinstance(payload, str) or not payload:
                return self._violation("media without a base64 string media.payload")
            try:
                msg["_payload"] = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                return self._violation("media.payload is not valid base64")
        elif event == "mark":
            mark = msg.get("mark")
            if not isinstance(mark, dict) or not isinstance(mark.get("name"), str):
                return self._violation("mark without a string mark.name")
        return msg

    def _violation(self, text: str) -> None:
        self.log.violations.append(text)
        logger.warning("call %s: protocol violation: %s", self._call_sid, text)
        return None

    # --- sending ---------------------------------------------------------------------------------------

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        # The lock keeps sequence numbers in send order when the receiver echoes a mark mid-tick.
        async with self._send_lock:
            msg["sequenceNumber"] = self._next_seq()
            await ws.send(json.dumps(msg))

    async def _tick_playback(self, ws: ClientConnection, now: float) -> None:
        self._playback.advance(now)
        due = self._playback.due_marks()
        if due:
            try:
                await self._echo_marks(ws, due)
            except ConnectionClosed:
                pass

    async def _echo_marks(self, ws: ClientConnection, names: list[str]) -> None:
        for name in names:
            await self._send(ws, {"event": "mark", "sequenceNumber": "", "streamSid": self.log.stream_sid,
                                  "mark": {"name": name}})
            self.log.marks_echoed.append((self._loop.time(), name))

    async def _send_stop(self, ws: ClientConnection) -> None:
        try:
            await self._send(ws, {"event": "stop", "sequenceNumber": "", "streamSid": self.log.stream_sid,
                                  "stop": {"accountSid": self._account_sid, "callSid": self._call_sid}})
            self.log.stop_sent_at = self._loop.time()
        except ConnectionClosed:
            pass
