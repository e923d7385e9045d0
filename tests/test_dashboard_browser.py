"""The dashboard in a real browser (Debian's Chromium through Playwright) against the real system.

`test_simulated_job_started_from_the_form_shows_live_to_the_end`: every service, with the Twilio, realtime
and xAI chat stand-ins; a job is started from the form and watched to the end: rows change state live, the
transcript of a running call appears in the call view as it is spoken, the best offer is highlighted.

`test_scripted_call_updates_the_page_step_by_step`: the projector alone, with events published by the test at
its own pace, to pin down each intermediate state (dialing, on the call, a chat line appearing) exactly.

Screenshots land in test-artifacts/; with HAGGLE_UPDATE_SCREENSHOTS=1 also docs/dashboard.png (the README's).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from haggle_contracts import events as ev

from haggle.config import Settings
from haggle.simulate import simulated_world
from haggle.system import start_system

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000
KEY = "browser-s3cret"

# Records every state each provider row (and the call view's facts) passes through, and the chat lines the
# page's script adds after load, so brief states are not missed between two looks.
RECORDER = """
window.__seen = {};
window.__chatAdded = 0;
const note = (node) => {
  if (!(node instanceof Element) || !node.dataset.providerId || !node.dataset.status) return;
  const list = (window.__seen[node.dataset.providerId] ||= []);
  if (list[list.length - 1] !== node.dataset.status) list.push(node.dataset.status);
};
new MutationObserver((records) => {
  for (const r of records) {
    if (r.type === "attributes") note(r.target);
    for (const n of r.addedNodes || []) {
      if (n instanceof Element) {
        note(n);
        if (n.matches(".msg") || n.querySelector(".msg")) window.__chatAdded += 1;
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
document.addEventListener("DOMContentLoaded", () => document.querySelectorAll("[data-provider-id]").forEach(note));
"""


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browsers` (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            await instance.close()


async def new_page(browser: Any, base_url: str, **viewport: int) -> Any:
    context = await browser.new_context(base_url=base_url,
                                        viewport={"width": viewport.get("width", 1280),
                                                  "height": viewport.get("height", 900)})
    context.set_default_timeout(WAIT_MS)
    await context.add_init_script(RECORDER)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # checked at the end of each test
    return page


async def sign_in(page: Any) -> None:
    await page.goto("/")
    assert "/ui/login" in page.url  # no unauthenticated view
    await page.fill("#key", KEY)
    await page.click("main button[type=submit]")
    await page.wait_for_url("**/")
    assert await page.locator("h1").inner_text() == "Jobs"


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


async def statuses(page: Any) -> dict[str, list[str]]:
    return await page.evaluate("() => window.__seen")


@pytest.mark.slow
async def test_simulated_job_started_from_the_form_shows_live_to_the_end(nc, nats_server, tmp_path: Path,
                                                                         browser: Any) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'b.db'}", port=0, api_key=KEY)
    async with simulated_world(settings) as world:
        system = await start_system(world.settings, nats_url=nats_server.url,
                                    service_options={"extractor": {"gateway_grace_s": 2.0}})
        world.attach(system)
        try:
            personas = list(world.personas)
            page = await new_page(browser, system.base_url)
            await sign_in(page)

            await page.click("text=New job")
            await page.fill("#problem", "Leaking kitchen faucet")
            await page.fill("#zip_code", "94110")
            await page.fill("#max_price", "200")
            await page.fill("#context_answers", "Single-handle faucet, drips constantly; weekdays after 3pm.")
            await page.fill("#providers", "\n".join(f"{p.business}, {p.phone}" for p in personas))
            await page.click("#new-job button[type=submit]")
            await page.wait_for_url("**/ui/jobs/*")
            rows = page.locator("#providers tbody tr")
            assert await rows.count() == len(personas)
            await page.wait_for_selector("#live[data-state=live]")

            # A call goes live; open the call view of the last provider, whose conversation has barely begun.
            await page.wait_for_function(
                "() => Object.values(window.__seen).some(s => s.includes('in_progress'))")
            last = personas[-1].business
            call = await new_page(browser, system.base_url)
            await call.context.add_cookies(await page.context.cookies())
            await call.goto(await page.locator(f"#providers a:text-is(\"{last}\")").get_attribute("href"))
            await call.wait_for_selector("#live[data-state=live]")
            # Chat lines arrive while the call runs (added by the script, not by a reload) ...
            await call.wait_for_function("() => window.__chatAdded >= 2")
            # ... and the call ends with the extractor's verdict in the event timeline.
            await call.wait_for_selector("#timeline li[data-type=PriceExtracted]")
            assert await call.locator("#chat .msg.provider").count() >= 2
            assert await call.locator("#chat .msg.agent").count() >= 2
            await call.wait_for_selector("#facts[data-terminal=true]")
            await call.screenshot(path=screenshot_path("dashboard-call.png"), full_page=True, animations="disabled")

            # Every row reaches a terminal state live, after passing through a live call state.
            await page.wait_for_function(
                "n => document.querySelectorAll('#providers tr[data-terminal=true]').length === n", arg=len(personas))
            seen = await statuses(page)
            assert len(seen) == len(personas)
            for provider_id, states in seen.items():
                assert {"dialing", "in_progress"} & set(states), (provider_id, states)
                assert states[-1] in ("completed", "failed"), (provider_id, states)

            # The best offer: Joe's Plumbing, 200 -> 175.
            best = page.locator("#providers tr.best")
            await best.wait_for()
            assert "Joe's Plumbing" in await best.inner_text()
            banner = page.locator("#best")
            await banner.wait_for(state="visible")
            text = await banner.inner_text()
            assert "Joe's Plumbing" in text and "$175" in text and "saves $25" in text, text
            await page.wait_for_selector("#job-status[data-status=completed]")
            assert not page.js_errors and not call.js_errors, page.js_errors + call.js_errors

            shot = screenshot_path("dashboard-job.png")
            await page.screenshot(path=shot, full_page=True, animations="disabled")
            if os.environ.get("HAGGLE_UPDATE_SCREENSHOTS"):  # refresh the README's picture on demand only
                (REPO / "docs").mkdir(exist_ok=True)
                shutil.copyfile(shot, REPO / "docs" / "dashboard.png")

            # The same page on a phone: readable cards, nothing wider than the screen.
            phone = await new_page(browser, system.base_url, width=390, height=844)
            await phone.context.add_cookies(await page.context.cookies())
            await phone.goto(page.url)
            await phone.wait_for_selector("#live[data-state=live]")
            assert await phone.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
            await phone.screenshot(path=screenshot_path("dashboard-job-phone.png"), full_page=True,
                                   animations="disabled")
        finally:
            await system.stop(5)


def scripted_call(job_id: str, pid: str) -> list[ev.Event]:
    sid = f"CA{pid}"
    common: dict[str, Any] = {"job_id": job_id, "provider_id": pid, "attempt": 1}
    return [
        ev.DialScheduled(event_id=f"{pid}-sched", **common),
        ev.CallDialed(event_id=f"{pid}-dial", call_sid=sid, to="+14155550101", **common),
        ev.CallStatusChanged(event_id=f"{pid}-live", call_sid=sid, status="in-progress", **common),
        ev.UtteranceTranscribed(event_id=f"{pid}-u0", call_sid=sid, utterance_id=f"{pid}-u0", seq=0,
                                role=ev.Role.USER, text="Plumbing, hello? <b>not bold</b>", **common),
        ev.UtteranceTranscribed(event_id=f"{pid}-u1", call_sid=sid, utterance_id=f"{pid}-u1", seq=1,
                                role=ev.Role.ASSISTANT, text="Hi! Could you fix a leaking faucet for $150?",
                                **common),
        ev.CallEnded(event_id=f"{pid}-end", call_sid=sid, reason="end_call", duration_s=48.0, utterances=2,
                     **common),
        ev.PriceExtracted(event_id=f"{pid}-price", call_sid=sid, outcome=ev.Outcome.AGREED, agreed=True,
                          price=160.0, initial_quote=210.0, **common),
    ]


@pytest.mark.slow
async def test_scripted_call_updates_the_page_step_by_step(nc, nats_server, tmp_path: Path, browser: Any) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 's.db'}", port=0, api_key=KEY)
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    try:
        publish = system.rt.publisher.publish
        await publish(ev.JobStarted(
            event_id="start-s1", job_id="s1", problem="Leaking faucet", zip_code="94110", max_price=180,
            providers=[ev.ProviderSpec(id="p0", service_provider="Joe's <i>Plumbing</i>", phone_number="+14155550101"),
                       ev.ProviderSpec(id="p1", service_provider="Busy Bee", phone_number="+14155550102")],
        ))
        page = await new_page(browser, system.base_url, width=390, height=844)
        await sign_in(page)
        await page.goto("/ui/jobs/s1")
        await page.wait_for_selector("#live[data-state=live]")
        row = page.locator("#providers tr[data-provider-id=p0]")
        assert await row.get_attribute("data-status") == "queued"
        assert await page.locator("#providers a:text-is('Joe\\'s <i>Plumbing</i>')").count() == 1  # text, not markup

        call = await new_page(browser, system.base_url)
        await call.context.add_cookies(await page.context.cookies())
        await call.goto("/ui/jobs/s1/calls/p0")
        await call.wait_for_selector("#live[data-state=live]")
        assert await call.locator("#chat .msg").count() == 0

        events = scripted_call("s1", "p0")
        for event in events[:2]:
            await publish(event)
        await page.wait_for_selector("#providers tr[data-provider-id=p0][data-status=dialing]")
        await publish(events[2])
        await page.wait_for_selector("#providers tr[data-provider-id=p0][data-status=in_progress]")
        assert await row.locator("[data-field=status]").inner_text() == "On the call"

        await publish(events[3])
        bubble = call.locator("#chat .msg.provider p")
        await bubble.wait_for()
        assert await bubble.inner_text() == "Plumbing, hello? <b>not bold</b>"
        await page.wait_for_selector("#providers tr[data-provider-id=p0] [data-field=latest]:has-text('hello?')")
        await publish(events[4])
        await call.locator("#chat .msg.agent").wait_for()

        for event in events[5:]:
            await publish(event)
        await page.wait_for_selector("#providers tr[data-provider-id=p0][data-status=completed].best")
        banner = page.locator("#best")
        await banner.wait_for(state="visible")
        assert "saves $50 on their first quote of $210" in await banner.inner_text()
        assert await row.locator("[data-field=negotiated_price]").inner_text() == "$160"
        await call.wait_for_selector("#facts[data-status=completed]")
        assert await call.locator("#facts [data-field=negotiated_price]").inner_text() == "$160"
        assert await call.locator("#timeline li").count() == 1 + len(events)  # JobStarted + the call

        await publish(ev.CallStatusChanged(event_id="p1-busy", job_id="s1", provider_id="p1", attempt=1,
                                           call_sid="CAp1", status="busy"))
        await page.wait_for_selector("#providers tr[data-provider-id=p1] [data-field=outcome]:has-text('Busy')")
        assert await page.evaluate("() => window.__seen") == {"p0": ["queued", "dialing", "in_progress", "completed"],
                                                              "p1": ["queued"]}
        assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        assert not page.js_errors and not call.js_errors, page.js_errors + call.js_errors
        await page.screenshot(path=screenshot_path("dashboard-scripted-phone.png"), full_page=True,
                              animations="disabled")
    finally:
        await system.stop(5)


def timed_call(job_id: str, pid: str, start: datetime) -> list[ev.Event]:
    """A call whose lines were spoken 2 s and 9 s after it was answered (the chat shows 0:02 and 0:09)."""
    sid = f"CA{pid}"
    common: dict[str, Any] = {"job_id": job_id, "provider_id": pid, "attempt": 1}
    return [
        ev.DialScheduled(event_id=f"{pid}-sched", **common),
        ev.CallDialed(event_id=f"{pid}-dial", call_sid=sid, to="+14155550101", **common),
        ev.CallStatusChanged(event_id=f"{pid}-live", call_sid=sid, status="in-progress", occurred_at=start,
                             **common),
        ev.UtteranceTranscribed(event_id=f"{pid}-u0", call_sid=sid, utterance_id=f"{pid}-u0", seq=0,
                                role=ev.Role.USER, text="Plumbing, hello?", spoken_at=start + timedelta(seconds=2),
                                **common),
        ev.UtteranceTranscribed(event_id=f"{pid}-u1", call_sid=sid, utterance_id=f"{pid}-u1", seq=1,
                                role=ev.Role.ASSISTANT, text="Hi! Could you fix a leaking faucet for $150?",
                                spoken_at=start + timedelta(seconds=9), **common),
        ev.CallEnded(event_id=f"{pid}-end", call_sid=sid, reason="end_call", duration_s=48.0, utterances=2,
                     **common),
        ev.PriceExtracted(event_id=f"{pid}-price", call_sid=sid, outcome=ev.Outcome.AGREED, agreed=True,
                          price=160.0, initial_quote=210.0, conditions="=cmd|' /C calc'!A0", **common),
    ]


async def test_operator_view_live_jobs_list_cancel_csv_and_timed_transcript(nc, nats_server, tmp_path: Path,
                                                                            browser: Any) -> None:
    """The operator's view: the jobs list follows the log live (a new job appears, its counts move), the job
    page shows the job's cost live and cancels a job (the button goes once the job is over), its results
    download as CSV, and the call page shows each line with how far into the call it was said, the call's cost,
    and every event of the call."""
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'op.db'}", port=0, api_key=KEY)
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    try:
        publish = system.rt.publisher.publish
        page = await new_page(browser, system.base_url)
        await sign_in(page)
        await page.wait_for_selector("#live[data-state=live]")
        assert await page.locator("#jobs tbody tr[data-job-id=op1]").count() == 0

        # A job started elsewhere (the API, another operator) appears without a reload.
        await publish(ev.JobStarted(
            event_id="start-op1", job_id="op1", problem="Leaking faucet", zip_code="94110", max_price=180,
            providers=[ev.ProviderSpec(id="q0", service_provider="Joe's Plumbing", phone_number="+14155550101"),
                       ev.ProviderSpec(id="q1", service_provider="=HYPERLINK(\"x\")", phone_number="+14155550102")],
        ))
        job_row = page.locator("#jobs tbody tr[data-job-id=op1]")
        await job_row.wait_for()
        assert await job_row.locator("[data-field=done]").inner_text() == "0/2"
        assert await job_row.locator("a").inner_text() == "Leaking faucet"
        assert await page.locator("#no-jobs").is_hidden()

        start = datetime(2026, 1, 5, 15, 0, 0, tzinfo=UTC)
        call = timed_call("op1", "q0", start)
        for event in call:
            await publish(event)
        await page.wait_for_selector("#jobs tbody tr[data-job-id=op1] [data-field=done]:text-is('1/2')")
        assert await job_row.locator("[data-field=agreed]").inner_text() == "1"
        assert await job_row.locator("[data-field=best_price]").inner_text() == "$160"
        assert await job_row.get_attribute("data-state") == "running"

        # The job page: the cost line follows the calls' prices live ...
        await job_row.locator("a").click()
        await page.wait_for_url("**/ui/jobs/op1")
        await page.wait_for_selector("#live[data-state=live]")
        assert await page.locator("#job-cost [data-cost=total]").inner_text() == "–"
        await publish(ev.CallPriced(event_id="priced-CAq0", job_id="op1", provider_id="q0", attempt=1,
                                    call_sid="CAq0", twilio_price=0.014, billed_duration_s=48.0,
                                    realtime_minutes=0.8, realtime_price_per_minute=0.05, realtime_cost=0.04,
                                    total=0.054))
        await page.wait_for_selector("#job-cost [data-cost=total]:text-is('$0.0540')")
        # 50 dollars saved (210 -> 160) for $0.054 of calls
        assert await page.locator("#job-cost [data-cost=per_dollar_saved]").inner_text() == "$0.0011"
        await page.wait_for_selector("#providers tr[data-provider-id=q0] [data-field=cost]:text-is('$0.0540')")

        # ... and Cancel (confirmed in a dialog) stops the rest of the job.
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", accept)
        await page.click("#cancel-job")
        await page.wait_for_url("**/ui/jobs/op1")
        await page.wait_for_selector("#job-status[data-status=completed]")
        assert dialogs and "Cancel this job" in dialogs[0]
        await page.wait_for_selector("#providers tr[data-provider-id=q1][data-outcome=cancelled]")
        assert await page.locator("#cancel-job").count() == 0  # nothing left to cancel
        assert await page.locator("#job-actions").count() == 1  # the bar other actions (Book) share

        # The results as CSV, best offer first; a formula-looking name is defused.
        async with page.expect_download() as info:
            await page.click("#export-csv")
        download = await info.value
        saved = Path(await download.path())
        lines = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))  # noqa: ASYNC240
        assert [r["provider_id"] for r in lines] == ["q0", "q1"]
        assert lines[0]["negotiated_price"] == "160.0" and lines[0]["best"] == "yes" and lines[0]["cost"] == "0.054"
        assert lines[0]["conditions"].startswith("'=")
        assert lines[1]["service_provider"] == "'=HYPERLINK(\"x\")" and lines[1]["outcome"] == "cancelled"

        # The call page: the lines with their timings, and every event of this call in the timeline.
        await page.click("#providers a:text-is(\"Joe's Plumbing\")")
        await page.wait_for_url("**/calls/q0")
        await page.wait_for_selector("#live[data-state=live]")
        assert await page.locator("#chat .msg.provider time").inner_text() == "0:02"
        assert await page.locator("#chat .msg.agent time").inner_text() == "0:09"
        assert await page.locator("#chat .msg.agent time").get_attribute("title") == "15:00:09 UTC"
        assert await page.locator("#facts [data-field=cost]").inner_text() == "$0.0540"
        assert (await page.locator("#facts [data-field=cost_detail]").inner_text()
                == "attempt 1: Twilio $0.0140 + realtime $0.0400 = $0.0540")
        types = await page.locator("#timeline li").evaluate_all("els => els.map(e => e.dataset.type)")
        assert types == ["JobStarted"] + [type(e).__name__ for e in call] + ["CallPriced", "JobCancelled"]

        # The jobs list, reloaded, agrees with what the feed showed.
        await page.goto("/")
        await page.wait_for_selector("#jobs tbody tr[data-job-id=op1][data-state=completed]")
        assert not page.js_errors, page.js_errors
        await page.screenshot(path=screenshot_path("dashboard-operator.png"), full_page=True, animations="disabled")
    finally:
        await system.stop(5)
