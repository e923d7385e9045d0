"""`free_port` hands out ports that an outgoing connection cannot take before the server binds them."""

from __future__ import annotations

import socket

from haggle.nats_embedded import _ephemeral_floor, free_port


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    floor = _ephemeral_floor()
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # picked at random, not one fixed port
    for port in ports:
        assert port < floor
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing listens there


def test_a_port_in_use_is_never_handed_out() -> None:
    floor = _ephemeral_floor()
    taken: list[socket.socket] = []
    try:
        for _ in range(200):  # hold many ports: every one handed out afterwards is still bindable
            s = socket.socket()
            s.bind(("127.0.0.1", 0) if not taken else ("127.0.0.1", free_port()))
            s.listen()
            taken.append(s)
        held = {s.getsockname()[1] for s in taken}
        for _ in range(50):
            port = free_port()
            assert port not in held and port < floor
    finally:
        for s in taken:
            s.close()
