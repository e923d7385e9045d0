"""The projector service shell: the projection consumer plus the operator API that reads its store."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from haggle.logs import mask_urls
from haggle.runtime import Runtime, ServiceHandle

from .api import ApiDeps, build_router
from .dashboard import DashboardDeps, build_dashboard_router
from .dashboard.recording_media import TwilioMedia
from .projector import Projector
from .stores import ProviderStore, open_store

log = logging.getLogger(__name__)
PROJECTION_WAIT_S = 5.0  # POST /jobs waits this long for the projection to hold the job, then answers 202


async def _open_when_reachable(store: ProviderStore, then: Callable[[], None]) -> None:
    delay = 0.5
    while True:
        try:
            await store.open()
        except Exception as exc:  # not only unreachable: a migration that failed is tried again too, never dropped
            log.warning("projection store still unavailable (%s); retrying in %.0fs", mask_urls(str(exc)), delay)
            await asyncio.sleep(delay)  # backoff between attempts
            delay = min(delay * 2, 15.0)
            continue
        log.info("projection store reachable: projecting")
        then()
        return


def store_from(rt: Runtime) -> ProviderStore:
    """SUPABASE_URL+SUPABASE_KEY alone selects Supabase; else PROJECTION_URL; else SQLite under the data dir."""
    s = rt.settings
    url = s.projection_url or (None if s.supabase_url else f"sqlite:///{s.data_dir / 'haggle.db'}")
    return open_store(url, supabase_url=s.supabase_url, supabase_key=s.supabase_key)


async def start(rt: Runtime, *, consume: bool = True) -> ServiceHandle:
    store = store_from(rt)
    handle = ServiceHandle("projector")
    handle.store = store  # type: ignore[attr-defined]
    projector = Projector(store) if consume else None

    def begin() -> None:
        if projector is not None:
            handle.consume(rt, "projector", projector.handle, ordered=True)

    try:
        await store.open()
        begin()
    except ConnectionError as exc:
        # The store being down must not stop the services beside us (`haggle up`): serve, answer 503 from the
        # store's routes, and start projecting once it answers (the consumer's position waits on the stream).
        log.error("projection store unavailable at start (%s); retrying in the background", mask_urls(str(exc)))
        handle.background(_open_when_reachable(store, begin), "open-store")
    handle.routers.append(build_router(ApiDeps(
        store=store, publish=rt.publisher.publish, api_key=rt.settings.api_key, js=rt.js, projector=projector,
        projection_wait_s=PROJECTION_WAIT_S,
        publish_first=functools.partial(rt.publisher.publish, first_on_subject=True),
    )))
    s = rt.settings
    media = (TwilioMedia(s.twilio_account_sid, s.twilio_auth_token, s.twilio_api_base_url, s.twilio_http_timeout_s)
             if s.twilio_account_sid and s.twilio_auth_token else None)
    dashboard = DashboardDeps(store=store, nc=rt.nc, js=rt.js, api_key=rt.settings.api_key,
                              publish=rt.publisher.publish, twilio_media=media)
    handle.routers.append(build_dashboard_router(dashboard))
    handle.on_stop.append(dashboard.close)  # ends open live feeds, which uvicorn would otherwise wait on
    handle.on_close.append(store.close)
    return handle
