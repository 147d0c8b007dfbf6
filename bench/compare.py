"""``make compare``: polling and its alternatives, side by side, measured.

For 10, 100 and 1,000 concurrent clients of each transport (poll at the seed's fixed 2 s,
poll tick-aligned, long-poll, SSE, WebSocket), for COMPARE_TICKS ticks against the
service in its default shape (``crypto-service`` with only the limit raised, since every
client shares one address): requests per price change per client; bytes per change per
client in each direction, HTTP headers included, read at the socket (TCP_INFO's
bytes_acked and bytes_received); delay from a tick's start to the client seeing it (p50,
p99) and, for pushes, the server's own fan-out time (p99); server CPU seconds per
client-hour (none where it would rest on fewer than 100 clock ticks) and live memory per
client (with every client open, less before any; from /proc); failures.

One asyncio process (aiohttp) holds every client of these runs. Then the push path at
scale (``bench.scale``: 10,000 SSE streams, WebSockets, far-behind clients, a restart,
with the clients in their own process), unless COMPARE_SCALE=0. Writes
bench/compare.json, bench/COMPARE.md, bench/compare.png (and bench/scale.json).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench import NO_LIMIT, free_port, serve
from bench.procfs import CLOCK_TICKS, children, cpu_of
from bench.scale import LEAST_CLOCK_TICKS, buckets, quantile, scrape

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TICK = 3.0  # the service's default tick
TICKS = int(os.environ.get("COMPARE_TICKS", "20"))
SIZES = tuple(int(n) for n in os.environ.get("COMPARE_SIZES", "10,100,1000").split(","))
# Then the push path at scale (bench/scale.py's rows, written to bench/scale.json, which
# the report shows too); "0" keeps the committed scale.json.
AT_SCALE = os.environ.get("COMPARE_SCALE", "1") != "0"
SPREAD = 0.25  # crypto-poll's default spread after a tick
TCP_INFO_BYTES = struct.Struct("=QQ")  # tcpi_bytes_acked, tcpi_bytes_received
TCP_INFO_OFFSET = 120  # after 8 one-byte fields, 24 u32 and two u64 pacing rates


def socket_bytes(sock: socket.socket | None) -> tuple[int, int] | None:
    """(sent and acknowledged, received) on this TCP connection so far, from the kernel."""
    if sock is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    sent, received = TCP_INFO_BYTES.unpack_from(info, TCP_INFO_OFFSET)
    return int(sent), int(received)


@dataclass
class Client:
    """One client's tally; its connections' byte counts are kept per socket, latest read."""

    requests: int = 0
    changes: int = 0
    failures: int = 0
    skipped: int = 0  # ticks that passed between two seen
    delays: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # of each poll's round trip
    last_tick: int | None = None
    # Keyed by the socket object itself (kept alive here, so no id is ever reused).
    sockets: dict[socket.socket, tuple[int, int]] = field(default_factory=dict)

    def saw(self, document: dict[str, Any], received_at: float) -> None:
        quote = document["prices"][0]
        if self.last_tick is not None and quote["tick"] > self.last_tick:
            self.changes += 1
            self.skipped += quote["tick"] - self.last_tick - 1
            self.delays.append(received_at - quote["updated_at"])
        if self.last_tick is None or quote["tick"] > self.last_tick:
            self.last_tick = quote["tick"]

    def new_socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The client's connector makes its sockets here (aiohttp's socket_factory), so
        every connection it opens is counted, however briefly it lives."""
        family, kind, proto = addr_info[:3]
        sock = socket.socket(family=family, type=kind, proto=proto)
        self.sockets[sock] = (0, 0)
        return sock

    def count_bytes(self) -> None:
        """Read each of the client's sockets' counters (a closed one keeps its last)."""
        for sock in self.sockets:
            counted = socket_bytes(sock)
            if counted is not None:
                self.sockets[sock] = counted

    @property
    def sent(self) -> int:
        return sum(sent for sent, _ in self.sockets.values())

    @property
    def received(self) -> int:
        return sum(received for _, received in self.sockets.values())


async def get_prices(
    session: aiohttp.ClientSession, client: Client, url: str, etag: str | None, wait: bool
) -> tuple[str | None, dict[str, Any] | None, bool]:
    """One request for /v1/prices: the new ETag, the document if fresh, whether it failed.
    ``wait`` makes it a long-poll (its time is then not request latency)."""
    headers = {"If-None-Match": etag} if etag else {}
    if etag and wait:
        headers["Prefer"] = "wait=30"
    sent = time.monotonic()
    try:
        async with session.get(f"{url}/v1/prices?symbols=BTC", headers=headers) as response:
            client.requests += 1
            body = await response.read()
            if not wait:
                client.latencies.append(time.monotonic() - sent)
            client.count_bytes()
            if response.status == 200:
                document: dict[str, Any] = json.loads(body)
                client.saw(document, time.time())
                return response.headers.get("ETag"), document, False
            if response.status == 304:
                return etag, None, False
    except (TimeoutError, aiohttp.ClientError):
        pass
    client.failures += 1
    return etag, None, True


async def aligned_poller(
    session: aiohttp.ClientSession, url: str, client: Client, until: float
) -> None:
    """Tick-aligned: the next poll just after the next tick (the interval is below it)."""
    etag: str | None = None
    next_tick: float | None = None
    await asyncio.sleep(random.uniform(0, TICK))
    while time.time() < until:
        etag, document, _ = await get_prices(session, client, url, etag, wait=False)
        if document is not None:
            next_tick = document["prices"][0]["next_update_at"]
        wake = (next_tick or time.time() + TICK) + random.uniform(0, SPREAD)
        await asyncio.sleep(max(0.0, wake - time.time()))


async def fixed_poller(
    session: aiohttp.ClientSession, url: str, client: Client, until: float
) -> None:
    """The seed client: a poll every 2 s, whatever the tick (conditional, as ours are)."""
    etag: str | None = None
    await asyncio.sleep(random.uniform(0, 2.0))
    while time.time() < until:
        etag, _, _ = await get_prices(session, client, url, etag, wait=False)
        await asyncio.sleep(2.0)


async def long_poller(
    session: aiohttp.ClientSession, url: str, client: Client, until: float
) -> None:
    etag: str | None = None
    while time.time() < until:
        etag, _, failed = await get_prices(session, client, url, etag, wait=True)
        if failed:
            await asyncio.sleep(1.0)


async def sse_reader(
    session: aiohttp.ClientSession, url: str, client: Client, until: float
) -> None:
    try:
        async with session.get(f"{url}/v1/prices/stream?symbols=BTC") as response:
            client.requests += 1
            if response.status != 200:
                client.failures += 1
                return
            async for line in response.content:
                if line.startswith(b"data: "):
                    client.saw(json.loads(line[6:]), time.time())
                    client.count_bytes()
                if time.time() >= until:
                    break
            client.count_bytes()
    except (TimeoutError, aiohttp.ClientError):
        client.failures += 1


async def websocket_reader(
    session: aiohttp.ClientSession, url: str, client: Client, until: float
) -> None:
    try:
        async with session.ws_connect(f"{url}/v1/prices/ws?symbols=BTC") as ws:
            client.requests += 1
            while time.time() < until:
                try:
                    message = await ws.receive(timeout=max(0.1, until - time.time()))
                except TimeoutError:
                    break
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                client.saw(json.loads(message.data), time.time())
                client.count_bytes()
            client.count_bytes()
    except (TimeoutError, aiohttp.ClientError):
        client.failures += 1


RUNNERS: dict[str, Callable[[aiohttp.ClientSession, str, Client, float], Awaitable[None]]] = {
    "poll-fixed-2s": fixed_poller,
    "poll-aligned": aligned_poller,
    "long-poll": long_poller,
    "sse": sse_reader,
    "websocket": websocket_reader,
}
TRANSPORTS = tuple(RUNNERS)  # in the report's order


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


async def drive(url: str, groups: list[tuple[str, int]], seconds: float) -> dict[str, list[Client]]:
    """Every group's clients at once, each with its own connection, for ``seconds``."""
    until = time.time() + seconds
    clients: dict[str, list[Client]] = {name: [Client() for _ in range(n)] for name, n in groups}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)

    async def one(name: str, client: Client) -> None:
        # A session (and connection pool) per client: its sockets' bytes are its own.
        connector = aiohttp.TCPConnector(limit=1, socket_factory=client.new_socket)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await RUNNERS[name](session, url, client, until)

    await asyncio.gather(*(one(name, c) for name, _ in groups for c in clients[name]))
    return clients


def summarise(
    clients: list[Client], seconds: float, cpu: float, live_memory: float
) -> dict[str, float]:
    n = len(clients)
    changes = sum(c.changes for c in clients) or 1
    delays = sorted(d for c in clients for d in c.delays)
    cuts = statistics.quantiles(delays, n=100, method="inclusive") if len(delays) > 1 else None
    latencies = [t for c in clients for t in c.latencies]
    latency_p99 = (
        statistics.quantiles(latencies, n=100, method="inclusive")[98]
        if len(latencies) > 1
        else math.nan
    )
    clock_ticks = round(cpu * CLOCK_TICKS)
    return {
        "clients": n,
        "changes_per_client": changes / n,
        "fewest_changes": float(min(c.changes for c in clients)),
        "skipped_ticks": float(sum(c.skipped for c in clients)),
        # After the first request, which only learns the starting price (as make bench).
        "requests_per_change": (sum(c.requests for c in clients) - n) / changes,
        "bytes_up_per_change": sum(c.sent for c in clients) / changes,
        "bytes_down_per_change": sum(c.received for c in clients) / changes,
        "delay_p50_s": cuts[49] if cuts else math.nan,
        "delay_p99_s": cuts[98] if cuts else math.nan,
        # Fewer clock ticks than LEAST_CLOCK_TICKS: the figure would be noise (NaN).
        "server_cpu_clock_ticks": float(clock_ticks),
        "cpu_s_per_client_hour": cpu / n / seconds * 3600
        if clock_ticks >= LEAST_CLOCK_TICKS
        else math.nan,
        "live_memory_kib_per_client": live_memory / n / 1024,
        "connections_per_client": sum(len(c.sockets) for c in clients) / n,
        "request_p99_s": latency_p99,  # polls only: how long the server took to answer
        "failures": float(sum(c.failures for c in clients)),
    }


def run_one(transport: str, size: int, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    """``size`` clients of ``transport`` for ``seconds``; the server's CPU over the run, its
    memory with every client open (read half way) less before any, and, for pushes, its
    own fan-out time per tick (p99 from its histogram), beside the clients' figures."""
    port = free_port()
    with serve([str(BIN / "crypto-service")], env, port) as process:
        url = f"http://127.0.0.1:{port}"
        pids = [process.pid, *children(process.pid)]
        rss_idle, cpu_before, before = rss_bytes(pids), cpu_of(pids).total, scrape(port)
        live: list[int] = []
        halfway = threading.Timer(seconds / 2, lambda: live.append(rss_bytes(pids)))
        halfway.start()
        clients = asyncio.run(drive(url, [(transport, size)], seconds))
        halfway.cancel()
        cpu = cpu_of(pids).total - cpu_before
        after = scrape(port)
    result = summarise(clients[transport], seconds, cpu, live[0] - rss_idle if live else math.nan)
    fanout = quantile(
        buckets(before, "stream_fanout_seconds_bucket"),
        buckets(after, "stream_fanout_seconds_bucket"),
        0.99,
    )
    result["fanout_p99_le_s"] = math.nan if fanout is None else fanout
    return result


def default_shape(directory: str) -> dict[str, str]:
    return {
        "RATE_LIMIT": NO_LIMIT,  # every client shares 127.0.0.1
        "MAX_STREAMS_PER_CLIENT": "100000",
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": directory,
    }


def main() -> None:
    seconds = TICKS * TICK
    results: dict[str, Any] = {"ticks": TICKS, "tick_seconds": TICK, "runs": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            for transport in TRANSPORTS:
                env = default_shape(f"{scratch}/{transport}-{size}")
                result = run_one(transport, size, seconds, env)
                results["runs"][f"{transport}/{size}"] = result
                print(f"{transport:14s} {size:5d} {json.dumps(result)}", flush=True)
    (ROOT / "bench" / "compare.json").write_text(json.dumps(results, indent=2) + "\n")
    if AT_SCALE:  # 10,000 streams and the rest, clients in their own process: scale.json
        from bench import scale

        scale.main()
    from bench.compare_report import write_report

    write_report(results)


if __name__ == "__main__":
    main()
