"""Recordings with consent: a call recorded dual-channel through Twilio (`<Start><Recording>`), its recording
status callback (signed, after the call) becoming a `CallRecorded`, and the call page playing it in Chromium,
read from Twilio through the dashboard (Haggle keeps no audio).

Twilio is the stand-in, driven by the official SDK; the callback is received on a real loopback server and its
signature checked with the SDK's validator; the dashboard is the real projector service."""

from __future__ import annotations

import asyncio
import io
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response
from haggle_contracts import events as ev
from haggle_sim.http_server import serve_app
from haggle_sim.personas import demo_personas
from haggle_sim.twilio_standin import TwilioStandin
from test_dashboard_browser import KEY, browser, chromium, new_page, sign_in  # noqa: F401 (fixtures)
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from waits import ACCEPTED, JobWatch, job_body, running_world

from haggle import bus
from haggle.config import Settings
from haggle.system import start_system
from haggle.twilio_recording import CALLBACK_PATH, recording_event, start_recording_twiml

ACCOUNT = "AC" + "7" * 32
TOKEN = "recording-token"
FROM = "+14155550100"
PAUSE_S = 2


def test_start_recording_twiml_and_event_from_callback() -> None:
    twiml = start_recording_twiml("https://h.example/twilio/recording?call_id=c1&x=<y>")
    assert twiml.startswith('<Start><Recording channels="dual" recordingStatusCallback="https://h.example')
    assert "&amp;x=&lt;y&gt;" in twiml  # an attribute, escaped
    event = recording_event({"RecordingSid": "RE1", "RecordingStatus": "absent", "CallSid": "CA1",
                             "RecordingDuration": "", "ErrorCode": "13617"}, job_id="j", provider_id="p", attempt=2)
    assert event.event_id == "rec-RE1-absent" and event.status == "absent" and event.error_code == 13617
    assert event.duration_s is None and event.recording_url is None and event.attempt == 2


@pytest.mark.browser
async def test_recorded_call_plays_on_the_call_page(nc, nats_server, tmp_path: Path, browser: Any) -> None:  # noqa: F811
    persona = next(iter(demo_personas(ms_per_char=12)))
    callbacks: list[dict[str, str]] = []
    arrived = asyncio.Event()
    validator = RequestValidator(TOKEN)
    hook = FastAPI()

    @hook.post(CALLBACK_PATH)
    async def recording_callback(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not validator.validate(str(request.url), form, request.headers.get("x-twilio-signature", "")):
            return Response(status_code=403)
        callbacks.append(form)
        arrived.set()
        return Response(status_code=204)

    async with TwilioStandin(personas=demo_personas(ms_per_char=12), account_sid=ACCOUNT,
                             auth_token=TOKEN) as twilio, serve_app(hook, "127.0.0.1", 0, name="callback") as served:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = twilio.base_url
        twiml = (f"<Response>{start_recording_twiml(served.base_url + CALLBACK_PATH)}"
                 f'<Pause length="{PAUSE_S}"/></Response>')
        call = await asyncio.to_thread(client.calls.create, to=persona.phone, from_=FROM, twiml=twiml)
        await asyncio.wait_for(arrived.wait(), 30)
        params = callbacks[0]
        assert params["CallSid"] == call.sid and params["RecordingStatus"] == "completed"
        assert params["RecordingChannels"] == "2" and int(params["RecordingDuration"]) >= PAUSE_S - 1
        recorded = recording_event(params, job_id="r1", provider_id="p0", attempt=1)
        assert recorded.recording_url and recorded.recording_url.startswith(twilio.base_url)

        settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'r.db'}", port=0,
                            api_key=KEY, twilio_account_sid=ACCOUNT, twilio_auth_token=TOKEN,
                            twilio_phone_number=FROM, twilio_api_base_url=twilio.base_url)
        system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
        try:
            publish = system.rt.publisher.publish
            common: dict[str, Any] = {"job_id": "r1", "provider_id": "p0", "attempt": 1}
            await publish(ev.JobStarted(event_id="start-r1", job_id="r1", problem="Leaking faucet", zip_code="94110",
                                        max_price=180, providers=[ev.ProviderSpec(
                                            id="p0", service_provider=persona.business, phone_number=persona.phone)]))
            await publish(ev.CallDialed(event_id="r1-dial", call_sid=call.sid, to=persona.phone, **common))
            await publish(ev.CallStatusChanged(event_id="r1-done", call_sid=call.sid, status="completed",
                                               duration_s=float(PAUSE_S), **common))

            page = await new_page(browser, system.base_url)
            await sign_in(page)
            await page.goto("/ui/jobs/r1/calls/p0")
            await page.wait_for_selector("#live[data-state=live]")
            assert await page.locator("#recordings").is_hidden()

            await publish(recorded)  # arrives live: the player appears without a reload
            audio = page.locator(f"#recordings li[data-recording-sid={recorded.recording_sid}] audio")
            await audio.wait_for()
            label = await page.locator("#recordings li span").inner_text()
            assert label.startswith("attempt 1 · ") and label.endswith("dual channel")
            seconds = await audio.evaluate("""a => new Promise((ok, fail) => {
                a.addEventListener('loadedmetadata', () => ok(a.duration), {once: true});
                a.addEventListener('error', () => fail(new Error('audio error ' + (a.error && a.error.code))),
                                   {once: true});
                a.load();
            })""")
            assert abs(seconds - recorded.duration_s) < 0.5, seconds  # the real file, decoded by Chromium

            # The bytes come from Twilio on each play (nothing kept here), only for a signed-in operator.
            src = await audio.get_attribute("src")
            sim_rec = twilio.call(call.sid).recordings[0]
            before = sim_rec.media_fetches
            async with httpx.AsyncClient(base_url=system.base_url, timeout=10) as http:
                assert (await http.get(src)).status_code == 401
                wav = await http.get(src, headers={"Authorization": f"Bearer {KEY}"})
                assert wav.headers["cache-control"] == "no-store"
                with wave.open(io.BytesIO(wav.content)) as w:
                    assert w.getnchannels() == 2 and w.getframerate() == 8000
                missing = await http.get(src.replace(recorded.recording_sid, "RE" + "0" * 32),
                                         headers={"Authorization": f"Bearer {KEY}"})
                assert missing.status_code == 404
            assert sim_rec.media_fetches == before + 1
            types = await page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.type)")
            assert types[-1] == "CallRecorded"
            assert not page.js_errors, page.js_errors
            await page.screenshot(path=str(tmp_path / "recording.png"), full_page=True)
        finally:
            await system.stop(5)


@pytest.mark.browser
@pytest.mark.slow
async def test_record_calls_on_through_the_real_services(nc, nats_server, tmp_path: Path,
                                                         browser: Any) -> None:  # noqa: F811
    """RECORD_CALLS=on: the gateway's TwiML starts a dual-channel recording, the agent's opening says the notice,
    Twilio's recording callback (signed, to the gateway) becomes a CallRecorded, and the call page plays it."""
    notice = "Just so you know, this call is recorded."
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'rec.db'}", calling_hours=None,
                        port=0, api_key=KEY, record_calls=True, recording_notice=notice)
    personas = demo_personas(ms_per_char=12)
    joe = next(p for p in personas if p.business == "Joe's Plumbing")
    async with running_world(settings, personas, nats_server.url) as (world, system), JobWatch(nc, "rec1") as watch:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=10,
                                     headers={"Authorization": f"Bearer {KEY}"}) as http:
            assert (await http.post("/jobs", json=job_body("rec1", [joe], ids="p"))).status_code in ACCEPTED
            event = await watch.until(lambda e: isinstance(e, ev.CallRecorded), 90)
        # the callback's answer is noted once the stand-in is done with the call
        call = await world.twilio.wait_for_call_end(event.call_sid)  # type: ignore[attr-defined]
        assert '<Recording channels="dual"' in call.twiml_documents[0]
        assert call.recordings[0].callbacks[0].status_code == 204  # the gateway took the signed callback
        assert event.status == "completed" and event.channels == 2 and event.duration_s == call.duration
        history = await bus.job_history(nc.jetstream(), "rec1")
        first_agent = next(e for e in history if isinstance(e, ev.UtteranceTranscribed)
                           and e.role == ev.Role.ASSISTANT)
        assert first_agent.text.endswith(notice), first_agent.text

        page = await new_page(browser, system.base_url)
        await sign_in(page)
        await page.goto("/ui/jobs/rec1/calls/p0")
        audio = page.locator(f"#recordings li[data-recording-sid={event.recording_sid}] audio")
        await audio.wait_for()
        seconds = await audio.evaluate("""a => new Promise((ok, fail) => {
            a.addEventListener('loadedmetadata', () => ok(a.duration), {once: true});
            a.addEventListener('error', () => fail(new Error('audio error')), {once: true});
            a.load();
        })""")
        assert abs(seconds - event.duration_s) < 0.5, seconds
        assert not page.js_errors, page.js_errors
