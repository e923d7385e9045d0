"""The event catalog as an AsyncAPI 3.0 document, generated from the msgspec Structs.

`make asyncapi` writes it to contracts/asyncapi.json; a test fails when the checked-in copy is stale,
so the document can never drift from the code. Every description is cleaned with `inspect.cleandoc`:
docstring indentation differs by Python (3.13 dedents docstrings itself) and by msgspec version (newer ones
clean the descriptions they take from docstrings), and the document must not.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from . import events as ev
from . import subjects

# Who publishes what: documentation of the flow, checked against the services by the tests that run it.
PRODUCERS: dict[type[ev.Event], str] = {
    ev.JobStarted: "operator API or any other system",
    ev.JobCancelled: "operator API",
    ev.DialScheduled: "dispatcher",
    ev.CallDialed: "dispatcher",
    ev.DialFailed: "dispatcher",
    ev.CallStatusChanged: "media-gateway (Twilio status callback) or dispatcher (reconciliation)",
    ev.MachineDetected: "media-gateway (Twilio async AMD callback)",
    ev.UtteranceTranscribed: "media-gateway",
    ev.QuoteRecorded: "media-gateway (record_quote tool)",
    ev.CallEnded: "media-gateway",
    ev.PriceExtracted: "extractor",
    ev.JobCompleted: "job completion (extractor service)",
    ev.CallPlanned: "dispatcher (market strategy)",
    ev.OfferDecided: "media-gateway (record_quote tool, offer policy)",
    ev.BookingRequested: "operator API (POST /jobs/{job_id}/book) or the dashboard's Book button",
    ev.BookingRecorded: "media-gateway (record_booking tool)",
    ev.CallPriced: "dispatcher (call-cost consumer)",
    ev.CallRecorded: "media-gateway (Twilio recording status callback)",
    ev.InboundCallReceived: "media-gateway (Twilio voice webhook of TWILIO_PHONE_NUMBER)",
    ev.HomeownerTransfer: "media-gateway (transfer_to_homeowner tool, Twilio <Dial> action)",
}


def _address(cls: type[ev.Event]) -> str:
    if cls in subjects.JOB_KINDS:
        return f"{subjects.PREFIX}.job.{{job_id}}.{subjects.JOB_KINDS[cls]}"
    return f"{subjects.PREFIX}.job.{{job_id}}.provider.{{provider_id}}.{subjects.PROVIDER_KINDS[cls]}"


def normalise(node: Any) -> Any:
    """`node` with every `description` string cleaned by `inspect.cleandoc` (a copy; the input is untouched)."""
    if isinstance(node, dict):
        return {key: inspect.cleandoc(value) if key == "description" and isinstance(value, str) else normalise(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [normalise(item) for item in node]
    return node


def document() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(ev.ALL_EVENTS, ref_template="#/components/schemas/{name}")
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for cls in ev.ALL_EVENTS:
        name = cls.__name__
        address = _address(cls)
        params = {"job_id": {"description": "The job id (a subject token: letters, digits, - and _)."}}
        if "{provider_id}" in address:
            params["provider_id"] = {"description": "The provider id within the job."}
        messages[name] = {
            "name": name,
            "title": name,
            "summary": inspect.cleandoc(cls.__doc__ or "").splitlines()[0],
            "description": cls.__doc__ or "",
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {"Nats-Msg-Id": {
                "type": "string", "description": "= event_id; JetStream stores a repeated id once"}}},
            "payload": {"$ref": f"#/components/schemas/{name}"},
        }
        channels[name] = {
            "address": address,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "parameters": params,
        }
        operations[f"publish{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": f"Published by the {PRODUCERS[cls]}.",
        }
    channels["DeadLetter"] = {
        "address": f"{subjects.DEADLETTER_PREFIX}.{{consumer}}",
        "parameters": {"consumer": {"description": "The durable consumer that could not use the message."}},
        "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
    }
    (_, dl) = msgspec.json.schema_components([ev.DeadLetter], ref_template="#/components/schemas/{name}")
    components.update(dl)
    messages["DeadLetter"] = {"name": "DeadLetter", "contentType": "application/json",
                              "summary": "A message a consumer could not decode, with the reason.",
                              "payload": {"$ref": "#/components/schemas/DeadLetter"}}
    return normalise({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Haggle events",
            "version": "1",
            "description": (
                "Every fact Haggle records, on one JetStream stream "
                f"`{subjects.STREAM}` capturing `{subjects.PREFIX}.>` (limits retention, file storage). "
                "Replay one job with the filter `haggle.job.<job_id>.>`. Each event's `v` is its schema "
                "version; consumers dead-letter versions they do not know."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats",
                             "description": "Any NATS server with JetStream (embedded by `haggle up`)."}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": components, "messages": messages},
    })
