"""Plays a call's recording on the call page without Haggle keeping the audio: the bytes are read from Twilio
with the account's credentials and streamed straight to the browser (docs/twilio-recording.md).

Twilio's media URLs may require HTTP basic auth (an account setting, and the advice for anything sensitive), so
the browser cannot fetch them itself; the dashboard asks for them on its behalf. Only URLs under the configured
Twilio REST base are fetched (they came from a signed recording callback), so this is no open proxy.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from fastapi.responses import Response, StreamingResponse
from haggle_contracts import state as st

from haggle.settings_table import DEFAULTS

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
PASSED_HEADERS = ("content-length", "content-range", "accept-ranges", "content-type")


@dataclass(frozen=True)
class TwilioMedia:
    account_sid: str
    auth_token: str
    api_base_url: str = DEFAULTS["twilio_api_base_url"]
    timeout_s: float = 10.0

    def allowed(self, url: str) -> bool:
        base = self.api_base_url.rstrip("/") + "/"
        return url.startswith(base) and ".." not in url


def playable(state: st.ProviderState, recording_sid: str) -> st.Recording | None:
    return next((r for r in state.recordings if r.recording_sid == recording_sid and r.status == "completed"
                 and r.url), None)


async def stream_recording(media: TwilioMedia | None, rec: st.Recording, range_header: str | None) -> Response:
    """The recording as WAV, relayed chunk by chunk (Range passed through, so the player can seek)."""
    if media is None or rec.url is None or not media.allowed(rec.url):
        log.warning("recording %s: not playable here (no Twilio credentials, or a URL outside the REST base)",
                    rec.recording_sid)
        return Response("this recording cannot be played from here\n", status_code=404, media_type="text/plain")
    client = httpx.AsyncClient(auth=(media.account_sid, media.auth_token), timeout=media.timeout_s,
                               trust_env=False, follow_redirects=True)
    headers = {"Range": range_header} if range_header else {}
    try:
        upstream = await client.send(client.build_request("GET", rec.url + ".wav", headers=headers), stream=True)
    except httpx.HTTPError as exc:
        await client.aclose()
        log.warning("recording %s: Twilio unreachable (%s)", rec.recording_sid, exc)
        return Response("Twilio did not answer; try again\n", status_code=502, media_type="text/plain")
    if upstream.status_code not in (200, 206):
        status = upstream.status_code
        await upstream.aclose()
        await client.aclose()
        log.warning("recording %s: Twilio answered %d", rec.recording_sid, status)
        return Response(f"Twilio answered {status} for this recording\n", status_code=502, media_type="text/plain")

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_bytes(CHUNK):
                yield chunk
        finally:
            await upstream.aclose()
            await client.aclose()

    out = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
    out["Cache-Control"] = "no-store"  # the audio is not kept here, nor in the browser's cache
    out["X-Content-Type-Options"] = "nosniff"
    return StreamingResponse(body(), status_code=upstream.status_code, headers=out,
                             media_type=upstream.headers.get("content-type", "audio/x-wav"))
