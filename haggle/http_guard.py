"""ASGI guards every HTTP route gets, whichever service serves it: a body size limit and a cross-origin check.

- Bodies over `max_body_bytes` get 413, decided from Content-Length when there is one and by counting the
  bytes as they arrive otherwise (a chunked body is cut off at the limit, never buffered whole).
- A state-changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming from another origin
  (`Origin` naming another host, or `Sec-Fetch-Site: cross-site`) gets 403: a page elsewhere cannot make the
  operator's browser start calls. Twilio's webhooks and API clients send neither header and are not affected.
WebSockets pass through (the media stream has its own frame limits).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

ASGIApp = Any
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DRAIN_FACTOR = 16
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class _TooLarge(Exception):
    pass


class HttpGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["method"] in UNSAFE and _cross_origin(headers):
            await _answer(send, 403, "cross-origin request refused")
            return
        too_large = f"the body is larger than {self.max_body_bytes} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._drain(receive, int(length))
            await _answer(send, 413, too_large)
            return
        received = 0
        started = False
        finished = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, finished
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.max_body_bytes:
                    raise _TooLarge
            return message

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                if not finished:
                    await self._drain(receive, received)
                await _answer(send, 413, too_large)

    async def _drain(self, receive: Any, size: int) -> None:
        """Read and drop the rest of a refused body, so the client (still sending) reads the 413 rather than a
        reset. Only up to DRAIN_FACTOR times the limit: past that the connection is closed mid-upload."""
        if size > self.max_body_bytes * DRAIN_FACTOR:
            return
        drained = 0
        while drained <= self.max_body_bytes * DRAIN_FACTOR:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def _cross_origin(headers: dict[str, str]) -> bool:
    if headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file: pages, some redirects: never the dashboard itself
        return True
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    return urlsplit(origin).netloc.lower() != host.split(",")[0].strip().lower()


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class AllowedMethods:
    """`OPTIONS` answers 204 with the path's methods, and a 405 lists all of them in `Allow`.

    Starlette routes each method of a path separately (GET /jobs and POST /jobs are two routes), so its own
    405 lists only the methods of the first route that matched the path, and OPTIONS gets 405. RFC 9110 and the
    OpenAPI document both mean every method the resource supports."""

    def __init__(self, app: ASGIApp, *, routes: Any) -> None:
        self.app = app
        self.routes = routes  # the app's route list (read at request time: routers may be added later)

    def _methods(self, scope: dict[str, Any]) -> set[str]:
        # Ask the routes themselves, method by method: included routers nest theirs, and `matches` sees through.
        from starlette.routing import Match

        methods: set[str] = set()
        for method in METHODS:
            probe = {**scope, "method": method}
            if any(route.matches(probe)[0] == Match.FULL for route in self.routes):
                methods.add(method)
        return methods

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        methods = self._methods(scope)
        if not methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(methods | {"OPTIONS"})).encode()
        if scope["method"] == "OPTIONS" and "OPTIONS" not in methods:
            await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_allow(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow)]}
            await send(message)

        await self.app(scope, receive, send_with_allow)
