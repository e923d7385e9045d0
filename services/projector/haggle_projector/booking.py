"""Booking: `POST /jobs/{job_id}/book` (and the dashboard's Book button) turns an agreed offer into a call back.

The request becomes a `BookingRequested` on the log; the dispatcher calls the provider back (a new round) to
confirm the agreed price and an appointment inside the homeowner's windows, and the voice model's
`record_booking` tool says whether it did (`BookingRecorded`). The fold (`state.py`) turns these into the row's
`booking_status` (`requested | confirmed | failed`) and `appointment`, which the job document shows.

A booking is refused (409) while the job is still negotiating (no `JobCompleted` yet: a callback round may still
change the best offer), for a provider without an agreed price, and while an earlier booking of the job is
requested or confirmed. A failed booking can be requested again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import HTTPException
from haggle_contracts import events as ev
from haggle_contracts import state as st
from haggle_contracts import text
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

WINDOW_MAX = 200
NEVER = datetime.min.replace(tzinfo=UTC)
Window = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=WINDOW_MAX),
    AfterValidator(lambda v: text.check(v, "window")),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": WINDOW_MAX,
                    "pattern": "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f]"
                               "[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"}),
]

RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong API key"},
    404: {"description": "No such job, or no such provider in it"},
    409: {"description": "Not bookable now: the job is still negotiating, the provider has no agreed price, or a "
                         "booking of this job is already requested or confirmed"},
    413: {"description": "The body is larger than MAX_BODY_BYTES"},
    415: {"description": "The body is not application/json"},
    422: {"description": "The body is invalid (`detail` lists loc/msg/type)"},
    503: {"description": "The event log is unavailable"},
}


class BookIn(BaseModel):
    """Whom to book (default: the best offer) and when the homeowner can have them come (default: any time)."""

    model_config = ConfigDict(extra="forbid")

    provider_id: Annotated[str, WithJsonSchema({"type": "string", "pattern": ev.ID_PATTERN})] | None = None
    windows: Annotated[list[Window], Field(max_length=10)] = []


def booking_request(job_id: str, rows: list[st.ProviderState], history: list[ev.Event],
                    body: BookIn) -> ev.BookingRequested:
    """The BookingRequested to publish, or an HTTPException saying why this booking cannot be made now."""
    if not any(isinstance(e, ev.JobCompleted) for e in history):
        raise HTTPException(status_code=409, detail="the job is still negotiating; book once it has completed")
    busy = next((r for r in rows if r.booking_status in (st.REQUESTED, st.CONFIRMED)), None)
    if busy is not None:
        raise HTTPException(status_code=409,
                            detail=f"a booking of {busy.service_provider!r} is already {busy.booking_status}")
    if body.provider_id is None:
        best = next((o for o in st.rank_offers(rows) if o.outcome == ev.Outcome.AGREED and o.price is not None),
                    None)
        if best is None:
            raise HTTPException(status_code=409, detail="the job has no agreed offer to book")
        provider_id = best.provider_id
    else:
        provider_id = body.provider_id
    row = next((r for r in rows if r.id == provider_id), None)
    if row is None:
        raise HTTPException(status_code=404, detail=f"job {job_id!r} has no provider {provider_id!r}")
    if row.outcome != ev.Outcome.AGREED or row.negotiated_price is None:
        raise HTTPException(status_code=409, detail=f"{row.service_provider!r} has no agreed price to book")
    earlier = sum(1 for e in history if isinstance(e, ev.BookingRequested) and e.provider_id == provider_id)
    return ev.BookingRequested(
        event_id=f"book-{job_id}-{provider_id}-{earlier + 1}",
        job_id=job_id,
        provider_id=provider_id,
        price=row.negotiated_price,
        windows=list(body.windows),
        request=earlier + 1,
    )


def booking_doc(rows: list[st.ProviderState]) -> dict[str, Any]:
    """The job document's booking fields: the latest booking of the job, if any."""
    booked = [r for r in rows if r.booking_status is not None]
    latest = max(booked, key=lambda r: r.updated_at or r.created_at or NEVER, default=None)
    return {
        "booking_status": latest.booking_status if latest else None,
        "booking_provider_id": latest.id if latest else None,
        "appointment": latest.appointment if latest else None,
    }
