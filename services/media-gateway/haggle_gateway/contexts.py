"""Call contexts from the JetStream KV bucket, and the single-use stream token claim.

Any gateway replica can take any call: the dispatcher stores the CallContext (job, provider, prompt inputs,
a fresh random token, later the CallSid) under `ctx.<call_id>` before dialing. A media stream is accepted
only if, in this order:
1. `call_id` names a stored context (the id is checked against the subject-safe pattern first);
2. the token from `start.customParameters` matches (`hmac.compare_digest`);
3. the token was not used yet;
4. `start.callSid` equals the stored CallSid (if the dispatcher has not stored it yet, a bounded KV watch
   waits for its update);
5. the token is burnt with a compare-and-set on the entry's revision; losing that race means someone else
   claimed it first: a replay.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from haggle_contracts.calls import CallContext, ctx_key, decode_context, encode_context
from nats.js.errors import Error as JsError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from haggle.bus import retry_transient

log = logging.getLogger(__name__)


def about_call(ctx: CallContext, call_sid: str) -> dict[str, Any]:
    """The fields every event about one call carries, taken from its context (for the event's constructor)."""
    return {"job_id": ctx.job_id, "provider_id": ctx.provider_id, "attempt": ctx.attempt, "call_sid": call_sid}

_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CAS_ATTEMPTS = 4


class ClaimRejected(Exception):
    """The stream may not be accepted. `reason` is a short metric-friendly code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class _Stored:
    ctx: CallContext
    revision: int


class CallContexts:
    def __init__(self, kv: KeyValue, *, call_sid_wait_s: float = 4.0, read_retry_s: float = 8.0) -> None:
        self._kv = kv
        self._sid_wait_s = call_sid_wait_s
        self._read_retry_s = read_retry_s  # a webhook waits out a cluster failover instead of failing the call

    @staticmethod
    def valid_call_id(call_id: str | None) -> bool:
        return bool(call_id) and bool(_CALL_ID.match(call_id or ""))

    async def _load(self, call_id: str) -> _Stored | None:
        if not self.valid_call_id(call_id):
            return None
        key = ctx_key(call_id)
        try:
            entry = await retry_transient(lambda: self._kv.get(key), deadline_s=self._read_retry_s,
                                          what=f"reading call context {call_id}")
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            return _Stored(decode_context(entry.value), entry.revision)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("call context %s is unreadable: %s", call_id, exc)
            return None

    async def get(self, call_id: str | None) -> CallContext | None:
        """The stored context, or None for an unknown/invalid id."""
        if call_id is None:
            return None
        stored = await self._load(call_id)
        return stored.ctx if stored else None

    async def claim(self, call_id: str | None, token: str | None, call_sid: str) -> CallContext:
        """Validate and burn the stream token. Returns the context; raises ClaimRejected otherwise."""
        if not call_id or not self.valid_call_id(call_id):
            raise ClaimRejected("unknown_call", "missing or malformed call_id")
        stored = await self._load(call_id)
        if stored is None:
            raise ClaimRejected("unknown_call", f"no context for {call_id}")
        if not token or not hmac.compare_digest(token.encode(), stored.ctx.token.encode()):
            raise ClaimRejected("bad_token", call_id)
        for _ in range(_CAS_ATTEMPTS):
            if stored.ctx.token_used:
                raise ClaimRejected("replay", call_id)
            if stored.ctx.call_sid is None:
                stored = await self._wait_for_call_sid(call_id, stored)
            if stored.ctx.call_sid != call_sid:
                raise ClaimRejected("wrong_call_sid", call_id)
            burnt = msgspec.structs.replace(stored.ctx, token_used=True)
            try:
                await self._kv.update(ctx_key(call_id), encode_context(burnt), last=stored.revision)
                return burnt
            except KeyWrongLastSequenceError:
                pass  # someone wrote in between: re-read and re-check (a concurrent claim shows as token_used)
            except JsError as exc:
                if "wrong last sequence" not in str(exc).lower():
                    raise
            fresh = await self._load(call_id)
            if fresh is None:
                raise ClaimRejected("unknown_call", f"context for {call_id} vanished")
            stored = fresh
        raise ClaimRejected("replay", f"{call_id}: lost the token claim race repeatedly")

    async def _wait_for_call_sid(self, call_id: str, stored: _Stored) -> _Stored:
        """The dispatcher stores the CallSid right after Twilio accepts the dial; wait (bounded) for it."""
        watcher = await self._kv.watch(ctx_key(call_id))
        try:
            async def until_sid() -> _Stored:
                async for entry in watcher:  # the first yield may be the current value or None
                    if entry is None or entry.value is None or entry.revision is None:
                        continue
                    ctx = decode_context(entry.value)
                    if ctx.call_sid is not None:
                        return _Stored(ctx, entry.revision)
                raise ClaimRejected("sid_timeout", call_id)

            # Re-read once after the watch is set up: the update may have landed before it.
            fresh = await self._load(call_id)
            if fresh is not None and fresh.ctx.call_sid is not None:
                return fresh
            return await asyncio.wait_for(until_sid(), self._sid_wait_s)
        except TimeoutError as exc:
            raise ClaimRejected("sid_timeout", f"{call_id}: no CallSid after {self._sid_wait_s:.1f}s") from exc
        finally:
            try:
                await watcher.stop()
            except Exception:  # the watcher's ephemeral consumer expires on its own
                log.debug("stopping the KV watcher failed", exc_info=True)
