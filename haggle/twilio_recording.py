"""Call recordings through Twilio, with consent (`RECORD_CALLS=on`): the TwiML that starts one and the event its
status callback becomes. Facts relied on are in docs/twilio-recording.md.

The recording starts with the call's TwiML (`<Start><Recording channels="dual">`), before the media stream, so it
covers outbound calls and callbacks alike, and the agent's opening says the call is recorded (`RECORDING_NOTICE`).
Twilio calls `recordingStatusCallback` once the file is ready (after the call ended) with its URL and duration;
Haggle keeps those, never the audio.
"""

from __future__ import annotations

from collections.abc import Mapping

from haggle_contracts import events as ev
from twilio.twiml.voice_response import Start

CALLBACK_PATH = "/twilio/recording"
DEFAULT_NOTICE = "This call is recorded."


def start_recording(callback_url: str) -> Start:
    """The `<Start>` verb to put before `<Connect><Stream>`: both sides of the call, each on its own channel."""
    start = Start()
    start.recording(channels="dual", recording_status_callback=callback_url,
                    recording_status_callback_method="POST", recording_status_callback_event="completed absent")
    return start


def start_recording_twiml(callback_url: str) -> str:
    """`start_recording` as a TwiML fragment (no XML declaration), for a document built by hand."""
    return str(start_recording(callback_url).to_xml(xml_declaration=False))


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def recording_event(params: Mapping[str, str], *, job_id: str, provider_id: str, attempt: int) -> ev.CallRecorded:
    """A recording status callback's form fields as the event. The id is derived from the recording sid and
    status, so Twilio retrying the callback records it once."""
    sid = params.get("RecordingSid", "")
    status = params.get("RecordingStatus") or "completed"
    channels = _number(params.get("RecordingChannels"))
    error = _number(params.get("ErrorCode"))
    return ev.CallRecorded(
        event_id=f"rec-{sid}-{status}",
        job_id=job_id,
        provider_id=provider_id,
        attempt=attempt,
        call_sid=params.get("CallSid", ""),
        recording_sid=sid,
        status=status,
        recording_url=params.get("RecordingUrl") or None,
        duration_s=_number(params.get("RecordingDuration")),
        channels=int(channels) if channels else None,
        source=params.get("RecordingSource") or None,
        error_code=int(error) if error else None,
    )
