"""A closed door by default, over real HTTP on a real system: no open bind without a key, JSON only, no
cross-origin writes, a body limit on every route, /metrics behind the key (or on METRICS_PORT), and a signed
dashboard session instead of the key in a cookie."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from haggle_projector.api import session_token

from haggle import bus
from haggle.config import Settings
from haggle.nats_embedded import free_port
from haggle.system import System, start_system

HAGGLE = str(Path(sys.executable).parent / "haggle")
KEY = "door-key"
JOB = {"problem": "leak", "zip_code": "94110", "max_price": 100,
       "providers": [{"service_provider": "A", "phone_number": "+14155550101"}]}


async def run_cli(tmp_path: Path, **env: str) -> tuple[int, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("HAGGLE_")}
    proc = await asyncio.create_subprocess_exec(
        HAGGLE, "run", "projector", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**keep, "HAGGLE_DATA_DIR": str(tmp_path), "PORT": "0", **env})
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_an_open_bind_refuses_to_start(tmp_path: Path) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"
    code, err = await run_cli(tmp_path, HAGGLE_HOST="0.0.0.0", NATS_URL=nowhere, NATS_CONNECT_TIMEOUT_SECONDS="1")
    [line] = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and "HAGGLE_API_KEY is not set: refusing to serve an open API" in line
    # The explicit opt-out gets past the check (and then fails on the NATS that is not there).
    code, err = await run_cli(tmp_path, HAGGLE_HOST="0.0.0.0", NATS_URL=nowhere, NATS_CONNECT_TIMEOUT_SECONDS="1",
                              HAGGLE_INSECURE_NO_AUTH="1")
    assert code == 2 and "refusing" not in err and "NATS unreachable" in err


@pytest.fixture(params=[KEY, None], ids=["key", "no-key"])
async def system(request: pytest.FixtureRequest, nc, nats_server, tmp_path: Path) -> AsyncIterator[System]:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 's.db'}", port=0,
                        api_key=request.param)
    running = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    yield running
    await running.stop(5)


def client(system: System, **kw: object) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {KEY}"} if system.settings.api_key else {}
    return httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False, headers=headers, **kw)  # type: ignore[arg-type]


async def test_a_cross_origin_text_plain_post_is_refused(system: System, nc) -> None:
    import json

    body = json.dumps(JOB)
    async with client(system) as http:
        # What a page on another site can send without a preflight: a "simple" text/plain POST.
        evil = await http.post("/jobs", content=body, headers={"Content-Type": "text/plain",
                                                                "Origin": "http://evil.example"})
        assert evil.status_code == 403
        plain = await http.post("/jobs", content=body, headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415
        form = await http.post("/ui/new", data={"problem": "x", "zip_code": "1", "max_price": "5",
                                                "providers": "A, +14155550101"},
                               headers={"Origin": "http://evil.example"})
        assert form.status_code == 403
        same = await http.post("/jobs", json=JOB, headers={"Origin": system.base_url})
        assert same.status_code == 201, same.text
    jobs = [s async for s in bus.replay(nc.jetstream(), "haggle.job.*.started")]
    assert len(jobs) == 1


async def test_a_3mb_body_gets_413(system: System) -> None:
    big = {**JOB, "context_answers": "x" * 3_000_000}
    async with client(system) as http:
        r = await http.post("/jobs", json=big)
        assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(30):
                yield b"y" * 100_000

        r = await http.post("/jobs", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = await http.post("/ui/login", content=b"k" * 3_000_000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413


async def test_metrics_need_the_key_or_their_own_port(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'm.db'}", port=0, api_key=KEY)
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    try:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False) as http:
            assert (await http.get("/metrics")).status_code == 401
            ok = await http.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
            assert ok.status_code == 200 and "haggle_events_handled_total" in ok.text
    finally:
        await system.stop(5)
    port = free_port()
    system = await start_system(settings.with_(metrics_port=port), ["projector"], nats_url=nats_server.url, port=0)
    try:
        async with httpx.AsyncClient(timeout=15, trust_env=False) as http:
            assert (await http.get(f"{system.base_url}/metrics")).status_code == 404
            r = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert r.status_code == 200 and "haggle_projection_errors_total" in r.text
    finally:
        await system.stop(5)


async def test_the_session_cookie_is_a_signed_token_not_the_key(nc, nats_server, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, projection_url=f"sqlite:///{tmp_path / 'c.db'}", port=0, api_key=KEY)
    system = await start_system(settings, ["projector"], nats_url=nats_server.url, port=0)
    try:
        async with httpx.AsyncClient(base_url=system.base_url, timeout=15, trust_env=False) as http:
            assert (await http.get("/jobs", headers={"Cookie": f"haggle_session={KEY}"})).status_code == 401
            assert (await http.get("/jobs", headers={"Cookie": f"haggle_key={KEY}"})).status_code == 401
            expired = session_token(KEY, now=0)
            assert (await http.get("/jobs", headers={"Cookie": f"haggle_session={expired}"})).status_code == 401
            forged = session_token("another-key")
            assert (await http.get("/jobs", headers={"Cookie": f"haggle_session={forged}"})).status_code == 401
            login = await http.post("/ui/login", data={"key": KEY, "next": "/"})
            assert login.status_code == 303 and KEY not in login.headers["set-cookie"]
            assert (await http.get("/jobs")).status_code == 200  # the client carries the session cookie
    finally:
        await system.stop(5)


REPO = Path(__file__).resolve().parents[1]


def test_the_deploy_nats_nodes_require_a_password() -> None:
    from haggle.nats_embedded import server_binary

    for conf in sorted((REPO / "deploy/nats").glob("n*.conf")):
        env = {k: v for k, v in os.environ.items() if k != "NATS_PASSWORD"}
        without = subprocess.run([server_binary(), "-t", "-c", str(conf)], env=env, capture_output=True, text=True)
        assert without.returncode != 0 and "NATS_PASSWORD" in without.stderr + without.stdout, conf
        with_pw = subprocess.run([server_binary(), "-t", "-c", str(conf)], env={**env, "NATS_PASSWORD": "pw"},
                                 capture_output=True, text=True)
        assert with_pw.returncode == 0, with_pw.stderr
    compose = (REPO / "deploy/compose.yaml").read_text()
    assert "nats://haggle:${NATS_PASSWORD:?" in compose and "HAGGLE_API_KEY: ${HAGGLE_API_KEY:?" in compose


async def test_the_deploy_auth_block_refuses_anonymous_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The authorization block of deploy/nats/n1.conf, verbatim, on a loopback node: password in, anonymous out."""
    from haggle.nats_embedded import EmbeddedNats

    text = (REPO / "deploy/nats/n1.conf").read_text()
    block = text[text.index("authorization {"):text.index("}", text.index("authorization {")) + 1]
    port = free_port()
    conf = tmp_path / "auth.conf"
    conf.write_text(f"listen: 127.0.0.1:{port}\n{block}\njetstream {{ store_dir: \"{tmp_path / 'js'}\" }}\n")
    monkeypatch.setenv("NATS_PASSWORD", "deploy-secret")  # what compose hands the node container
    node = EmbeddedNats(tmp_path / "node", port=port, config_file=conf).start()
    try:
        with pytest.raises(bus.NatsUnreachable) as refused:
            await bus.connect(f"nats://127.0.0.1:{port}", name="anonymous", deadline_s=3)
        assert "deploy-secret" not in str(refused.value)
        nc = await bus.connect(f"nats://haggle:deploy-secret@127.0.0.1:{port}", name="signed-in", deadline_s=10)
        await nc.close()
    finally:
        node.stop()
