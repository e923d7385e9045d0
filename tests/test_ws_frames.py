"""WebSocket framing (RFC 6455 section 5): what the gateway's two links parse and build."""

from __future__ import annotations

import struct

import pytest
from haggle_gateway import ws_frames as wf
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader


def client_reader(max_size: int = 1 << 20) -> wf.FrameReader:
    return wf.FrameReader(masked=True, max_size=max_size)


def masked_raw(b0: int, payload: bytes) -> bytes:
    """A masked frame with a chosen first byte (FIN, RSV bits, opcode), payload under 126 bytes."""
    key = b"\x01\x02\x03\x04"
    return bytes((b0, 0x80 | len(payload))) + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_round_trips_both_ways(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert client_reader().feed(wf.client_frame(wf.OP_TEXT, payload)) == [(wf.OP_TEXT, payload)]
    server_reader = wf.FrameReader(masked=False, max_size=1 << 20)
    assert server_reader.feed(wf.server_frame(wf.OP_BINARY, payload)) == [(wf.OP_BINARY, payload)]


def test_our_frames_are_what_websockets_reads() -> None:
    """The reference parser (the websockets library) reads what we build, masked and unmasked."""
    for mask, data in ((True, wf.client_frame(wf.OP_TEXT, b"x" * 300)), (False, wf.server_frame(wf.OP_TEXT, b"y"))):
        reader = StreamReader()
        reader.feed_data(data)
        parser = Frame.parse(reader.read_exact, mask=mask)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
        assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == (b"x" * 300 if mask else b"y")


def test_frames_split_at_any_byte_come_out_whole_and_in_order() -> None:
    stream = (wf.client_frame(wf.OP_TEXT, b"first") + wf.client_frame(wf.OP_PING, b"p")
              + wf.client_frame(wf.OP_BINARY, b"z" * 200))
    for cut in range(len(stream) + 1):
        reader = client_reader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == [(wf.OP_TEXT, b"first"), (wf.OP_PING, b"p"), (wf.OP_BINARY, b"z" * 200)], cut
        assert reader.buffered == 0


def test_a_fragmented_message_is_joined_and_a_ping_between_fragments_comes_first() -> None:
    data = (masked_raw(wf.OP_TEXT, b"Hel") + masked_raw(0x80 | wf.OP_PING, b"!")
            + masked_raw(wf.OP_CONT, b"lo ") + masked_raw(0x80 | wf.OP_CONT, b"there"))
    assert client_reader().feed(data) == [(wf.OP_PING, b"!"), (wf.OP_TEXT, b"Hello there")]


@pytest.mark.parametrize(("data", "code"), [
    (masked_raw(0x80 | 0x40 | wf.OP_TEXT, b"x"), wf.CLOSE_PROTOCOL_ERROR),  # RSV1: compression was not agreed
    (wf.server_frame(wf.OP_TEXT, b"x"), wf.CLOSE_PROTOCOL_ERROR),  # a client frame without a mask
    (masked_raw(0x80 | 0x3, b"x"), wf.CLOSE_PROTOCOL_ERROR),  # reserved opcode
    (masked_raw(wf.OP_PING, b"x"), wf.CLOSE_PROTOCOL_ERROR),  # a fragmented control frame
    (masked_raw(0x80 | wf.OP_CONT, b"x"), wf.CLOSE_PROTOCOL_ERROR),  # continuation of nothing
    (masked_raw(wf.OP_TEXT, b"a") + masked_raw(0x80 | wf.OP_TEXT, b"b"), wf.CLOSE_PROTOCOL_ERROR),
    (wf.client_frame(wf.OP_TEXT, b"x" * 101), wf.CLOSE_TOO_BIG),
    (masked_raw(wf.OP_TEXT, b"x" * 60) + masked_raw(0x80 | wf.OP_CONT, b"x" * 60), wf.CLOSE_TOO_BIG),
    (masked_raw(0x80 | wf.OP_CLOSE, b"\x03"), wf.CLOSE_PROTOCOL_ERROR),  # half a close code
    (masked_raw(0x80 | wf.OP_CLOSE, wf.close_payload(1006)), wf.CLOSE_PROTOCOL_ERROR),  # never on the wire
    (masked_raw(0x80 | wf.OP_CLOSE, b"\x03\xe8\xff"), wf.CLOSE_INVALID_DATA),  # reason not UTF-8
], ids=["rsv1", "unmasked", "opcode", "fragmented-control", "orphan-continuation", "interleaved", "too-big",
        "too-big-joined", "close-1-byte", "close-1006", "close-reason"])
def test_rule_breaking_frames_name_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(wf.FrameError) as err:
        client_reader(max_size=100).feed(data)
    assert err.value.code == code


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = bytes((0x80 | wf.OP_BINARY, 0x80 | 127)) + struct.pack("!Q", 1 << 40)
    with pytest.raises(wf.FrameError) as err:
        client_reader().feed(header)
    assert err.value.code == wf.CLOSE_TOO_BIG


def test_messages_before_a_bad_frame_in_the_same_read_are_kept() -> None:
    data = wf.client_frame(wf.OP_TEXT, b"good") + masked_raw(0x80 | 0x40 | wf.OP_TEXT, b"bad")
    with pytest.raises(wf.FrameError) as err:
        client_reader().feed(data)
    assert err.value.messages == [(wf.OP_TEXT, b"good")]


def test_close_payloads() -> None:
    assert wf.parse_close(wf.close_payload(1008, "policy")) == (1008, "policy")
    assert wf.parse_close(b"") == (wf.CLOSE_NO_STATUS, "")
    assert wf.close_payload(wf.CLOSE_NO_STATUS) == b""
    long = wf.close_payload(1000, "é" * 200)
    assert len(long) <= 125 and long[2:].decode("utf-8") == "é" * 61  # a control frame's limit, whole characters


def test_a_ping_between_fragments_does_not_count_toward_the_message_size() -> None:
    data = masked_raw(wf.OP_TEXT, b"12345678") + masked_raw(0x80 | wf.OP_PING, b"abcde")
    data += masked_raw(0x80 | wf.OP_CONT, b"9")
    assert client_reader(max_size=10).feed(data) == [(wf.OP_PING, b"abcde"), (wf.OP_TEXT, b"123456789")]


def test_a_large_frame_over_many_reads_is_joined_once() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    frame = wf.server_frame(wf.OP_BINARY, payload)
    reader = wf.FrameReader(masked=False, max_size=1 << 21)
    got: list[tuple[int, bytes]] = []
    for start in range(0, len(frame), 4096):
        got += reader.feed(frame[start:start + 4096])
        assert len(reader._buf) <= 4096 * 2  # the reads wait in a list, not in an ever-growing joined buffer
    assert got == [(wf.OP_BINARY, payload)]


def test_the_one_whole_frame_path_keeps_every_rule() -> None:
    """A read holding exactly one medium-sized frame takes a shortcut; the rules hold there too."""
    payload = b"m" * 300
    assert client_reader().feed(wf.client_frame(wf.OP_TEXT, payload)) == [(wf.OP_TEXT, payload)]
    rsv = bytearray(wf.client_frame(wf.OP_TEXT, payload))
    rsv[0] |= 0x40
    unmasked = wf.server_frame(wf.OP_TEXT, payload)
    for data, code in ((bytes(rsv), wf.CLOSE_PROTOCOL_ERROR), (unmasked, wf.CLOSE_PROTOCOL_ERROR),
                       (wf.client_frame(wf.OP_TEXT, payload), wf.CLOSE_TOO_BIG)):
        with pytest.raises(wf.FrameError) as err:
            client_reader(max_size=299 if code == wf.CLOSE_TOO_BIG else 1 << 20).feed(data)
        assert err.value.code == code
