"""haggle.loop: uvloop by default where installed, the stdlib loop on request, a clear error for bad input."""

from __future__ import annotations

import asyncio

import pytest

from haggle import loop
from haggle.config import ConfigError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")
    assert loop.choose({}) == "uvloop"
    assert loop.run(_loop_module(), env={}).startswith("uvloop")


def test_asyncio_on_request() -> None:
    assert loop.choose({loop.ENV: "asyncio"}) == "asyncio"
    assert loop.run(_loop_module(), env={loop.ENV: " AsyncIO "}).startswith("asyncio")


def test_fallback_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "uvloop_available", lambda: False)
    assert loop.choose({}) == "asyncio"
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop.choose({loop.ENV: "uvloop"})


def test_bad_value_is_a_config_error_and_the_coroutine_is_closed() -> None:
    coro = _loop_module()
    with pytest.raises(ConfigError, match=loop.ENV):
        loop.run(coro, env={loop.ENV: "trio"})
    assert coro.cr_frame is None  # closed, not left pending
