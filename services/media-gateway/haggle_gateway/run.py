"""The media gateway service shell: Twilio webhooks and media streams, bridged to the realtime model.

On shutdown the process gives live calls a drain deadline, GATEWAY_DRAIN_SECONDS (see
`app.GatewayService.stop`).
"""

from __future__ import annotations

from haggle.config import Settings
from haggle.runtime import Runtime, ServiceHandle
from haggle.settings_table import pick

from .app import start_gateway
from .settings import GatewaySettings


def gateway_settings(s: Settings) -> GatewaySettings:
    """The gateway's settings: the shared ones it names (two under other names), plus its own derived ones."""
    s.require_public_url()
    s.require_realtime()
    s.require_twilio_webhooks()
    return pick(
        s, GatewaySettings, {"voice": "realtime_voice", "audio_format": "realtime_audio_format"},
        callback_number=s.callback_number or "",
        # Just under Twilio's time_limit, so we end the call ourselves and record why (max_duration).
        max_call_s=float(max(15, s.call_time_limit_s - 15)),
    )


async def start(rt: Runtime) -> ServiceHandle:
    settings = gateway_settings(rt.settings)
    service = await start_gateway(rt.nc, rt.js, settings, rt.publisher)
    handle = ServiceHandle("media-gateway", routers=[service.router])
    handle.gateway = service  # type: ignore[attr-defined]

    async def drain(deadline_s: float) -> None:
        await service.stop(deadline_s=deadline_s)

    handle.on_stop.append(drain)
    return handle
