"""The scale run's raw WebSocket client reads what a server sends, whatever its length
and however the bytes are split (its figures are only as good as its parsing)."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode

from bench.push_clients import TICK_IN_DOCUMENT, masked_frame, next_frame
from service.fanout import render

LENGTHS = st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70_000]) | st.integers(0, 70_000)
PAYLOADS = st.builds(lambda length, byte: bytes([byte]) * length, LENGTHS, st.integers(0, 255))


@given(st.lists(PAYLOADS, min_size=1, max_size=4), st.data())
def test_server_frames_are_read_back_whole_however_they_arrive(
    payloads: list[bytes], data: st.DataObject
) -> None:
    server = FrameProtocol(client=False, extensions=[])
    stream = b"".join(bytes(server.send_data(p, fin=True)) for p in payloads)
    cut = data.draw(st.integers(0, len(stream)))
    read: list[bytes] = []
    pending = stream[:cut]
    for more in (b"", stream[cut:]):
        pending += more
        while (frame := next_frame(pending)) is not None:
            opcode, compressed, payload, length = frame
            assert opcode == Opcode.BINARY and not compressed
            read.append(payload)
            pending = pending[length:]
    assert read == payloads and pending == b""


@given(st.binary(max_size=125))
def test_a_pong_is_a_masked_frame_a_server_reads(payload: bytes) -> None:
    server = FrameProtocol(client=False, extensions=[])  # refuses unmasked client frames
    server.receive_bytes(masked_frame(0xA, payload))
    frames = list(server.received_frames())
    assert [(f.opcode, f.payload) for f in frames] == [(Opcode.PONG, payload)]


def test_the_tick_is_read_from_the_document() -> None:
    match = TICK_IN_DOCUMENT.search(b'{"prices": [{"symbol": "BTC", "tick": 5932811, "p": 1}]}')
    assert match is not None and match.group(1) == b"5932811"


def test_a_compressed_tick_is_read_as_the_service_sends_it() -> None:
    document = '{"prices": [{"symbol": "BTC", "tick": 42, "price": 64000.5}]}'
    frame = next_frame(render(42, document).deflated)
    assert frame is not None
    opcode, compressed, payload, _ = frame
    assert opcode == Opcode.TEXT and compressed
    inflated = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    assert inflated == document.encode()
