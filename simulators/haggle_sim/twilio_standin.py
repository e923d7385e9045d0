"""Haggle's Twilio stand-in: the REST Calls API on a real loopback port, and every created call simulated.

Why: tests and `make demo` need Twilio without the network. `TwilioStandin` serves the REST API the official
SDK talks to (twilio_rest_standin.py) and plays each call from its persona (`CallRun` below): ringing, answer
or not, signed status callbacks, answering-machine detection, TwiML fetched or inline, then the
`<Connect><Stream>` media stream (twilio_media_client.py) until the agent, the provider or the time limit ends
it.

Answering-machine detection follows Twilio's documented rules (`amd_verdict`, docs/twilio-amd.md), so a person
with a long greeting gets a machine verdict as on a real line. Like Twilio, it streams only to wss:// urls; a
ws:// url is refused unless `allow_insecure_streams` (default: ALLOW_INSECURE_PUBLIC_URL=1) says the setup is
local.

    async with TwilioStandin(personas, account_sid, auth_token) as twilio:
        client = Client(account_sid, auth_token); client.api.base_url = twilio.base_url
        ...
        call = await twilio.wait_for_call_end(sid, timeout=10)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import urljoin, urlsplit

from haggle_sim.http_server import ServedApp, serve_app
from haggle_sim.personas import Persona, PersonaBook, Turn
from haggle_sim.twilio_media_client import MediaStreamClient, StreamLog
from haggle_sim.twilio_rest_standin import (
    API_VERSION,
    FINAL_STATUSES,
    AccountStats,
    CallsApi,
    SimCall,
    SimDial,
    SimRecording,
    TwimlSource,
    WebhookSender,
    new_sid,
    rfc2822,
)

logger = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT_S = 14400  # Twilio's default TimeLimit: 4 hours
VOICEMAIL_GREETING = "Hi, you've reached {business}. Please leave a message after the tone."


class CallFailed(Exception):
    """The call cannot go on (bad TwiML, TwiML webhook error...): it ends with status `failed`."""


@dataclass(frozen=True)
class SimOptions:
    reply_gap_ms: int = 300  # the provider answers this long after it heard the agent's audio run out
    unknown_ring_ms: int = 200  # ringing time of numbers no persona owns (then no-answer)
    webhook_timeout: float = 10.0
    sign_media_stream: bool = True  # send x-twilio-signature (over the stream url, no params) on the upgrade
    hangup_wait: float = 10.0  # bound on how long a REST hang-up waits for the call to end
    # Fault injection: the media stream's connection dies this long after it opened, while the phone call
    # stays up (until a REST hang-up or the time limit), as when the path between Twilio and the gateway breaks.
    drop_stream_after_s: float | None = None
    # Status callbacks as a loaded Twilio can deliver them: `ringing` held back until after the next one
    # (after `in-progress`, or after the final status), and the final status sent twice.
    disorder_status_callbacks: bool = False
    bridge_s: float = 1.0  # how long a <Dial>led party that answers stays bridged before hanging up
    # Twilio streams only to wss://. A plain ws:// url (what an http:// public base url gives) is refused like
    # Twilio does: the call is answered, no stream opens, <Connect> ends. Loopback test setups allow it.
    allow_insecure_streams: bool = False


def recording_url(rest_base: str, account_sid: str, recording_sid: str) -> str:
    """Twilio's RecordingUrl: the media without an extension (a client appends .wav or .mp3)."""
    return f"{rest_base}/{API_VERSION}/Accounts/{account_sid}/Recordings/{recording_sid}"


class CallRun:
    """The life of one simulated call, from `initiated` to the final status callback."""

    def __init__(self, call: SimCall, options: SimOptions, webhooks: WebhookSender,
                 on_final: Callable[[SimCall], None], on_ended: Callable[[SimCall], Awaitable[None]],
                 rest_base: Callable[[], str] = lambda: "", personas: PersonaBook | None = None) -> None:
        self.call = call
        self._rest_base = rest_base
        self._api_personas = personas  # who answers a <Dial>
        self._options = options
        self._webhooks = webhooks
        self._on_final = on_final
        self._on_ended = on_ended
        self._loop = asyncio.get_running_loop()
        self._events = {e.lower() for v in call.params.get("StatusCallbackEvent", [])
                        for e in re.split(r"[\s,]+", v) if e}
        self._cb_seq = 0
        self._cb_tail: asyncio.Task[None] | None = None
        self._cb_held: tuple[str, str, dict[str, str]] | None = None  # a callback delivered late (disorder)
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()  # a hang-up or redirect request arrived
        # The persona's audio plays from when its media stream connects: asynchronous answering-machine detection
        # listens to that audio, so its clock starts there, however late the stream came up.
        self._audio_began = asyncio.Event()
        self._audio_began_at: float | None = None
        self.hangup_reason: str | None = None
        self.redirect: TwimlSource | None = None
        self.finalised = asyncio.Event()  # final status set (its callback may still be in flight)

    def request_hangup(self, reason: str) -> None:
        self.hangup_reason = self.hangup_reason or reason
        self._wake.set()

    def request_redirect(self, source: TwimlSource) -> None:
        self.redirect = source
        self._wake.set()

    async def run(self) -> None:
        c = self.call
        try:
            status, reason = await self._dial()
        except CallFailed as exc:
            status, reason = "failed", str(exc)
        except asyncio.CancelledError:
            self._set_final("completed" if c.answered_at is not None else "canceled", "standin-shutdown")
            c.ended.set()
            raise
        except Exception as exc:  # a simulator bug must still end the call visibly
            logger.exception("call %s: simulation error", c.sid)
            status, reason = "failed", f"simulator error: {type(exc).__name__}: {exc}"
        self._set_final(status, reason)
        self._status("completed", status)
        if self._cb_tail is not None:
            await asyncio.gather(self._cb_tail, return_exceptions=True)
        await self._finish_recordings()
        c.ended.set()
        await self._on_ended(c)

    def _set_final(self, status: str, reason: str) -> None:
        c = self.call
        if self.finalised.is_set():
            return
        for task in self._side_tasks:
            task.cancel()
        c.ended_at = self._loop.time()
        c.end_time = datetime.now(UTC)
        c.duration = round(c.ended_at - c.answered_at) if c.answered_at is not None else 0
        c.end_reason = reason
        if status == "failed":
            c.failure_reason = reason
        c.set_status(status)
        self._on_final(c)
        self.finalised.set()
        logger.info("call %s to %s ended: %s (%s)", c.sid, c.to, status, reason)

    async def _dial(self) -> tuple[str, str]:
        c = self.call
        if c.direction == "inbound":  # the caller is already on the line: Twilio asks the voice URL at once
            c.start_time = datetime.now(UTC)
            c.answered_at = self._loop.time()
            c.set_status("in-progress")
            return await self._execute()
        answer = c.persona.answer if c.persona else "no-answer"
        ring_s = (c.persona.ring_ms if c.persona else self._options.unknown_ring_ms) / 1000
        timeout_s = _int_param(c, "Timeout", 60, 1, 600)
        c.start_time = datetime.now(UTC)  # Twilio's start_time: when the call was dialed
        self._status("initiated", "initiated")
        if answer == "failed":
            return "failed", "the carrier could not connect the call (persona answer=failed)"
        if answer == "busy":
            if await self._hung_up_within(min(ring_s, timeout_s)):
                return "canceled", self.hangup_reason or "canceled"
            return "busy", "callee busy"
        c.set_status("ringing")
        self._status("ringing", "ringing")
        if answer == "no-answer" or ring_s > timeout_s:
            if await self._hung_up_within(min(ring_s, timeout_s)):
                return "canceled", self.hangup_reason or "canceled"
            return "no-answer", "nobody picked up"
        if await self._hung_up_within(ring_s):
            return "canceled", self.hangup_reason or "canceled"
        c.answered_at = self._loop.time()
        c.set_status("in-progress")
        self._status("answered", "in-progress")
        if (c.param("Record") or "").lower() == "true":
            self._start_recording(c.param("RecordingChannels") or "mono", c.param("RecordingStatusCallback"),
                                  c.param("RecordingStatusCallbackMethod"), "OutboundAPI")
        await self._machine_detection()
        return await self._execute()

    async def _hung_up_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True if a hang-up request cut the wait short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))
        return self.hangup_reason is not None

    # --- answering machine detection ----------------------------------------------------------------

    async def _machine_detection(self) -> None:
        c = self.call
        mode = c.param("MachineDetection")
        if mode not in ("Enable", "DetectMessageEnd") or c.persona is None:
            return
        timeout_s = _int_param(c, "MachineDetectionTimeout", 30, 3, 59)
        answered_by, detect_ms = amd_verdict(_stream_persona(c.persona), mode,
                                             speech_threshold_ms=_int_param(c, "MachineDetectionSpeechThreshold",
                                                                            2400, 1000, 6000),
                                             speech_end_ms=_int_param(c, "MachineDetectionSpeechEndThreshold",
                                                                      1200, 500, 5000),
                                             timeout_ms=1000 * timeout_s)
        if (c.param("AsyncAmd") or "").lower() == "true":
            task = asyncio.create_task(self._async_amd(answered_by, detect_ms, timeout_s))
            self._side_tasks.add(task)
            task.add_done_callback(self._side_tasks.discard)
        elif not await self._hung_up_within(detect_ms / 1000):
            c.answered_by, c.machine_detection_ms = answered_by, detect_ms

    async def _async_amd(self, answered_by: str, detect_ms: int, timeout_s: int) -> None:
        c = self.call
        began = self._loop.time()
        # Detection hears the greeting as the stream plays it: timed from the stream's start (from here if no stream
        # comes up within the detection timeout). Timed from the answer instead, a stream that came up late (a
        # loaded gateway) would get "machine_end_beep" while its beep was still to come.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._audio_began.wait(), timeout_s)
        start = self._audio_began_at if self._audio_began_at is not None else began
        await asyncio.sleep(max(0.0, start + detect_ms / 1000 - self._loop.time()))  # simulated detection time
        c.answered_by, c.machine_detection_ms = answered_by, detect_ms
        url = c.param("AsyncAmdStatusCallback")
        if not url:
            c.notes.append("AsyncAmd without AsyncAmdStatusCallback (Twilio warning 21262)")
            return
        params = {"AccountSid": c.account_sid, "CallSid": c.sid, "AnsweredBy": answered_by,
                  "MachineDetectionDuration": str(detect_ms)}
        method = c.param("AsyncAmdStatusCallbackMethod") or "POST"
        c.amd_callbacks.append(await self._webhooks.send("amd", url, method, params))

    # --- TwiML ----------------------------------------------------------------------------------------

    async def _execute(self) -> tuple[str, str]:
        c = self.call
        url = c.param("Url")
        source: TwimlSource | None = (
            ("url", url, c.param("Method") or "POST") if url else ("twiml", c.param("Twiml") or "", ""))
        while source is not None:
            if self.hangup_reason:
                return "completed", self.hangup_reason
            root, base_url = await self._load(source)
            outcome = await self._run_verbs(root, base_url)
            if outcome != "redirect":
                return "completed", outcome
            source, self.redirect = self.redirect, None
            self._wake.clear()
        return "completed", "twiml-ended"

    async def _load(self, source: TwimlSource) -> tuple[ET.Element, str | None]:
        c = self.call
        kind, value, method = source
        base_url: str | None = None
        text = value
        if kind == "url":
            base_url = value
            params = {"AccountSid": c.account_sid, "ApiVersion": API_VERSION, "CallSid": c.sid,
                      "CallStatus": "in-progress", "Called": c.to, "Caller": c.from_,
                      "Direction": c.direction, "From": c.from_, "To": c.to}
            if c.answered_by is not None:  # synchronous AMD reports its verdict on the TwiML request
                params["AnsweredBy"] = c.answered_by
                params["MachineDetectionDuration"] = str(c.machine_detection_ms)
            record = await self._webhooks.send("twiml", value, method, params)
            c.twiml_requests.append(record)
            if record.status_code is None:
                raise CallFailed(f"TwiML webhook {value} unreachable: {record.error} (Twilio 11200)")
            if record.status_code != 200:
                raise CallFailed(f"TwiML webhook {value} answered HTTP {record.status_code} (Twilio 11200)")
            text = record.body
        c.twiml_documents.append(text)
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise CallFailed(f"TwiML does not parse: {exc} (Twilio 12100)") from exc
        if root.tag != "Response":
            raise CallFailed(f"TwiML root is <{root.tag}>, not <Response> (Twilio 12100)")
        return root, base_url

    async def _run_verbs(self, root: ET.Element, base_url: str | None) -> str:
        """Run the document's verbs; returns the end reason, or "redirect" when new TwiML replaces it."""
        last = "twiml-ended"
        for verb in root:
            if self.redirect is not None:
                return "redirect"
            if self.hangup_reason:
                return self.hangup_reason
            if verb.tag == "Hangup":
                return "twiml-hangup"
            if verb.tag == "Say":  # the words are kept for tests; their speaking time is not simulated
                self.call.said.append((verb.text or "").strip())
                continue
            if verb.tag == "Dial":
                outcome = await self._dial_verb(verb, base_url)
                if outcome is not None:
                    return outcome
                continue
            if verb.tag == "Pause":  # wait `length` seconds (Twilio's default 1), or until hung up
                if await self._hung_up_within(float(verb.get("length") or 1)):
                    return self.hangup_reason or "hangup"
                continue
            recording = verb.find("Recording") if verb.tag == "Start" else None
            if recording is not None:
                callback = recording.get("recordingStatusCallback")
                self._start_recording(recording.get("channels") or "mono",
                                      urljoin(base_url, callback) if callback and base_url else callback,
                                      recording.get("recordingStatusCallbackMethod"), "StartCallRecordingTwiML")
                continue
            stream = verb.find("Stream") if verb.tag == "Connect" else None
            if stream is None:
                self.call.notes.append(f"TwiML <{verb.tag}> is not simulated; skipped")
                continue
            url, parameters = _parse_stream(stream, base_url)
            last = await self._stream(url, parameters)
            if last == "stream-dropped":
                return await self._hold()
            if last not in ("stream-closed", "stream-connect-failed"):
                return last  # hang-up, time limit, provider hang-up or redirect
            # The server closed the socket (or it never opened): <Connect> ends and the next verb runs.
        return last

    # --- <Dial>: forwarding and transfers (docs/twilio-transfer.md) ---------------------------------

    async def _dial_verb(self, verb: ET.Element, base_url: str | None) -> str | None:
        """Ring the number; a persona owning it answers (unless its `answer` says otherwise) after its ring time,
        hears the `<Number url>` whisper, and stays bridged for `SimOptions.bridge_s`. Then the `action` URL is
        requested with DialCallStatus and its TwiML replaces the document; without `action` the next verb runs.
        Returns the end reason when the call ends here, or None to go on."""
        c = self.call
        number_el = verb.find("Number")
        number = ((number_el.text if number_el is not None else verb.text) or "").strip()
        c.dialed.append(number)
        dial = SimDial(number=number, sid=new_sid("CA"))
        c.dials.append(dial)
        timeout_s = float(verb.get("timeout") or 30)
        callee = self._api_personas.by_phone(number) if self._api_personas is not None else None
        answers = callee is not None and callee.answer not in ("no-answer", "busy", "failed", "invalid-number")
        ring_s = (callee.ring_ms / 1000) if callee is not None else timeout_s
        if callee is not None and callee.answer == "busy":
            dial.status = "busy"
        elif not answers or ring_s > timeout_s:
            if await self._hung_up_within(timeout_s):
                return self.hangup_reason or "hangup"
            dial.status = "no-answer"
        else:
            if await self._hung_up_within(ring_s):
                return self.hangup_reason or "hangup"
            whisper_url = number_el.get("url") if number_el is not None else None
            if whisper_url:
                url = urljoin(base_url, whisper_url) if base_url else whisper_url
                params = {"AccountSid": c.account_sid, "CallSid": dial.sid, "ParentCallSid": c.sid,
                          "CallStatus": "in-progress", "Direction": "outbound-dial", "From": c.from_, "To": number}
                record = await self._webhooks.send("whisper", url, number_el.get("method") or "POST", params)
                dial.whisper_requests.append(record)
                if record.status_code == 200:
                    with contextlib.suppress(ET.ParseError):
                        dial.whisper = [(say.text or "").strip() for say in ET.fromstring(record.body).iter("Say")]
            started = self._loop.time()
            hung_up = await self._hung_up_within(self._options.bridge_s)
            dial.duration = round(self._loop.time() - started)
            dial.status = "completed"
            if hung_up:
                return self.hangup_reason or "hangup"
        action = verb.get("action")
        if not action:
            return None
        url = urljoin(base_url, action) if base_url else action
        params = {"AccountSid": c.account_sid, "CallSid": c.sid, "DialCallSid": dial.sid,
                  "DialCallStatus": dial.status, "DialCallDuration": str(dial.duration),
                  "DialBridged": "true" if dial.status == "completed" else "false"}
        record = await self._webhooks.send("dial-action", url, verb.get("method") or "POST", params)
        dial.action_requests.append(record)
        if record.status_code != 200:
            raise CallFailed(f"<Dial action> {url} answered {record.status_code} (Twilio 11200)")
        self.redirect = ("twiml", record.body, "")
        return "redirect"

    # --- recordings (docs/twilio-recording.md) ------------------------------------------------------

    def _start_recording(self, channels: str, callback: str | None, method: str | None, source: str) -> None:
        c = self.call
        c.recordings.append(SimRecording(sid=new_sid("RE"), channels=2 if channels.lower() == "dual" else 1,
                                         callback=callback, callback_method=(method or "POST").upper(),
                                         source=source, started_at=self._loop.time()))

    async def _finish_recordings(self) -> None:
        """Twilio sends the recording status callback once the recording file is ready, after the call ended."""
        c = self.call
        for rec in c.recordings:
            if rec.status != "in-progress":
                continue
            ended = c.ended_at if c.ended_at is not None else self._loop.time()
            rec.duration = max(0, round(ended - rec.started_at))
            rec.status = "completed" if rec.duration > 0 else "absent"
            if not rec.callback:
                continue
            params = {"AccountSid": c.account_sid, "CallSid": c.sid, "RecordingSid": rec.sid,
                      "RecordingUrl": recording_url(self._rest_base(), c.account_sid, rec.sid),
                      "RecordingStatus": rec.status, "RecordingDuration": str(rec.duration),
                      "RecordingChannels": str(rec.channels), "RecordingSource": rec.source,
                      "RecordingStartTime": rfc2822(c.start_time or datetime.now(UTC)) or "",
                      "ErrorCode": "0"}
            rec.callbacks.append(await self._webhooks.send("recording", rec.callback, rec.callback_method, params))

    async def _hold(self) -> str:
        """The call stays up without a media stream until it is hung up or reaches its time limit."""
        c = self.call
        assert c.answered_at is not None
        limit_s = _int_param(c, "TimeLimit", DEFAULT_TIME_LIMIT_S, 1, DEFAULT_TIME_LIMIT_S)
        if await self._hung_up_within(limit_s - (self._loop.time() - c.answered_at)):
            return self.hangup_reason or "hangup"
        return "redirect" if self.redirect is not None else "time-limit"

    def _stream_connected(self, at: float) -> None:
        if self._audio_began_at is None:  # detection runs once per call, on its first stream's audio
            self._audio_began_at = at
            self._audio_began.set()

    async def _stream(self, url: str, parameters: dict[str, str]) -> str:
        c = self.call
        assert c.persona is not None and c.answered_at is not None
        log = StreamLog(url=url, stream_sid=new_sid("MZ"), custom_parameters=parameters)
        c.streams.append(log)
        if urlsplit(url).scheme == "ws" and not self._options.allow_insecure_streams:
            log.connect_error = f"<Stream url={url!r}>: Twilio streams only to wss:// (error 31920)"
            log.end_reason = "stream-connect-failed"
            c.notes.append(log.connect_error)
            logger.warning("call %s: %s", c.sid, log.connect_error)
            return "stream-connect-failed"
        headers = ({"X-Twilio-Signature": self._webhooks.validator.compute_signature(url, {})}
                   if self._options.sign_media_stream else {})
        client = MediaStreamClient(log=log, account_sid=c.account_sid, call_sid=c.sid,
                                   persona=_stream_persona(c.persona), headers=headers,
                                   reply_gap_ms=self._options.reply_gap_ms,
                                   drop_after_s=self._options.drop_stream_after_s,
                                   on_connected=self._stream_connected)
        task = asyncio.create_task(client.run(), name=f"twilio-stream-{c.sid}")
        waker = asyncio.create_task(self._wake.wait())
        limit_s = _int_param(c, "TimeLimit", DEFAULT_TIME_LIMIT_S, 1, DEFAULT_TIME_LIMIT_S)
        remaining = limit_s - (self._loop.time() - c.answered_at)
        try:
            done, _ = await asyncio.wait({task, waker}, timeout=max(0.0, remaining),
                                         return_when=asyncio.FIRST_COMPLETED)
            if task not in done:
                client.stop(self.hangup_reason or ("redirect" if self.redirect else "time-limit"))
            return await task
        finally:
            waker.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # --- status callbacks -----------------------------------------------------------------------------

    def _status(self, event: str, call_status: str) -> None:
        """Queue a status callback; they go out in order without holding up the call."""
        c = self.call
        url = c.param("StatusCallback")
        # Twilio sends only the requested events, and the final status always.
        if not url or (event != "completed" and event not in self._events):
            return
        params = {"AccountSid": c.account_sid, "ApiVersion": API_VERSION, "CallSid": c.sid,
                  "CallStatus": call_status, "CallbackSource": "call-progress-events", "Called": c.to,
                  "Caller": c.from_, "Direction": "outbound-api", "From": c.from_,
                  "SequenceNumber": str(self._cb_seq), "Timestamp": rfc2822(datetime.now(UTC)) or "",
                  "To": c.to}
        if call_status in FINAL_STATUSES:
            params["CallDuration"] = str(c.duration or 0)
            params["Duration"] = str(math.ceil((c.duration or 0) / 60))
        if c.answered_by is not None:
            params["AnsweredBy"] = c.answered_by
        self._cb_seq += 1
        method = c.param("StatusCallbackMethod") or "POST"
        if self._options.disorder_status_callbacks:
            if call_status == "ringing":
                self._cb_held = (url, method, params)
                return
            sends = [(url, method, params)]
            if self._cb_held is not None:
                sends.append(self._cb_held)
                self._cb_held = None
            if call_status in FINAL_STATUSES:
                sends.append((url, method, params))
        else:
            sends = [(url, method, params)]
        for args in sends:
            self._cb_tail = asyncio.create_task(self._deliver(self._cb_tail, *args))

    async def _deliver(self, previous: asyncio.Task[None] | None, url: str, method: str,
                       params: dict[str, str]) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        self.call.status_callbacks.append(await self._webhooks.send("status", url, method, params))


def amd_verdict(persona: Persona, mode: str, *, speech_threshold_ms: int = 2400, speech_end_ms: int = 1200,
                timeout_ms: int = 30000) -> tuple[str, int]:
    """Twilio's answering-machine verdict for how this persona answers: (AnsweredBy, detection ms).

    As Twilio documents it, the length of the opening speech decides: longer than the speech threshold is a
    machine, so a person with a long greeting ("Thanks for calling Summit Plumbing and Drain, this is Mike, how
    can I help you?") is classed as one too. `Enable` answers `machine_start` as soon as the threshold is
    passed. `DetectMessageEnd` waits for the message's end: `machine_end_beep` after a beep,
    `machine_end_silence` when a machine goes quiet, and `machine_end_other` for a long-greeting person (a
    person's line carries room noise, not a machine's digital silence). Shorter speech followed by the
    speech-end silence is `human`. No verdict within the timeout is `unknown`."""
    lines = persona.provider_turns()
    opening = lines[0] if lines else None
    speech_ms = persona.turn_ms(opening) if opening is not None and opening.sound == "speech" else 0
    beep_end: int | None = None
    if opening is not None:
        at = speech_ms
        start = persona.turns.index(opening)
        for turn in persona.turns[start + 1:]:
            if turn.speaker == "agent":
                if turn.silent:
                    continue
                break
            at += persona.pause_before(turn) + persona.turn_ms(turn)
            if turn.sound == "beep":
                beep_end = at
                break
    machine = persona.answer == "voicemail" or speech_ms > speech_threshold_ms
    if not machine:
        verdict, ms = "human", speech_ms + speech_end_ms
    elif mode == "Enable":
        verdict, ms = "machine_start", min(speech_ms, speech_threshold_ms)
    elif beep_end is not None:
        verdict, ms = "machine_end_beep", beep_end
    elif persona.answer == "voicemail":
        # A scripted voicemail without a beep line: its greeting is taken to end in one.
        verdict, ms = "machine_end_beep", speech_ms + 300
    else:
        verdict, ms = "machine_end_other", speech_ms + speech_end_ms
    if ms > timeout_ms:
        return "unknown", timeout_ms
    return verdict, ms


def _int_param(c: SimCall, name: str, default: int, low: int, high: int) -> int:
    raw = c.param(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        value = default
    return min(high, max(low, value))


def _stream_persona(persona: Persona) -> Persona:
    """A voicemail without a script still plays a greeting."""
    if persona.answer == "voicemail" and not persona.provider_turns():
        greeting = Turn("provider", VOICEMAIL_GREETING.format(business=persona.business))
        return dataclasses.replace(persona, turns=(greeting,))
    return persona


def _parse_stream(stream: ET.Element, base_url: str | None) -> tuple[str, dict[str, str]]:
    """Check `<Stream>` as Twilio would: wss url (ws too, for loopback), no query string, short parameters."""
    url = (stream.get("url") or "").strip()
    if not url:
        raise CallFailed("<Stream> has no url attribute")
    if "://" not in url:
        if base_url is None:
            raise CallFailed(f"relative <Stream url={url!r}> in inline TwiML has nothing to resolve against")
        url = urljoin(base_url, url).replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "ws"):
        raise CallFailed(f"<Stream url={url!r}>: only wss:// is supported (Twilio 31920)")
    if parts.query:
        raise CallFailed(f"<Stream url={url!r}> has a query string; Twilio does not support query string "
                         "parameters there (use <Parameter>)")
    parameters: dict[str, str] = {}
    for p in stream.findall("Parameter"):
        name, value = p.get("name") or "", p.get("value") or ""
        if not name:
            raise CallFailed("<Parameter> without a name")
        if len(name) + len(value) >= 500:
            raise CallFailed(f"<Parameter name={name!r}>: name + value must be under 500 characters")
        parameters[name] = value
    return url, parameters


class TwilioStandin:
    """The Twilio stand-in (async context manager): REST API on 127.0.0.1, one simulated call per create."""

    def __init__(self, personas: PersonaBook, account_sid: str, auth_token: str, *, reply_gap_ms: int = 300,
                 unknown_ring_ms: int = 200, webhook_timeout: float = 10.0, sign_media_stream: bool = True,
                 hangup_wait: float = 10.0, host: str = "127.0.0.1", port: int = 0,
                 startup_timeout: float = 10.0, drop_stream_after_s: float | None = None,
                 disorder_status_callbacks: bool = False, allow_insecure_streams: bool | None = None) -> None:
        # Unset: allowed when ALLOW_INSECURE_PUBLIC_URL=1 (the switch that also lets the gateway run on http://).
        if allow_insecure_streams is None:
            allow_insecure_streams = os.environ.get("ALLOW_INSECURE_PUBLIC_URL") == "1"
        self.options = SimOptions(reply_gap_ms=reply_gap_ms, unknown_ring_ms=unknown_ring_ms,
                                  webhook_timeout=webhook_timeout, sign_media_stream=sign_media_stream,
                                  hangup_wait=hangup_wait, drop_stream_after_s=drop_stream_after_s,
                                  disorder_status_callbacks=disorder_status_callbacks,
                                  allow_insecure_streams=allow_insecure_streams)
        self.account_sid = account_sid
        self._auth_token = auth_token
        self._host, self._port, self._startup_timeout = host, port, startup_timeout
        self.api = CallsApi(personas, account_sid, auth_token, control=self)
        self._webhooks: WebhookSender | None = None
        self._runs: dict[str, CallRun] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        self._http_stack = contextlib.AsyncExitStack()
        self._http: ServedApp | None = None
        self.base_url = ""

    # --- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> TwilioStandin:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        self._webhooks = WebhookSender(self._auth_token, self.options.webhook_timeout)
        try:
            self._http = await self._http_stack.enter_async_context(serve_app(
                self.api.app, self._host, self._port, startup_timeout=self._startup_timeout, shutdown_timeout=5.0,
                name="Twilio stand-in", ws="none", access_log=False, timeout_graceful_shutdown=2))
        except BaseException:
            await self.stop()
            raise
        self.base_url = self._http.base_url
        logger.info("Twilio stand-in listening on %s", self.base_url)

    async def stop(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Hang up live calls (each gets its `stop` and final callback), then stop the HTTP server."""
        for run in self._runs.values():
            run.request_hangup("standin-shutdown")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._http is not None:
            await self._http.stop(timeout)
            self._http = None
        await self._http_stack.aclose()
        if self._webhooks is not None:
            await self._webhooks.aclose()
            self._webhooks = None

    # --- CallControl (asked by the REST API) ----------------------------------------------------------

    def start_call(self, call: SimCall) -> None:
        if self._webhooks is None:
            raise RuntimeError("TwilioStandin is not started")
        run = CallRun(call, self.options, self._webhooks, on_final=self.api.call_ended, on_ended=self._ended,
                      rest_base=lambda: self.base_url, personas=self.api.personas)
        self._runs[call.sid] = run
        for coro in (run.run(), self._notify()):
            task = asyncio.create_task(coro, name=f"twilio-call-{call.sid}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def hang_up(self, call: SimCall, status: str) -> None:
        run = self._runs[call.sid]
        run.request_hangup(f"hangup-rest-{status}")
        try:
            await asyncio.wait_for(run.finalised.wait(), self.options.hangup_wait)
        except TimeoutError:
            logger.warning("call %s: hang-up did not finish within %.1fs", call.sid, self.options.hangup_wait)

    def redirect(self, call: SimCall, source: TwimlSource) -> None:
        self._runs[call.sid].request_redirect(source)

    async def _ended(self, call: SimCall) -> None:
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def inbound_call(self, from_: str, to: str, voice_url: str, *, method: str = "POST") -> SimCall:
        """Someone calls one of the account's numbers: Twilio requests the number's voice URL (what the console
        holds), signed, with `Direction=inbound`, and runs the TwiML it answers. A persona with the caller's
        number does the talking if the TwiML connects a stream."""
        if self._webhooks is None:
            raise RuntimeError("TwilioStandin is not started")
        now = datetime.now(UTC)
        call = SimCall(sid=new_sid("CA"), account_sid=self.account_sid, to=to, from_=from_,
                       params={"Url": [voice_url], "Method": [method]}, persona=self.api.personas.by_phone(from_),
                       created_at=asyncio.get_running_loop().time(), date_created=now, date_updated=now,
                       direction="inbound")
        self.api.calls[call.sid] = call
        self.api.stats.live += 1
        self.start_call(call)
        return call

    # --- for tests ------------------------------------------------------------------------------------

    @property
    def calls(self) -> list[SimCall]:
        return list(self.api.calls.values())

    @property
    def stats(self) -> AccountStats:
        return self.api.stats

    def call(self, sid: str) -> SimCall:
        try:
            return self.api.calls[sid]
        except KeyError:
            raise KeyError(f"no call {sid!r} was created on this Twilio stand-in") from None

    async def wait_for_call_end(self, sid: str, timeout: float = 30.0) -> SimCall:  # noqa: ASYNC109
        """The call once it ended and its final status callback was answered."""
        call = self.call(sid)
        try:
            await asyncio.wait_for(call.ended.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"call {sid} still {call.status} after {timeout}s") from None
        return call

    async def wait_for_call(self, timeout: float = 30.0) -> SimCall:  # noqa: ASYNC109
        """The first call created from now on (or the first ever, if `calls` is empty)."""
        known = len(self.api.calls)
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.api.calls) > known), timeout)
        return self.calls[known]

    async def wait_all_ended(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Every call created so far (and while waiting) has ended."""
        def all_ended() -> bool:
            return all(c.ended.is_set() for c in self.api.calls.values())

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(all_ended), timeout)
        except TimeoutError:
            live = [f"{c.sid} ({c.to}, {c.status})" for c in self.calls if not c.ended.is_set()]
            raise TimeoutError(f"calls still live after {timeout}s: {', '.join(live)}") from None
