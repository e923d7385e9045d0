"""A local stand-in for xAI's `POST /v1/chat/completions`, for the extractor's tests and the demo.

It speaks the OpenAI-compatible shape xAI uses (docs/xai-realtime.md, "Chat completions") over real HTTP on
127.0.0.1, checks what a real endpoint would refuse (Bearer key, a strict `json_schema` response_format) and
answers in one of several modes, so the client's retries and the offline fallback can be tested without the network:

- "ok": runs the offline extractor on the transcript found in the request (plausible answers);
- "fixed": answers the `result` dict it was given;
- "http500": always 500; "flaky": 500 for the first `fail_first` requests, then "ok";
- "timeout": holds the request until the stand-in closes (past any sane client timeout);
- "malformed": a 200 whose message content is not JSON.

Every request body is kept in `.requests` (parsed JSON) and its headers in `.headers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from typing import Any, Literal

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from haggle_extractor.offline import TranscriptError, extract_offline

from haggle_sim.http_server import serve_app

log = logging.getLogger(__name__)

Mode = Literal["ok", "fixed", "http500", "timeout", "malformed", "flaky"]
MODES: tuple[str, ...] = ("ok", "fixed", "http500", "timeout", "malformed", "flaky")
_SCHEMA_FIELDS = ("agreed", "price", "initial_quote", "price_type", "conditions", "evidence", "outcome")


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


class XaiChatStandin:
    """`async with XaiChatStandin(mode="ok") as xai:` then point the client at `xai.base_url`."""

    def __init__(
        self,
        mode: Mode = "ok",
        *,
        api_key: str = "test-xai-key",
        result: dict[str, Any] | None = None,
        fail_first: int = 1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if mode == "fixed" and result is None:
            raise ValueError('mode "fixed" needs result={...}')
        self.mode: Mode = mode
        self.api_key = api_key
        self.result = result
        self.fail_first = fail_first
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.base_url = ""
        self._ids = itertools.count(1)
        self._release = asyncio.Event()
        self._http = contextlib.AsyncExitStack()
        self.app = FastAPI()
        self.app.add_api_route("/v1/chat/completions", self._handle, methods=["POST"])

    async def __aenter__(self) -> XaiChatStandin:
        self._release.clear()
        served = await self._http.enter_async_context(serve_app(self.app, name="xAI chat stand-in"))
        self.base_url = f"{served.base_url}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._release.set()  # let held ("timeout") requests finish so the server can stop
        await self._http.aclose()

    async def _handle(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return _error(400, "request body is not JSON", "invalid_request_error")
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided", "invalid_request_error", "invalid_api_key")
        problem = _check_body(body)
        if problem:
            return _error(400, problem, "invalid_request_error")

        mode = self.mode
        if mode == "flaky":
            mode = "http500" if len(self.requests) <= self.fail_first else "ok"
        if mode == "http500":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if mode == "timeout":
            await self._release.wait()
            return _error(504, "stand-in released at shutdown", "server_error")
        if mode == "malformed":
            return self._completion(body, "Sure! The agreed price was $150.")
        if mode == "fixed":
            return self._completion(body, json.dumps(self.result))
        transcript = _transcript_in(body)
        if transcript is None:
            return _error(400, "no transcript JSON found in the user message", "invalid_request_error")
        try:
            x = extract_offline(transcript)
        except TranscriptError as exc:
            return _error(400, f"bad transcript: {exc}", "invalid_request_error")
        answer = {k: v for k, v in msgspec.to_builtins(x).items() if k in _SCHEMA_FIELDS}
        return self._completion(body, json.dumps(answer))

    def _completion(self, body: dict[str, Any], content: str) -> JSONResponse:
        prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
        completion = max(1, len(content) // 4)
        return JSONResponse({
            "id": f"chatcmpl-standin-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "grok-4.3"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
            }],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "system_fingerprint": "fp_standin",
        })


def _check_body(body: Any) -> str | None:
    """What a strict structured-output request must have; a message for the first thing missing."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model is required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and m.get("role") in ("system", "user", "assistant") and isinstance(m.get("content"), str)
        for m in messages
    ):
        return "messages must be a non-empty list of {role, content}"
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return "response_format.type must be json_schema"
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not spec.get("name") or spec.get("strict") is not True:
        return "response_format.json_schema needs a name and strict: true"
    schema = spec.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "response_format.json_schema.schema must be an object schema"
    props = schema.get("properties")
    if not isinstance(props, dict) or sorted(schema.get("required", [])) != sorted(props):
        return "a strict schema must list every property as required"
    if schema.get("additionalProperties") is not False:
        return "a strict schema must set additionalProperties: false"
    return None


def _transcript_in(body: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The transcript JSON embedded in the last user message ({"transcript": [...]} or a bare list)."""
    users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
    if not users:
        return None
    text = users[-1]
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        try:
            value, _ = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("transcript"), list):
            return value["transcript"]
        if isinstance(value, list):
            return value
    return None

