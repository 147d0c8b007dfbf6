"""Push clients for ``make scale``, in a process of their own (so that the server's
figures are the server's): N SSE streams or WebSockets on one asyncio loop, and
optionally far-behind SSE streams that ask for 999 ticks back and never read (opened
once the others are steady, so that what their replays cost the others is measured).

Each client notes every tick it sees (the SSE ``id``, the WebSocket document's ``tick``)
and when, and reconnects as EventSource does (SSE resumes with ``Last-Event-ID``). On
SIGTERM or SIGINT the process prints one JSON summary on stdout: how many connected,
how many saw every tick from their first to the last without a gap or a repeat, the
delay from each tick's start to its arrival once all are connected (p50, p99, max), the
longest silence a client went through (a restart's outage, as the clients lived it),
and reconnects.

``python -m bench.push_clients --url http://127.0.0.1:5000 --transport sse --clients
1000 --tick 3``; ``--ready-file F`` is written once every client has seen a tick.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import os
import re
import signal
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAMP_BATCH = 250  # connections opened at once, then a breath
RECONNECT_SECONDS = 2.0


@dataclass
class Seen:
    """What one client saw: each tick, when it arrived, and after its tick's start."""

    ticks: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    connections: int = 0
    received: int = 0  # bytes, as read from the socket (headers and framing included)

    def saw(self, tick: int, tick_seconds: float) -> None:
        now = time.time()
        self.ticks.append(tick)
        self.arrivals.append(now)
        self.delays.append(now - tick * tick_seconds)


class SseProtocol(asyncio.Protocol):
    """An SSE stream read as bytes arrive (no HTTP client library: at 10,000 streams the
    clients' own parsing would otherwise be most of the delay measured): each ``id: N``
    line is a tick seen. Chunked framing lines never hold ``id: `` and are skipped."""

    def __init__(self, seen: Seen, tick_seconds: float, request: bytes) -> None:
        self.seen, self.tick_seconds, self.request = seen, tick_seconds, request
        self.pending = b""
        self.last_id: str | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)
        self.seen.connections += 1

    def data_received(self, data: bytes) -> None:
        self.seen.received += len(data)
        self.pending += data
        start = 0
        while (found := self.pending.find(b"id: ", start)) >= 0:
            end = self.pending.find(b"\n", found)
            if end < 0:
                break
            self.last_id = self.pending[found + 4 : end].decode()
            self.seen.saw(int(self.last_id), self.tick_seconds)
            start = end
        self.pending = self.pending[start:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def sse_client(host: str, port: int, seen: Seen, tick_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    last_id: str | None = None
    while True:
        resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
        request = (
            f"GET /v1/prices/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n"
        ).encode()
        try:
            _, protocol = await loop.create_connection(
                lambda request=request: SseProtocol(seen, tick_seconds, request),  # type: ignore[misc]
                host,
                port,
            )
            await protocol.closed
            last_id = protocol.last_id or last_id
        except OSError:
            pass
        await asyncio.sleep(RECONNECT_SECONDS)


TICK_IN_DOCUMENT = re.compile(rb'"tick": ?(\d+)')


def next_frame(data: bytes) -> tuple[int, bool, bytes, int] | None:
    """The first whole server frame in ``data`` (RFC 6455, 5.2; a server's are unmasked):
    its opcode, whether it is compressed (RSV1, RFC 7692), its payload and its length in
    ``data``; None if it has not all arrived."""
    if len(data) < 2:
        return None
    opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
    if length == 126:
        if len(data) < 4:
            return None
        length, start = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        if len(data) < 10:
            return None
        length, start = int.from_bytes(data[2:10], "big"), 10
    if len(data) < start + length:
        return None
    return opcode, bool(data[0] & 0x40), data[start : start + length], start + length


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame (masked, as RFC 6455 requires of clients) of a short payload."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[n % 4] for n, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class WebSocketProtocol(asyncio.Protocol):
    """A WebSocket read as bytes arrive (no client library, as for SSE): the handshake's
    101, then each text frame's document, whose ``"tick"`` is the tick seen; pings are
    answered, as the server drops a client that does not."""

    def __init__(self, seen: Seen, tick_seconds: float, request: bytes) -> None:
        self.seen, self.tick_seconds, self.request = seen, tick_seconds, request
        self.pending = b""
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.seen.received += len(data)
        self.pending += data
        if not self.open:
            end = self.pending.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.pending.startswith(b"HTTP/1.1 101"):
                self.transport.close()
                return
            self.open, self.pending = True, self.pending[end + 4 :]
            self.seen.connections += 1
        while (frame := next_frame(self.pending)) is not None:
            opcode, compressed, payload, length = frame
            self.pending = self.pending[length:]
            if compressed:  # no context taken over: each message inflates alone
                payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            if opcode == 0x1 and (tick := TICK_IN_DOCUMENT.search(payload)):
                self.seen.saw(int(tick.group(1)), self.tick_seconds)
            elif opcode == 0x9:
                self.transport.write(masked_frame(0xA, payload))
            elif opcode == 0x8:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def websocket_client(
    host: str, port: int, seen: Seen, tick_seconds: float, deflate: bool = False
) -> None:
    loop = asyncio.get_running_loop()
    offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    while True:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /v1/prices/ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n{offer}"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        try:
            _, protocol = await loop.create_connection(
                lambda request=request: WebSocketProtocol(seen, tick_seconds, request),  # type: ignore[misc]
                host,
                port,
            )
            await protocol.closed
        except OSError:
            pass
        await asyncio.sleep(RECONNECT_SECONDS)


def far_behind(host: str, port: int, path: str, tick: int) -> socket.socket:
    """A stream asking for 999 ticks back on a socket that is never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nLast-Event-ID: {tick - 1000}\r\n\r\n".encode()
    )
    return sock


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def summary(clients: list[Seen], far: int, steady_from: float | None) -> dict[str, Any]:
    """``steady_from``: the delays counted are of ticks that arrived after it (once every
    client was connected and a tick had passed), not those of the ramp, when the server
    was busy accepting thousands of connections."""
    complete = gaps = repeats = 0
    longest_silence = 0.0
    for seen in clients:
        ticks = seen.ticks
        missing = sum(max(0, b - a - 1) for a, b in itertools.pairwise(ticks))
        repeated = sum(1 for a, b in itertools.pairwise(ticks) if b <= a)
        gaps += missing
        repeats += repeated
        complete += bool(ticks) and missing == 0 and repeated == 0
        silences = [b - a for a, b in zip(seen.arrivals, seen.arrivals[1:], strict=False)]
        longest_silence = max([longest_silence, *silences])
    delays = [
        delay
        for seen in clients
        for delay, arrived in zip(seen.delays[1:], seen.arrivals[1:], strict=True)
        if steady_from is None or arrived >= steady_from
    ]  # not the first: a client's first tick is the current one, not a new one
    return {
        "clients": len(clients),
        "far_behind": far,
        "connected": sum(1 for seen in clients if seen.connections),
        "complete": complete,
        "ticks_missed": gaps,
        "ticks_repeated": repeats,
        "reconnects": sum(max(0, seen.connections - 1) for seen in clients),
        "events": sum(len(seen.ticks) for seen in clients),
        "bytes_per_event": round(
            sum(seen.received for seen in clients) / max(1, sum(len(s.ticks) for s in clients)), 1
        ),
        "delay_p50_s": percentile(delays, 0.50),
        "delay_p99_s": percentile(delays, 0.99),
        "delay_max_s": max(delays, default=None),
        "longest_silence_s": longest_silence,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    clients = [Seen() for _ in range(args.clients)]
    steady_from: float | None = None
    held: list[socket.socket] = []
    host, port = args.url.removeprefix("http://").split(":")
    tasks = []
    for start in range(0, args.clients, RAMP_BATCH):
        for seen in clients[start : start + RAMP_BATCH]:
            if args.transport == "sse":
                reader = sse_client(host, int(port), seen, args.tick)
            else:
                reader = websocket_client(host, int(port), seen, args.tick, args.deflate)
            tasks.append(asyncio.create_task(reader))
        await asyncio.sleep(0.2)
    if args.ready_file:
        while not stop.is_set() and not all(seen.ticks for seen in clients):
            await asyncio.sleep(0.2)
        steady_from = time.time() + args.tick  # the ramp's last fan-outs are over
    if args.far_behind:  # once the others are steady, so that their replays are measured
        await asyncio.sleep(max(0.0, (steady_from or time.time()) - time.time()))
        tick = int(time.time() // args.tick)
        held = await loop.run_in_executor(
            None,
            lambda: [
                far_behind(host, int(port), "/v1/prices/stream", tick)
                for _ in range(args.far_behind)
            ],
        )
    if args.ready_file:
        Path(args.ready_file).write_text("ready")
    await stop.wait()
    for task in tasks:
        task.cancel()
    for sock in held:
        sock.close()
    return summary(clients, args.far_behind, steady_from)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--transport", choices=("sse", "websocket"), default="sse")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--far-behind", type=int, default=0)
    parser.add_argument("--tick", type=float, default=3.0)
    parser.add_argument("--ready-file")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    print(json.dumps(asyncio.run(run(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
