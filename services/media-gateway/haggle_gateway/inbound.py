"""Callbacks: a call to TWILIO_PHONE_NUMBER from a number Haggle called is answered by the agent, with that
provider's context (docs/twilio-inbound.md).

- Every outbound call the gateway serves notes its number (`remember`): `haggle_callers`, key
  `phone.<digits>`, the job and provider of the latest call to it, kept as long as the log.
- The number's voice webhook (`POST /twilio/inbound`, set in the Twilio console, signed like every webhook)
  looks the caller up. Known: the provider's history is folded from the log, the call becomes the provider's
  next attempt (`InboundCallReceived`), its context (the job, what was said, the quote) is stored like a dialled
  call's, and the TwiML connects the media stream as for an outbound call. Unknown: one polite line and a
  hang-up, or `<Dial>` to `FORWARD_UNKNOWN_TO`.
"""

from __future__ import annotations

import logging
import re
import secrets

import msgspec
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts.calls import CallContext, ctx_key, encode_context
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from twilio.twiml.voice_response import VoiceResponse

from haggle import bus

log = logging.getLogger(__name__)

INBOUND_PATH = "/twilio/inbound"
UNKNOWN_CALLER_LINE = ("Hello, this number only returns calls about a home repair estimate we asked for. "
                       "We could not match your number, sorry. Goodbye.")
MAX_CONTEXT_LINES = 12


class Caller(msgspec.Struct):
    job_id: str
    provider_id: str


def caller_key(phone: str) -> str:
    return "phone." + re.sub(r"\D", "", phone)


def callback_context(state: st.ProviderState) -> str:
    """What the agent needs to carry on: the quote and the last lines said, newest last."""
    parts = []
    if state.initial_quote is not None:
        parts.append(f"Their first quote: ${state.initial_quote:g}.")
    if state.negotiated_price is not None:
        parts.append(f"Agreed price: ${state.negotiated_price:g}.")
    elif state.outcome:
        parts.append(f"Last call ended: {state.outcome.replace('_', ' ')}.")
    lines = [f"{'Agent' if u.role == ev.Role.ASSISTANT else 'Business'}: {u.text}"
             for u in state.transcript[-MAX_CONTEXT_LINES:]]
    if lines:
        parts.append("What was said: " + " | ".join(lines))
    return " ".join(parts) or "We called earlier and did not reach anyone."


def unknown_caller_twiml(forward_to: str) -> str:
    response = VoiceResponse()
    if forward_to:
        response.dial(forward_to)
    else:
        response.say(UNKNOWN_CALLER_LINE)
        response.hangup()
    return str(response.to_xml(xml_declaration=True))


class Callbacks:
    def __init__(self, js: JetStreamContext, callers: KeyValue, calls: KeyValue) -> None:
        self.js = js
        self.callers = callers
        self.calls = calls

    async def remember(self, ctx: CallContext) -> None:
        """Note who this outbound call is to, so a callback from the number finds the job."""
        if ctx.direction != "outbound":
            return
        try:
            await self.callers.put(caller_key(ctx.phone_number),
                                   msgspec.json.encode(Caller(ctx.job_id, ctx.provider_id)))
        except Exception as exc:  # the call goes on; only a later callback would go unmatched
            log.warning("call %s: could not note its number for callbacks: %s", ctx.call_id, exc)

    async def lookup(self, phone: str) -> Caller | None:
        try:
            entry = await self.callers.get(caller_key(phone))
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        try:
            return msgspec.json.decode(entry.value, type=Caller)
        except msgspec.DecodeError:
            return None

    async def take(self, caller: Caller, call_sid: str, from_number: str) -> tuple[CallContext, ev.Event] | None:
        """The callback's context (stored for the media stream) and its event; None when the log no longer
        knows the provider."""
        history = await bus.job_history(self.js, caller.job_id)
        state = st.fold_job(history).get(caller.provider_id)
        if state is None:
            return None
        attempt = state.attempts + 1
        ctx = CallContext(
            call_id=ev.new_id("call"), job_id=caller.job_id, provider_id=caller.provider_id, attempt=attempt,
            service_provider=state.service_provider, phone_number=state.phone_number, problem=state.problem,
            zip_code=state.zip_code, max_price=state.max_price, context_answers=state.context_answers,
            token=secrets.token_urlsafe(24), call_sid=call_sid, direction="inbound",
            callback_context=callback_context(state),
        )
        await self.calls.put(ctx_key(ctx.call_id), encode_context(ctx))
        event = ev.InboundCallReceived(event_id=f"inbound-{call_sid}", job_id=caller.job_id,
                                       provider_id=caller.provider_id, attempt=attempt, call_sid=call_sid,
                                       from_number=from_number)
        return ctx, event
