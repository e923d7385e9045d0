"""`haggle demo`: one job for five simulated providers through the real services, shown live, then a table.

It runs the market strategy (`NEGOTIATION_STRATEGY=market`): the first call goes out alone, the rest carry its
real quote, and a second round calls back the providers above the best with the best real offer. Each
planned call is printed with its round and the quote it carries."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
from haggle_contracts import codec, fanout, subjects
from haggle_contracts import events as ev
from haggle_sim.personas import demo_personas

from .config import Settings
from .demo_callback import provider_calls_back
from .simulate import simulated_world
from .system import start_system


def _line(event: ev.Event, names: dict[str, str]) -> str | None:
    who = names.get(fanout.provider_of(event) or "", "")
    match event:
        case ev.JobStarted():
            return f"job {event.job_id}: calling {len(event.providers)} providers about '{event.problem}'"
        case ev.CallPlanned():
            why = {"opening": "first call, no price known yet", "informed": "knows an earlier quote",
                   "callback": "called back", "independent": "on its own"}.get(event.reason, event.reason)
            text = f"round {event.round}: {who} ({why})"
            if event.competitor is not None:
                said = "agreed" if event.competitor.agreed else "quoted"
                text += (f", carrying {names.get(event.competitor.provider_id, event.competitor.provider_id)}'s "
                         f"{said} ${event.competitor.price:g}")
            return text
        case ev.CallDialed():
            return f"  {who:<16} dialing ({event.call_sid[:10]}...)"
        case ev.CallStatusChanged(status=s) if s in ("ringing", "in-progress", "busy", "no-answer", "failed"):
            return f"  {who:<16} {s}"
        case ev.UtteranceTranscribed():
            speaker = "agent" if event.role == ev.Role.ASSISTANT else "provider"
            return f"  {who:<16} {speaker:>8}: {event.text}"
        case ev.CallEnded():
            return f"  {who:<16} call ended ({event.reason}, {event.duration_s:.1f}s)"
        case ev.InboundCallReceived():
            return f"  {who:<16} called back (attempt {event.attempt}, {event.call_sid[:10]}...)"
        case ev.PriceExtracted():
            price = f"${event.price:g}" if event.price is not None else "-"
            return f"  {who:<16} => {event.outcome.value} {price} (via {event.method})"
        case _:
            return None


def _money(x: float | None) -> str:
    return f"${x:,.2f}" if x is not None else "-"


def print_table(doc: dict) -> None:  # type: ignore[type-arg]
    rows = [("provider", "rounds", "call_status", "outcome", "first quote", "agreed price", "saving")]
    for p in doc["providers"]:
        first, price = p["initial_quote"], p["negotiated_price"]
        saving = _money(first - price) if first is not None and price is not None else "-"
        rows.append((p["service_provider"], str(p.get("round", 1)), p["call_status"], p["outcome"] or "-",
                     _money(first), _money(price), saving))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    best = doc.get("best_offer")
    if best:
        print(f"\nbest offer: {best['service_provider']} at {_money(best['price'])}"
              + (f" (saves {_money(best['saving'])} on their first quote)" if best.get("saving") else ""))
    else:
        print("\nno provider agreed to a price")


async def _settled_job(http: httpx.AsyncClient, job_id: str, wait_s: float = 10.0) -> dict[str, Any]:
    """The job's document once every call has ended, or as it stands after `wait_s`.

    The projection trails the log by a moment, so the API can lag the events the demo has already seen."""
    deadline = time.monotonic() + wait_s
    while True:
        doc = (await http.get(f"/jobs/{job_id}")).json()
        if all(p["call_status"] in ("completed", "failed") for p in doc["providers"]) or time.monotonic() > deadline:
            return doc
        await asyncio.sleep(0.1)


async def run_demo(settings: Settings, *, timeout_s: float = 180.0) -> int:
    # The demo's world includes the harder lines of real phone lines (a long-greeting receptionist, a phone menu).
    settings = settings.with_(negotiation_strategy="market", negotiation_rounds=max(2, settings.negotiation_rounds))
    async with simulated_world(settings, personas=demo_personas(real_lines=True, callbacks=True)) as world:
        system = await start_system(world.settings, service_options={"extractor": {"gateway_grace_s": 2.0}})
        try:
            job_id = f"demo_{secrets.token_hex(4)}"
            names: dict[str, str] = {}
            done = asyncio.Event()
            seen: list[ev.Event] = []
            changed = asyncio.Event()

            async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
                try:
                    event = codec.decode(msg.data)
                except codec.EventDecodeError:
                    return
                seen.append(event)
                changed.set()
                if isinstance(event, ev.JobCompleted):
                    done.set()
                    return
                line = _line(event, names)
                if line:
                    print(line, flush=True)

            sub = await system.rt.nc.subscribe(subjects.job_filter(job_id), cb=on_msg)
            body = {
                "job_id": job_id,
                "problem": "leaking kitchen faucet",
                "zip_code": "94110",
                "max_price": 200,
                "context_answers": "Single-handle faucet, drips constantly; available weekdays after 3pm.",
                "providers": [{"service_provider": p.business, "phone_number": p.phone} for p in world.personas],
            }
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
                response = await http.post("/jobs", json=body)
                response.raise_for_status()
                names.update({p["id"]: p["service_provider"] for p in response.json()["providers"]})
                try:
                    await asyncio.wait_for(done.wait(), timeout_s)
                except TimeoutError:
                    print(f"demo: the job did not finish within {timeout_s:.0f}s")
                doc = await _settled_job(http, job_id)
                await provider_calls_back(world, doc, seen, changed)
                doc = await _settled_job(http, job_id)
            await sub.unsubscribe()
            print(f"\nresults after {time.monotonic() - started:.1f}s (from the projection):\n")
            print_table(doc)
            print(f"\naudit trail: .venv/bin/haggle events replay --job {job_id}")
            ok = all(p["call_status"] in ("completed", "failed") for p in doc["providers"])
            return 0 if ok else 1
        finally:
            await system.stop(5)
