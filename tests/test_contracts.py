"""The contracts: round trips, subject layout, and the checked-in AsyncAPI document staying current."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from haggle_contracts import codec, fanout, subjects
from haggle_contracts import events as ev
from haggle_contracts.asyncapi import document, normalise

REPO = Path(__file__).resolve().parents[1]


def _differences(a: object, b: object, path: str = "$") -> list[str]:
    """The JSON paths where `a` and `b` differ (so a stale document names what changed)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(a.keys() | b.keys()):
            both = key in a and key in b
            out += _differences(a[key], b[key], f"{path}.{key}") if both else [f"{path}.{key}"]
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


def test_asyncapi_document_is_current() -> None:
    # Parsed JSON on both sides, descriptions cleaned the same way: layout and docstring indentation are
    # accidents of the Python and msgspec versions; names, channels, schemas and texts are what must match.
    checked_in = normalise(json.loads((REPO / "contracts" / "asyncapi.json").read_text()))
    generated = json.loads(json.dumps(document()))
    assert generated == normalise(generated), "document() must clean every description itself"
    stale = _differences(checked_in, generated)
    assert checked_in == generated, f"run `make asyncapi` and commit the result; differs at {stale}"


def test_every_event_has_a_subject_and_a_schema() -> None:
    doc = document()
    for cls in ev.ALL_EVENTS:
        assert cls.__name__ in doc["channels"]
        assert cls.__name__ in doc["components"]["schemas"]


def test_round_trip_and_subject() -> None:
    e = ev.UtteranceTranscribed(event_id="u1", job_id="j1", provider_id="p1", attempt=1, call_sid="CA1",
                                utterance_id="it1", seq=3, role=ev.Role.USER, text="one fifty")
    assert codec.decode(codec.encode(e)) == e
    assert subjects.subject_for(e) == "haggle.job.j1.provider.p1.utterance"
    assert subjects.subject_for(ev.JobCancelled(event_id="c", job_id="j1")) == "haggle.job.j1.cancelled"


def test_every_event_is_a_job_event_or_a_provider_event() -> None:
    # One list of events (AnyEvent), and each one either job-wide or fanned out to its provider by its base class.
    assert set(ev.ALL_EVENTS) == set(subjects.JOB_KINDS) | set(subjects.PROVIDER_KINDS)
    for cls in ev.ALL_EVENTS:
        assert issubclass(cls, ev.ProviderEvent) == (cls in subjects.PROVIDER_KINDS), cls.__name__
        assert issubclass(cls, ev.ProviderEvent) == ("provider_id" in cls.__struct_fields__), cls.__name__
        assert issubclass(cls, ev.AttemptEvent) == ("attempt" in cls.__struct_fields__), cls.__name__
        assert issubclass(cls, ev.CallEvent) == ("call_sid" in cls.__struct_fields__), cls.__name__


def test_fan_out_to_providers() -> None:
    spec = ev.ProviderSpec(id="p1", service_provider="A", phone_number="+14155550100")
    started = ev.JobStarted(event_id="s", job_id="j1", problem="leak", zip_code="94110", max_price=100,
                            providers=[spec])
    ended = ev.CallEnded(event_id="e", job_id="j1", provider_id="p2", attempt=1, call_sid="CA1", reason="end_call")
    assert fanout.targets(started, ["p9"]) == [("p1", spec)]
    assert fanout.targets(ev.JobCancelled(event_id="c", job_id="j1"), ["p1", "p2"]) == [("p1", None), ("p2", None)]
    assert fanout.targets(ended, ["p1"]) == [("p2", None)]
    assert fanout.provider_of(ended) == "p2"
    assert fanout.provider_of(started) is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"type": "Nope"}', "unknown event type"),
        (b'{"type": "JobCancelled", "v": 2, "event_id": "x", "job_id": "j"}', "unsupported version 2"),
        (b'{"type": "JobCancelled", "event_id": "x", "job_id": "bad id"}', "invalid JobCancelled"),
        (b'{"type": "JobStarted", "event_id": "x", "job_id": "j", "problem": "p", "zip_code": "1",'
         b' "max_price": 10, "providers": []}', "invalid JobStarted"),
    ],
)
def test_bad_events_raise_a_clear_reason(body: bytes, reason: str) -> None:
    with pytest.raises(codec.EventDecodeError, match=reason):
        codec.decode(body)


def test_job_started_rejects_bad_phone() -> None:
    raw = msgspec.json.encode({"type": "JobStarted", "event_id": "x", "job_id": "j", "problem": "p",
                               "zip_code": "1", "max_price": 10,
                               "providers": [{"id": "a", "service_provider": "A", "phone_number": "12"}]})
    with pytest.raises(codec.EventDecodeError, match="phone_number"):
        codec.decode(raw)
