"""The web dashboard: watch jobs and calls live, read transcripts, start a job from a form.

Served by the projector service on the operator API's port; see `routes.build_dashboard_router`.
"""

from .routes import DashboardDeps, build_dashboard_router

__all__ = ["DashboardDeps", "build_dashboard_router"]
