"""A durable JetStream pull-consumer loop: the shell every event-driven service runs its logic in.

Why not FastStream's subscriber: our consumers need several filter subjects on one durable, an
explicit ack only after the effect is done, `nak(delay)` as a scheduler (retries and calling-hour
waits survive restarts because the message stays unacked on the stream), and dead-lettering of
malformed events. That is this small loop; the services' logic stays plain and testable.

Handler contract: return None to ack; return `Later(seconds)` to be redelivered after that delay;
raise to be redelivered with backoff (the error is logged with the event). An `ordered` consumer (the
projector) instead retries the same message in place until it succeeds, because letting a later event
overtake a failed one would apply the log out of order. Malformed or unknown-version
events, events against the text rule (`haggle_contracts.text`), events whose subject does not match their body
(see `bus.decode_message`) and events a handler refuses by raising `Rejected` are published on
`haggle.deadletter.<consumer>` with the reason and acked, so they never stop the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec
from haggle_contracts import codec, subjects
from haggle_contracts import events as ev
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext

from . import bus
from .metrics import CONSUMER_LAG, EVENTS_HANDLED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Later:
    """Redeliver the message after `seconds` (it stays on the stream meanwhile)."""

    seconds: float


@dataclass(frozen=True)
class Delivery:
    """What a handler knows about the message besides the event."""

    seq: int
    subject: str
    num_delivered: int
    msg: Msg


class Rejected(Exception):
    """Raised by a handler that refuses an event for good (retrying cannot help): the consumer dead-letters the
    event with this reason, acks it and moves on, so one bad event never stalls the ones behind it."""


Handler = Callable[[ev.Event, Delivery], Awaitable[Later | None]]


def backoff(num_delivered: int) -> float:
    return min(0.2 * (2 ** max(0, num_delivered - 1)), 30.0)


class EventConsumer:
    """Runs `handler` for each message of a durable consumer; `concurrency` > 1 handles messages in parallel."""

    def __init__(
        self,
        js: JetStreamContext,
        spec: subjects.ConsumerSpec,
        handler: Handler,
        *,
        concurrency: int = 1,
        batch: int = 10,
        ordered: bool = False,
    ) -> None:
        self.js = js
        self.spec = spec
        self.handler = handler
        self.concurrency = concurrency
        self.batch = 1 if ordered else batch  # a partial batch would wait out the whole fetch timeout
        self.ordered = ordered
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self.handled = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        psub = await self._bind()
        loop = asyncio.get_running_loop()
        next_lag_check = 0.0
        while not self._stopping.is_set():
            if loop.time() >= next_lag_check:  # event lag per consumer, for /metrics
                next_lag_check = loop.time() + 5.0
                with contextlib.suppress(Exception):
                    info = await psub.consumer_info()
                    CONSUMER_LAG.labels(self.spec.durable).set(info.num_pending + info.num_ack_pending)
            want = self.batch if self.concurrency == 1 else max(1, min(self.batch, self._free_slots()))
            try:
                msgs = await psub.fetch(want, timeout=1.0)
            except (TimeoutError, NatsTimeoutError):
                continue
            except Exception as exc:  # connection trouble: the client reconnects; we back off and retry
                log.warning("consumer %s fetch failed: %s", self.spec.durable, exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    psub = await self._bind()
                continue
            for msg in msgs:
                if self.concurrency == 1:
                    await self._handle(msg)
                else:
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle_released(msg))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await psub.unsubscribe()

    def _free_slots(self) -> int:
        return self.concurrency - len(self._inflight)

    async def _bind(self):  # type: ignore[no-untyped-def]
        return await self.js.pull_subscribe_bind(self.spec.durable, stream=subjects.STREAM)

    async def _handle_released(self, msg: Msg) -> None:
        try:
            await self._handle(msg)
        finally:
            self._slots.release()

    async def _handle(self, msg: Msg) -> None:
        meta = msg.metadata
        delivery = Delivery(
            seq=meta.sequence.stream, subject=msg.subject, num_delivered=meta.num_delivered, msg=msg
        )
        try:
            event = bus.decode_message(msg.subject, msg.data)
        except codec.EventDecodeError as exc:
            await self._dead_letter(msg, delivery, str(exc))
            return
        if 0 < self.spec.max_deliver <= delivery.num_delivered:
            # The last delivery JetStream will make: end it here, with the reason, rather than let the message
            # stop silently (the earlier attempts' errors are in the log).
            await self._dead_letter(msg, delivery, f"not handled after {delivery.num_delivered} deliveries "
                                                   f"(max_deliver {self.spec.max_deliver})")
            return
        try:
            result = await (self._call_in_order(event, delivery) if self.ordered else self.handler(event, delivery))
        except Rejected as exc:
            await self._dead_letter(msg, delivery, str(exc))
            return
        except Exception:
            delay = backoff(delivery.num_delivered)
            log.exception(
                "consumer %s failed on %s seq=%s (delivery %s); retrying in %.1fs",
                self.spec.durable, type(event).__name__, delivery.seq, delivery.num_delivered, delay,
            )
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
            return
        try:
            if isinstance(result, Later):
                await msg.nak(delay=max(0.0, result.seconds))
            else:
                await msg.ack()
            self.handled += 1
            EVENTS_HANDLED.labels(self.spec.durable).inc()
        except Exception as exc:  # the ack is lost: the message comes back and the handler's idempotency copes
            log.warning("consumer %s could not ack seq=%s: %s", self.spec.durable, delivery.seq, exc)

    async def _call_in_order(self, event: ev.Event, delivery: Delivery) -> Later | None:
        attempt = 0
        while True:
            try:
                return await self.handler(event, delivery)
            except Rejected:
                raise
            except Exception:
                if self._stopping.is_set():
                    raise
                attempt += 1
                delay = backoff(attempt)
                log.exception("consumer %s: seq=%s failed (try %s); retrying in place in %.1fs",
                              self.spec.durable, delivery.seq, attempt, delay)
                waited = 0.0
                while waited < delay and not self._stopping.is_set():
                    with contextlib.suppress(Exception):
                        await delivery.msg.in_progress()  # keep the message ours while we wait
                    step = min(1.0, delay - waited)
                    try:
                        await asyncio.wait_for(self._stopping.wait(), step)
                    except TimeoutError:
                        pass
                    waited += step

    async def _dead_letter(self, msg: Msg, delivery: Delivery, reason: str) -> None:
        log.error("consumer %s dead-letters seq=%s on %s: %s", self.spec.durable, delivery.seq, msg.subject, reason)
        body = ev.DeadLetter(
            consumer=self.spec.durable,
            subject=msg.subject,
            reason=reason,
            stream_seq=delivery.seq,
            body=msg.data.decode("utf-8", errors="replace"),
        )
        try:
            await self.js.publish(
                subjects.deadletter_subject(self.spec.durable),
                msgspec.json.encode(body),
                headers={"Nats-Msg-Id": f"dlq-{self.spec.durable}-{delivery.seq}"},
                timeout=2.0,
            )
            await msg.ack()
        except Exception as exc:
            log.warning("dead-letter publish failed (%s); message will be redelivered", exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)
