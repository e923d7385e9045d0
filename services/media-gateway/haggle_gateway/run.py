"""The media gateway service shell: Twilio webhooks and media streams, bridged to the realtime model.

On shutdown the process gives live calls a drain deadline, GATEWAY_DRAIN_SECONDS (see
`app.GatewayService.stop`).
"""

from __future__ import annotations

from haggle.config import ConfigError
from haggle.runtime import Runtime, ServiceHandle

from .app import start_gateway
from .settings import GatewaySettings


def gateway_settings(rt: Runtime) -> GatewaySettings:
    s = rt.settings
    s.require_public_url()
    s.require_realtime()
    if not (s.twilio_account_sid and s.twilio_auth_token):
        missing = "TWILIO_ACCOUNT_SID" if not s.twilio_account_sid else "TWILIO_AUTH_TOKEN"
        raise ConfigError(f"{missing} is not set (needed to verify Twilio's webhook signatures)")
    assert s.public_base_url and s.xai_api_key
    return GatewaySettings(
        public_base_url=s.public_base_url,
        twilio_account_sid=s.twilio_account_sid,
        twilio_auth_token=s.twilio_auth_token,
        twilio_api_base_url=s.twilio_api_base_url,
        xai_api_key=s.xai_api_key,
        xai_realtime_url=s.xai_realtime_url,
        realtime_model=s.realtime_model,
        voice=s.realtime_voice,
        audio_format=s.realtime_audio_format,  # type: ignore[arg-type]
        ai_disclosure=s.ai_disclosure,  # type: ignore[arg-type]
        silence_timeout_s=s.silence_timeout_s,
        voicemail_action=s.voicemail_action,  # type: ignore[arg-type]
        callback_number=s.callback_number or "",
        hold_timeout_s=s.hold_timeout_s,
        record_calls=s.record_calls,
        recording_notice=s.recording_notice,
        forward_unknown_to=s.forward_unknown_to or "",
        transfer_ring_s=s.transfer_ring_s,
        # Just under Twilio's time_limit, so we end the call ourselves and record why (max_duration).
        max_call_s=float(max(15, s.call_time_limit_s - 15)),
    )


async def start(rt: Runtime) -> ServiceHandle:
    settings = gateway_settings(rt)
    service = await start_gateway(rt.nc, rt.js, settings, rt.publisher)
    handle = ServiceHandle("media-gateway", routers=[service.router])
    handle.gateway = service  # type: ignore[attr-defined]

    async def drain(deadline_s: float) -> None:
        await service.stop(deadline_s=deadline_s)

    handle.on_stop.append(drain)
    return handle
