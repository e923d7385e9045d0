"""The projector service shell: the projection consumer plus the operator API that reads its store."""

from __future__ import annotations

from haggle.runtime import Runtime, ServiceHandle

from .api import ApiDeps, build_router
from .dashboard import DashboardDeps, build_dashboard_router
from .projector import Projector
from .stores import ProviderStore, open_store


def store_from(rt: Runtime) -> ProviderStore:
    """SUPABASE_URL+SUPABASE_KEY alone selects Supabase; else PROJECTION_URL; else SQLite under the data dir."""
    s = rt.settings
    url = s.projection_url or (None if s.supabase_url else f"sqlite:///{s.data_dir / 'haggle.db'}")
    return open_store(url, supabase_url=s.supabase_url, supabase_key=s.supabase_key)


async def start(rt: Runtime, *, consume: bool = True) -> ServiceHandle:
    store = store_from(rt)
    await store.open()
    handle = ServiceHandle("projector")
    handle.store = store  # type: ignore[attr-defined]
    projector = Projector(store) if consume else None
    if projector is not None:
        handle.consume(rt, "projector", projector.handle, ordered=True)
    handle.routers.append(build_router(ApiDeps(store=store, publish=rt.publisher.publish, api_key=rt.settings.api_key,
                                               js=rt.js, projector=projector)))
    dashboard = DashboardDeps(store=store, nc=rt.nc, js=rt.js, api_key=rt.settings.api_key,
                              publish=rt.publisher.publish)
    handle.routers.append(build_dashboard_router(dashboard))
    handle.on_stop.append(dashboard.close)  # ends open live feeds, which uvicorn would otherwise wait on
    handle.on_close.append(store.close)
    return handle
