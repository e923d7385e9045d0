"""A local stand-in for xAI's Grok realtime voice API (OpenAI-Realtime-style events over a WebSocket).

Why it exists: the media gateway's hard parts (greeting timing, barge-in, transcript assembly, tool-driven
hang-up, audio formats) only show up against a server that behaves like Grok in time, not against canned
replies. Like livekit's `tests/fake_realtime.py`, this is a scriptable, hermetic fake, but it speaks the real
wire protocol on a real socket (127.0.0.1, port 0), so the gateway's actual client code is what gets tested.

What it does, modelled on docs/xai-realtime.md:
- checks `Authorization: Bearer <api_key>`; sends `session.created` first (or the older
  `conversation.created`), answers `session.update` with `session.updated` echoing the merged session, and
  sends a `ping` now and then;
- runs an energy VAD on `input_audio_buffer.append` audio in *audio time* (decoded per the session's input
  format): `speech_started` after ~60 ms of speech, `speech_stopped` after the session's
  `turn_detection.silence_duration_ms`, then `committed`, `conversation.item.added`, and the input
  transcription as TWO cumulative `.completed` snapshots (partial, then full) of the persona's next provider
  line; with server VAD it then auto-creates a response;
- a response is the persona's next agent turn: `response.created`, `output_item.added`, audio deltas in the
  session's output format (a speech-like signal, `persona.speech_ms(text)` long, sent a bit faster than real
  time), transcript deltas and a `.done` WITHOUT `transcript` (a real quirk), then the turn's function calls
  and `response.done`. Speech during an interruptible response cancels it (`response.done` status
  cancelled), optionally after a few late deltas (`late_deltas_after_cancel`: the race real servers have);
- `force_message` speaks its text verbatim; `response.create`/`response.cancel` produce Grok's benign errors
  when they do not apply; `conversation.item.truncate` is accepted silently; unknown events get an `error`.
Everything received and sent is recorded with loop times for assertions.

The real service's habits, each behind an option (defaults keep the kinder behaviour):
- `handshake="both"`: `session.created` and then `conversation.created`, as xAI documents the latter as the
  first message of a connection;
- `tool_response_id=False`: function-call events (`output_item.added/done`, `function_call_arguments.*`) carry
  no `response_id`; `tools_before_last_audio=True`: they are sent before the turn's last two audio deltas (a
  goodbye's `end_call` arrives while its audio still streams);
- `pace=5.0`: audio deltas at five times real time;
- `transcript_revisions=True`: an input item gets a `completed` transcript (the turn's `heard_as`, else the line
  without its last word) and, `revision_delay_s` later, a second `completed` for the same item with the line.
Persona scripts drive phone menus, hold, screening and voicemail: an agent turn without text is silent (a
`send_dtmf` call alone, or nothing); after it a `response.create` gets an empty response until the line speaks
again. A user turn that holds only music, a beep or silence (provider turns with that `sound`) is transcribed as
"" and gets no response. Provider lines closer together than the session's VAD silence are one user turn (a
voicemail greeting and its beep). A scripted `send_dtmf` the session's tools do not offer is said aloud instead
("I'll press 1."), as a model without the tool does; `undeclared_tools` records it. A menu that plays again
(a user turn as long as the last menu, unlike the next line) is answered again with the menu's turn
(`menu_replays` counts it), so the two stand-ins stay in step when a key is lost.
The offer policy's move: a `record_quote` output carries `{"action", "offer", "say"}`; a script line containing
`{say}` speaks the latest `say` there (a model following the brief), and a silent turn that only recorded a quote
is followed at once by the next agent turn on the gateway's `response.create`.

Fault knobs: `drop_after_s` (close the socket that long after the handshake) or `drop_after_responses` (close
it right after the N-th `response.done`), both limited to the first `drop_sessions` sessions when set;
`max_sessions` (refuse handshakes beyond that many accepted sessions with HTTP 503); `reject_auth`.
A resumed session (the gateway replays the conversation so far as `message` items: user `input_text`,
assistant `output_text`) moves the persona's script past the replayed lines, so the call continues where
the dropped session left it.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import binascii
import contextlib
import itertools
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .audio import speech_like
from .personas import Persona, PersonaBook, ToolCall, Turn

log = logging.getLogger(__name__)

VAD_FRAME_MS = 10
_SAME_LINE_MS = 150  # two user turns this close in length are the same scripted line
_OPENER = re.compile(r"Hi, is this (.+?)\?")
# The instructions' `opening_line: "<JSON string>"`: a model told to say it verbatim says it, notices and all.
_OPENING_LINE = re.compile(r'^opening_line: ("(?:[^"\\]|\\.)*")$', re.MULTILINE)

GENERIC_PERSONA = Persona(
    business="",
    phone="",
    ms_per_char=20,
    turns=(
        Turn("provider", "Hello?"),
        Turn("agent", "Hi, is this {business}?"),
        Turn("provider", "Yes, how can I help you?"),
        Turn("agent", "I'm looking for an estimate for a repair. What would it cost?"),
        Turn("provider", "About two hundred dollars."),
        Turn("agent", "I understand. Thanks for your time, goodbye!",
             tools=(ToolCall("end_call", {"reason": "no agreement"}),)),
    ),
)
FALLBACK_AGENT_LINE = "Okay, thank you."
FALLBACK_PROVIDER_LINE = "Mm-hmm."

DEFAULT_SESSION: dict[str, Any] = {
    "instructions": "",
    "voice": "Ara",
    "turn_detection": {"type": "server_vad", "threshold": 0.85, "prefix_padding_ms": 333,
                       "silence_duration_ms": 500},
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}},
              "output": {"format": {"type": "audio/pcm", "rate": 24000}}},
    "tools": [],
}


@dataclass
class _Run:
    """One response being spoken."""

    id: str
    item_id: str
    interruptible: bool
    text: str
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    sent_ms: int = 0


class StandinSession:
    """One realtime connection: its config, its script position, and a record of the traffic."""

    def __init__(self, standin: RealtimeStandin, ws: ServerConnection, index: int) -> None:
        self.standin = standin
        self.ws = ws
        self.index = index
        self.loop = asyncio.get_running_loop()
        request = ws.request
        path = request.path if request is not None else ""
        self.path = urlsplit(path).path
        self.query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        self.session: dict[str, Any] = json.loads(json.dumps(DEFAULT_SESSION))
        self.events_received: list[tuple[float, dict[str, Any]]] = []
        self.events_sent: list[tuple[float, dict[str, Any]]] = []
        self.speech_started_at: list[float] = []
        self.speech_stopped_at: list[float] = []
        self.responses: list[dict[str, Any]] = []  # {id, text, created_at, done_at, status}
        self.persona: Persona = GENERIC_PERSONA
        self.business = ""
        self.closed = False
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._agent_turn = 0
        self._provider_turn = 0
        self._active: _Run | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        # VAD state, in audio time.
        self._pcm = b""
        self._audio_ms = 0
        self._speaking = False
        self._speech_run = 0
        self._silence_run = 0
        self._item_id: str | None = None
        self._last_item: str | None = None
        self._responses_done = 0
        self._awaiting_input = False  # a silent turn was taken: nothing to say until the line speaks again
        self._segment_start_ms = 0
        self._menu_heard: tuple[Turn, int] | None = None  # the last menu heard and the agent turn answering it
        self.menu_replays = 0
        self.revisions: list[tuple[str, str, str]] = []  # (item_id, first transcript, revised transcript)
        self.undeclared_tools: list[str] = []  # scripted calls of tools the session did not offer
        self.tool_outputs: dict[str, dict[str, Any]] = {}  # call_id -> function_call_output item
        self.last_say: str | None = None  # the latest `say` a tool output gave (the offer policy's move)
        self.tool_calls: list[dict[str, Any]] = []  # {call_id, name, arguments, response_id}

    # ---------------------------------------------------------------------------------------------- recording

    @property
    def instructions(self) -> str:
        return str(self.session.get("instructions") or "")

    def received(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events_received if e.get("type") == kind]

    def sent(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events_sent if e.get("type") == kind]

    def sent_times(self, kind: str) -> list[float]:
        return [t for t, e in self.events_sent if e.get("type") == kind]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async def until() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout_s)

    def _touch(self) -> None:
        self._changed.set()
        self.standin._changed.set()

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{self.index}_{next(self._ids)}"

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self._new_id("evt"))
        async with self._send_lock:
            if self.closed:
                return
            try:
                await self.ws.send(json.dumps(event))
            except ConnectionClosed:
                self.closed = True
                return
        self.events_sent.append((self.loop.time(), event))
        self._touch()

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "error": {"type": "invalid_request_error", "code": code,
                                                    "message": message}})

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------------------------------------- main loop

    async def serve(self) -> None:
        if self.standin.handshake in ("session.created", "both"):
            await self.send({"type": "session.created", "session": dict(self.session)})
        if self.standin.handshake in ("conversation.created", "both"):
            await self.send({"type": "conversation.created", "conversation": {"id": self._new_id("conv"), "object":
                                                                              "realtime.conversation"}})
        if self.standin.ping_interval_s:
            self._spawn(self._pinger())
        if self.standin.drop_after_s is not None and self.standin.drops(self.index):
            self._spawn(self._dropper(self.standin.drop_after_s))
        try:
            async for raw in self.ws:
                await self._on_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            for task in list(self._tasks):
                task.cancel()
            self._touch()

    async def _pinger(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.standin.ping_interval_s)  # the server's keep-alive cadence
            await self.send({"type": "ping", "timestamp": int(self.loop.time() * 1000)})

    async def _dropper(self, after_s: float) -> None:
        await asyncio.sleep(after_s)  # fault injection: the socket dies mid-call
        log.info("realtime stand-in: dropping session %d", self.index)
        await self.ws.close(1011, "stand-in drop")

    async def _on_frame(self, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except (ValueError, TypeError):
            await self.error("invalid_json", "The event is not valid JSON.")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            await self.error("invalid_event", "Events must be JSON objects with a string 'type'.")
            return
        self.events_received.append((self.loop.time(), event))
        self._touch()
        kind = event["type"]
        handler = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.truncate": self._on_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }.get(kind)
        if handler is None:
            await self.error("unknown_event", f"Unknown event type: {kind[:60]}")
            return
        await handler(event)

    # ---------------------------------------------------------------------------------------------- session

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            await self.error("invalid_session", "session.update needs a 'session' object.")
            return
        for key, value in update.items():
            if key == "audio" and isinstance(value, dict):
                audio = self.session.setdefault("audio", {})
                for direction, conf in value.items():
                    if isinstance(conf, dict):
                        audio.setdefault(direction, {}).update(conf)
            else:
                self.session[key] = value
        if "instructions" in update:
            found = self.standin.personas.by_instructions(self.instructions)
            self.persona = found or self.standin.default_persona
            # The last concrete "Hi, is this X?" (prompts may show a placeholder like <business_name> first).
            names = [n for n in _OPENER.findall(self.instructions) if not any(c in n for c in "<>{}")]
            self.business = names[-1] if names else (found.business if found else "")
        await self.send({"type": "session.updated", "session": json.loads(json.dumps(self.session))})

    def _format(self, direction: str) -> tuple[str, int]:
        fmt = (self.session.get("audio") or {}).get(direction, {}).get("format") or {}
        kind = fmt.get("type", "audio/pcm") if isinstance(fmt, dict) else str(fmt)
        if kind in ("audio/pcmu", "audio/pcma"):
            return kind, 8000
        rate = fmt.get("rate", 24000) if isinstance(fmt, dict) else 24000
        return "audio/pcm", int(rate)

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session.get("turn_detection")
        return td if isinstance(td, dict) and td.get("type") == "server_vad" else None

    # ---------------------------------------------------------------------------------------------- VAD

    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            data = base64.b64decode(event.get("audio") or "", validate=True)
        except (binascii.Error, ValueError):
            await self.error("invalid_audio", "input_audio_buffer.append: audio is not base64.")
            return
        kind, rate = self._format("input")
        if kind == "audio/pcmu":
            pcm = audioop.ulaw2lin(data, 2)
        elif kind == "audio/pcma":
            pcm = audioop.alaw2lin(data, 2)
        else:
            pcm = data
        self._pcm += pcm
        frame = 2 * rate * VAD_FRAME_MS // 1000
        while len(self._pcm) >= frame:
            window, self._pcm = self._pcm[:frame], self._pcm[frame:]
            self._audio_ms += VAD_FRAME_MS
            await self._vad_step(audioop.rms(window, 2))

    async def _vad_step(self, rms: int) -> None:
        td = self._turn_detection()
        if td is None:
            return
        silence_ms = int(td.get("silence_duration_ms", 500))
        if rms >= self.standin.vad_rms_threshold:
            self._speech_run += VAD_FRAME_MS
            self._silence_run = 0
            if not self._speaking and self._speech_run >= self.standin.speech_onset_ms:
                self._speaking = True
                self._item_id = self._new_id("item")
                self.speech_started_at.append(self.loop.time())
                self._segment_start_ms = max(0, self._audio_ms - self._speech_run)
                await self.send({"type": "input_audio_buffer.speech_started",
                                 "audio_start_ms": self._segment_start_ms,
                                 "item_id": self._item_id})
                run = self._active
                if run is not None and run.interruptible:
                    run.cancel.set()  # server VAD auto-cancels the response being spoken
            return
        self._speech_run = 0
        if not self._speaking:
            return
        self._silence_run += VAD_FRAME_MS
        if self._silence_run >= silence_ms:
            self._speaking = False
            self.speech_stopped_at.append(self.loop.time())
            await self.send({"type": "input_audio_buffer.speech_stopped",
                             "audio_end_ms": self._audio_ms - self._silence_run, "item_id": self._item_id})
            await self._commit_user_item(auto_respond=td.get("create_response", True) is not False,
                                         heard_ms=self._audio_ms - self._silence_run - self._segment_start_ms)

    async def _commit_user_item(self, *, auto_respond: bool, heard_ms: int | None = None) -> None:
        item_id = self._item_id or self._new_id("item")
        self._item_id = None
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": self._last_item})
        self._last_item = item_id
        await self.send({"type": "conversation.item.added", "previous_item_id": None,
                         "item": {"id": item_id, "type": "message", "role": "user", "status": "completed",
                                  "content": [{"type": "input_audio", "transcript": None}]}})
        text, heard_as, speech = self._hear_next(heard_ms)
        self._spawn(self._transcribe(item_id, text, heard_as))
        if speech:
            self._awaiting_input = False
        # Only speech gets an answer: music or a beep on its own is no turn for the model to take.
        if auto_respond and self._active is None and speech:
            self._start_turn()

    def _hear_next(self, heard_ms: int | None = None) -> tuple[str, str | None, bool]:
        """The provider line(s) this user turn holds: (transcript, first misheard transcript, any speech).

        Provider lines closer together than the session's end-of-speech silence are one user turn, as for a
        real server VAD (a voicemail greeting and its beep). A phone menu may play again (no key, a wrong key):
        a turn as long as the last menu, and unlike the next line, is that menu again, and the model answers it
        again with the same scripted turn."""
        turns = self.persona.turns
        provider = [i for i, t in enumerate(turns) if t.speaker == "provider"]
        if heard_ms is not None and self._menu_heard is not None:
            menu, answer_turn = self._menu_heard
            upcoming = turns[provider[self._provider_turn]] if self._provider_turn < len(provider) else None
            if (abs(heard_ms - self.persona.turn_ms(menu)) <= _SAME_LINE_MS
                    and (upcoming is None or abs(heard_ms - self.persona.turn_ms(upcoming)) > _SAME_LINE_MS)):
                self._agent_turn = answer_turn
                self.menu_replays += 1
                return menu.text, None, True
        if self._provider_turn >= len(provider):
            return FALLBACK_PROVIDER_LINE, None, True
        td = self._turn_detection() or {}
        silence_ms = int(td.get("silence_duration_ms", 500))
        heard: list[Turn] = []
        while self._provider_turn < len(provider):
            index = provider[self._provider_turn]
            heard.append(turns[index])
            self._provider_turn += 1
            if self._provider_turn >= len(provider):
                break
            following = provider[self._provider_turn]
            between = turns[index + 1:following]
            if any(not t.silent or t.tools for t in between):
                break  # the agent acts before the next line
            if self.persona.pause_before(turns[following]) >= silence_ms:
                break
        spoken = [t for t in heard if t.sound == "speech"]
        if spoken:
            last = spoken[-1]
            self._menu_heard = (last, self._agent_turn) if last.menu else None
        text = " ".join(t.text for t in spoken)
        misheard = [t.heard_as for t in spoken if t.heard_as]
        return text, (" ".join(misheard) if misheard else None), bool(spoken)

    async def _transcribe(self, item_id: str, text: str, heard_as: str | None = None) -> None:
        words = text.split()
        partial = " ".join(words[: max(1, len(words) // 2)])
        with_status = self.standin.transcript_status
        snapshot: dict[str, Any] = {"type": "conversation.item.input_audio_transcription.completed",
                                    "item_id": item_id, "content_index": 0, "transcript": partial}
        if with_status:
            snapshot["status"] = "in_progress"
        await self.send(snapshot)
        await asyncio.sleep(self.standin.transcript_delay_s)  # transcription lags the audio
        revise = self.standin.transcript_revisions and len(words) > 1
        first = (heard_as or " ".join(words[:-1])) if revise else text
        final: dict[str, Any] = dict(snapshot, transcript=first)
        final.pop("event_id", None)
        if with_status:
            final["status"] = "completed"
        await self.send(final)
        if revise:
            # A real transcriber may send a second `completed` for the same item with corrected text.
            await asyncio.sleep(self.standin.revision_delay_s)
            revised: dict[str, Any] = dict(final, transcript=text)
            revised.pop("event_id", None)
            await self.send(revised)
            self.revisions.append((item_id, first, text))

    async def _on_commit(self, event: dict[str, Any]) -> None:
        await self._commit_user_item(auto_respond=False)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._pcm = b""
        await self.send({"type": "input_audio_buffer.cleared"})

    # ---------------------------------------------------------------------------------------------- items

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            await self.error("invalid_item", "conversation.item.create needs an 'item' object.")
            return
        kind = item.get("type")
        if kind == "force_message":
            texts = [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
            text = " ".join(t for t in texts if isinstance(t, str)).strip()
            if not text:
                await self.error("invalid_item", "force_message needs text content.")
                return
            if self._active is not None:
                await self.error("conversation_already_has_active_response",
                                 f"Conversation already has an active response in progress: {self._active.id}")
                return
            self._consume_matching_agent_turn(text)
            self._start_response(text, (), interruptible=item.get("interruptible", True) is not False)
            return
        if kind not in ("message", "function_call_output"):
            await self.error("invalid_item", f"Unsupported item type: {str(kind)[:40]}")
            return
        if kind == "message":
            self._replay(item)
        else:
            self.tool_outputs[str(item.get("call_id"))] = item
            self._note_move(item)
        item_id = item.get("id") or self._new_id("item")
        await self.send({"type": "conversation.item.added", "previous_item_id": None,
                         "item": dict(item, id=item_id)})

    def _replay(self, item: dict[str, Any]) -> None:
        """A replayed history line: advance the script past it (agent lines by text, provider lines in order)."""
        parts = [c.get("text") or c.get("transcript") or "" for c in item.get("content") or [] if isinstance(c, dict)]
        text = " ".join(p for p in parts if isinstance(p, str)).strip()
        if not text:
            return
        if item.get("role") == "assistant":
            self._consume_matching_agent_turn(text)
            return
        turns = self.persona.provider_turns()
        if self._provider_turn < len(turns) and turns[self._provider_turn].text.lower() in text.lower():
            self._provider_turn += 1

    def _note_move(self, item: dict[str, Any]) -> None:
        """A `record_quote` output is the next move: a script line "{say}" voices its `say`, as the brief asks."""
        try:
            output = json.loads(item.get("output") or "")
        except (TypeError, ValueError):
            return
        if isinstance(output, dict) and isinstance(output.get("say"), str):
            self.last_say = output["say"]

    def _consume_matching_agent_turn(self, text: str) -> None:
        turns = self.persona.agent_turns()
        if self._agent_turn < len(turns):
            scripted = self._fill(turns[self._agent_turn].text)
            if scripted.lower() in text.lower():
                self._agent_turn += 1

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        return  # accepted silently, like Grok (no `conversation.item.truncated`)

    # ---------------------------------------------------------------------------------------------- responses

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._active is not None:
            await self.error("conversation_already_has_active_response",
                             f"Conversation already has an active response in progress: {self._active.id}")
            return
        if self._awaiting_input:
            self._start_response("", ())  # a model with nothing to say yet answers with an empty response
            return
        self._start_turn()

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        if self._active is None:
            await self.error("response_cancel_not_active", "Cancellation failed: no active response found")
            return
        self._active.cancel.set()

    def _fill(self, text: str) -> str:
        filled = text.replace("{business}", self.business or self.persona.business or "there")
        filled = filled.replace("{say}", self.last_say or "").strip()
        if _OPENER.fullmatch(filled):
            found = _OPENING_LINE.search(self.instructions)
            if found:  # the opening line as instructed (a recording notice or disclosure after the question)
                with contextlib.suppress(ValueError):
                    line = json.loads(found.group(1))
                    if isinstance(line, str) and line.startswith(filled):
                        return line
        return filled

    def _start_turn(self) -> None:
        turns = self.persona.agent_turns()
        if self._agent_turn < len(turns):
            turn = turns[self._agent_turn]
            self._agent_turn += 1
            text, tools = self._fill(turn.text), turn.tools
            offered = self._offered_tools()
            for tool in tools:
                if tool.name == "send_dtmf" and "send_dtmf" not in offered:
                    # Without the tool a model can only say the key aloud, as public agents stuck in menus do.
                    self.undeclared_tools.append(tool.name)
                    text = (text + " " if text else "") + f"I'll press {tool.arguments.get('digits', '')}."
            tools = tuple(t for t in tools if t.name != "send_dtmf" or "send_dtmf" in offered)
            # A silent turn that only pressed keys waits for what the line says next; one that recorded a quote is
            # followed at once by the next line (the gateway's response.create), which voices the move.
            self._awaiting_input = not text and not any(t.name == "record_quote" for t in tools)
            self._start_response(text, tools)
        else:
            self._start_response(FALLBACK_AGENT_LINE, ())

    def _offered_tools(self) -> set[str]:
        return {str(t.get("name")) for t in self.session.get("tools") or [] if isinstance(t, dict)}

    def _start_response(self, text: str, tools: tuple[ToolCall, ...], *, interruptible: bool = True) -> None:
        run = _Run(id=self._new_id("resp"), item_id=self._new_id("item"), interruptible=interruptible, text=text)
        self._active = run
        run.task = self._spawn(self._speak(run, tools))

    def _output_audio(self, text: str, seed: int) -> tuple[bytes, int]:
        """The utterance's audio in the session's output format, and its bytes per ms.

        The signal is `speech_like(persona.speech_ms(text), seed=<response index>)`, so tests can rebuild it."""
        ms = self.persona.speech_ms(text)
        ulaw = speech_like(ms, seed=seed)
        kind, rate = self._format("output")
        if kind == "audio/pcmu":
            return ulaw, 8
        pcm = audioop.ulaw2lin(ulaw, 2)
        if kind == "audio/pcma":
            return audioop.lin2alaw(pcm, 2), 8
        if rate != 8000:
            pcm, _ = audioop.ratecv(pcm, 2, 1, 8000, rate, None)  # the whole utterance at once: no seams
            size = ms * 2 * rate // 1000  # ratecv comes up a sample or two short: keep the duration exact
            pcm = pcm[:size] + bytes(max(0, size - len(pcm)))
        return pcm, 2 * rate // 1000

    async def _speak(self, run: _Run, tools: tuple[ToolCall, ...]) -> None:
        record = {"id": run.id, "item_id": run.item_id, "text": run.text, "created_at": self.loop.time(),
                  "done_at": None, "status": None, "audio_ms_sent": 0}
        self.responses.append(record)
        seed = len(self.responses) - 1
        status = "completed"
        message_item = {"id": run.item_id, "type": "message", "role": "assistant", "status": "in_progress",
                        "content": []}
        output: list[dict[str, Any]] = []
        try:
            await self.send({"type": "response.created",
                             "response": {"id": run.id, "object": "realtime.response", "status": "in_progress",
                                          "output": []}})
            if not run.text:  # a turn with no speech: only its function calls, if any
                for n, tool in enumerate(tools):
                    output.append(await self._function_call(run, tool, n))
                await self.send({"type": "response.done",
                                 "response": {"id": run.id, "object": "realtime.response", "status": status,
                                              "output": output}})
                self._responses_done += 1
                return
            await self.send({"type": "response.output_item.added", "response_id": run.id, "output_index": 0,
                             "item": message_item})
            await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": message_item})
            await self.send({"type": "response.content_part.added", "response_id": run.id, "item_id": run.item_id,
                             "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}})
            audio, bytes_per_ms = self._output_audio(run.text, seed)
            chunk = max(bytes_per_ms, self.standin.chunk_ms * bytes_per_ms)
            chunks = [audio[i:i + chunk] for i in range(0, len(audio), chunk)]
            words = run.text.split(" ")
            per_chunk = max(1, -(-len(words) // max(1, len(chunks))))
            late = 0
            early_tools: list[dict[str, Any]] = []
            # Real servers may emit a turn's function calls before its audio has finished streaming.
            early_at = max(0, len(chunks) - 2) if self.standin.tools_before_last_audio and tools else -1
            for index, piece in enumerate(chunks):
                if index == early_at and not run.cancel.is_set():
                    for n, tool in enumerate(tools, start=1):
                        early_tools.append(await self._function_call(run, tool, n))
                if run.cancel.is_set():
                    if late >= self.standin.late_deltas_after_cancel:
                        break
                    late += 1
                await self.send({"type": "response.output_audio.delta", "response_id": run.id,
                                 "item_id": run.item_id, "output_index": 0, "content_index": 0,
                                 "delta": base64.b64encode(piece).decode("ascii")})
                run.sent_ms += len(piece) // bytes_per_ms
                record["audio_ms_sent"] = run.sent_ms
                spoken = words[index * per_chunk:(index + 1) * per_chunk]
                if spoken:
                    text = " ".join(spoken) + ("" if (index + 1) * per_chunk >= len(words) else " ")
                    await self.send({"type": "response.output_audio_transcript.delta", "response_id": run.id,
                                     "item_id": run.item_id, "output_index": 0, "content_index": 0, "delta": text})
                if not run.cancel.is_set():
                    try:  # pacing a bit faster than real time, woken early by a cancel
                        await asyncio.wait_for(run.cancel.wait(),
                                               self.standin.chunk_ms / 1000.0 / self.standin.pace)
                    except TimeoutError:
                        pass
            if run.cancel.is_set():
                status = "cancelled"
            output = [dict(message_item, status="completed" if status == "completed" else "incomplete")]
            if self.standin.done_includes_transcript:
                output[0]["content"] = [{"type": "output_audio", "transcript": run.text}]
            if status == "completed":
                await self.send({"type": "response.output_audio.done", "response_id": run.id,
                                 "item_id": run.item_id, "output_index": 0, "content_index": 0})
                await self.send({"type": "response.output_audio_transcript.done", "response_id": run.id,
                                 "item_id": run.item_id, "output_index": 0, "content_index": 0})
                await self.send({"type": "response.output_item.done", "response_id": run.id, "output_index": 0,
                                 "item": output[0]})
                if early_tools:
                    output.extend(early_tools)
                else:
                    for n, tool in enumerate(tools, start=1):
                        output.append(await self._function_call(run, tool, n))
            await self.send({"type": "response.done",
                             "response": {"id": run.id, "object": "realtime.response", "status": status,
                                          "output": output}})
            self._responses_done += 1
            if self._responses_done == self.standin.drop_after_responses and self.standin.drops(self.index):
                log.info("realtime stand-in: dropping session %d after response %d", self.index,
                         self._responses_done)
                await self.ws.close(1011, "stand-in drop")
        finally:
            record["done_at"] = self.loop.time()
            record["status"] = status
            if self._active is run:
                self._active = None
            self._touch()

    async def _function_call(self, run: _Run, tool: ToolCall, index: int) -> dict[str, Any]:
        call_id = self._new_id("call")
        item = {"id": self._new_id("item"), "type": "function_call", "status": "in_progress", "call_id": call_id,
                "name": tool.name, "arguments": ""}
        arguments = json.dumps(tool.arguments)
        # `tool_response_id=False`: the function-call events carry no `response_id`, as xAI may send them.
        rid = {"response_id": run.id} if self.standin.tool_response_id else {}
        self.tool_calls.append({"call_id": call_id, "name": tool.name, "arguments": dict(tool.arguments),
                                "response_id": run.id})
        await self.send({"type": "response.output_item.added", **rid, "output_index": index, "item": item})
        await self.send({"type": "response.function_call_arguments.delta", **rid, "item_id": item["id"],
                         "output_index": index, "call_id": call_id, "delta": arguments})
        await self.send({"type": "response.function_call_arguments.done", **rid, "item_id": item["id"],
                         "output_index": index, "call_id": call_id, "name": tool.name, "arguments": arguments})
        done = dict(item, status="completed", arguments=arguments)
        await self.send({"type": "response.output_item.done", **rid, "output_index": index, "item": done})
        return done


class RealtimeStandin:
    """`async with RealtimeStandin(personas) as standin:` serves on `standin.url` until the block exits."""

    def __init__(
        self,
        personas: PersonaBook | None = None,
        *,
        api_key: str = "test-xai-key",
        handshake: str = "session.created",
        ping_interval_s: float | None = 1.0,
        vad_rms_threshold: float = 500.0,
        speech_onset_ms: int = 60,
        chunk_ms: int = 100,
        pace: float = 1.5,
        transcript_status: bool = True,
        transcript_delay_s: float = 0.15,
        late_deltas_after_cancel: int = 0,
        done_includes_transcript: bool = False,
        tool_response_id: bool = True,
        tools_before_last_audio: bool = False,
        transcript_revisions: bool = False,
        revision_delay_s: float = 0.3,
        default_persona: Persona | None = None,
        drop_after_s: float | None = None,
        drop_after_responses: int | None = None,
        drop_sessions: int | None = None,
        max_sessions: int | None = None,
        reject_auth: bool = False,
    ) -> None:
        if handshake not in ("session.created", "conversation.created", "both"):
            raise ValueError("handshake must be 'session.created', 'conversation.created' or 'both'")
        self.personas = personas or PersonaBook()
        self.api_key = api_key
        self.handshake = handshake
        self.ping_interval_s = ping_interval_s
        self.vad_rms_threshold = vad_rms_threshold
        self.speech_onset_ms = speech_onset_ms
        self.chunk_ms = chunk_ms
        self.pace = pace
        self.transcript_status = transcript_status
        self.transcript_delay_s = transcript_delay_s
        self.late_deltas_after_cancel = late_deltas_after_cancel
        self.done_includes_transcript = done_includes_transcript
        self.tool_response_id = tool_response_id
        self.tools_before_last_audio = tools_before_last_audio
        self.transcript_revisions = transcript_revisions
        self.revision_delay_s = revision_delay_s
        self.default_persona = default_persona or GENERIC_PERSONA
        self.drop_after_s = drop_after_s
        self.drop_after_responses = drop_after_responses
        self.drop_sessions = drop_sessions
        self.max_sessions = max_sessions
        self.reject_auth = reject_auth
        self.connections = 0  # handshake attempts, including refused ones
        self.refused = 0
        self.accepted = 0
        self.sessions: list[StandinSession] = []
        self._server: Server | None = None
        self._changed = asyncio.Event()
        self.url = ""

    async def __aenter__(self) -> RealtimeStandin:
        self._server = await serve(self._handler, "127.0.0.1", 0, process_request=self._process_request,
                                   compression=None, max_size=2 * 1024 * 1024)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connections += 1
        self._changed.set()
        if urlsplit(request.path).path != "/v1/realtime":
            self.refused += 1
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        auth = request.headers.get("Authorization", "")
        if self.reject_auth or auth != f"Bearer {self.api_key}":
            self.refused += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid api key\n")
        if self.max_sessions is not None and self.accepted >= self.max_sessions:
            self.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "no capacity\n")
        self.accepted += 1
        return None

    def drops(self, index: int) -> bool:
        """Whether the drop knobs apply to session `index` (all sessions unless `drop_sessions` limits them)."""
        return self.drop_sessions is None or index < self.drop_sessions

    async def _handler(self, ws: ServerConnection) -> None:
        session = StandinSession(self, ws, len(self.sessions))
        self.sessions.append(session)
        self._changed.set()
        await session.serve()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> None:
        async def until() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout_s)

    async def wait_for_session(self, index: int = 0, timeout_s: float = 5.0) -> StandinSession:
        await self.wait_for(lambda: len(self.sessions) > index, timeout_s)
        return self.sessions[index]
