"""``make scale``: the push path at the scale people pick push for, measured from the
server's side, on this machine, with the clients on it too (in their own process,
``bench.push_clients``).

The service runs in its default shape (one gevent worker, ``memory://``) with only the
per-client budgets raised (every client shares one address); SCALE_WORKER_CONNECTIONS
sets ``WORKER_CONNECTIONS`` (unset: the service's default). Rows:

* ``sse`` and ``websocket``: N connections for SCALE_SECONDS; every client must see every
  tick from its first to the last, none twice; the delay from each tick's start to its
  arrival (clients' clock, p50/p99); the server's own fan-out time per tick (first
  connection to last, from its ``stream_fanout_seconds`` histogram, p99); live memory
  per open connection (the worker's RSS with all open, read while open, less its RSS
  before any opened) and the kernel's TCP memory (``/proc/net/sockstat``, its highest
  through the window, both ends since both are on this machine); the worker's CPU per delivered event over the window
  ("below the clock's resolution" when that rests on fewer than 100 clock ticks); four
  pollers beside them (statuses, p99).
* ``far_behind``: far-behind clients that ask for 999 ticks back and never read, beside
  normal streams (opened once those are steady, so that their replays fall in the
  measured window): the normal ones must miss nothing; the worker's RSS sampled once they
  hang (from two ticks after they opened); the streams the server ended by reason (its
  ``stream_ends_total``: the far-behind ones are the slow-consumer row, dropped once a
  write to them times out).
* ``restart``: N SSE streams, the service SIGTERMed and a new one started on the same
  port: the longest silence a client went through, and ticks lost.

Writes bench/scale.json and bench/SCALE.md. SCALE_ROWS picks rows (``sse,websocket``),
SCALE_SSE etc. their sizes.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench.bench import NO_LIMIT, free_port
from bench.procfs import CLOCK_TICKS, children, cpu_of
from service.metrics import FANOUT_BUCKETS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TICK = 3.0  # the service's default
SECONDS = float(os.environ.get("SCALE_SECONDS", "45"))
SIZES = {
    "sse": int(os.environ.get("SCALE_SSE", "10000")),
    "websocket": int(os.environ.get("SCALE_WEBSOCKET", "5000")),
    "websocket_deflate": int(os.environ.get("SCALE_WEBSOCKET", "5000")),
    "websocket_10k": int(os.environ.get("SCALE_WEBSOCKET_10K", "10000")),
    "far_behind": int(os.environ.get("SCALE_FAR_BEHIND", "300")),
    "beside_far_behind": int(os.environ.get("SCALE_BESIDE_FAR_BEHIND", "2000")),
    "restart": int(os.environ.get("SCALE_RESTART", "5000")),
}
ORDER = ("sse", "websocket", "websocket_deflate", "websocket_10k", "far_behind", "restart")
ROWS = os.environ.get("SCALE_ROWS", ",".join(ORDER)).split(",")
# SCALE_MERGE=1: the rows run replace their namesakes in the committed scale.json, the
# others are kept (each row is a service of its own; each says when it ran).
MERGE = os.environ.get("SCALE_MERGE") == "1"
STREAM_ROWS = {  # row: (transport, the clients' extra arguments, its name in the tables)
    "sse": ("sse", (), "SSE"),
    "websocket": ("websocket", (), "WebSocket"),
    "websocket_deflate": ("websocket", ("--deflate",), "WebSocket, deflate"),
    "websocket_10k": ("websocket", (), "WebSocket"),
}
POLLERS = 4
WORKER_CONNECTIONS = os.environ.get("SCALE_WORKER_CONNECTIONS")  # unset: the default
LEAST_CLOCK_TICKS = 100  # fewer, and a CPU figure is noise


def env(port: int, workdir: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "RATE_LIMIT": NO_LIMIT,
        "MAX_STREAMS_PER_CLIENT": "100000",
        **({"WORKER_CONNECTIONS": WORKER_CONNECTIONS} if WORKER_CONNECTIONS else {}),
        "LOG_LEVEL": "warning",
    }


@contextmanager
def service(port: int, workdir: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [str(BIN / "crypto-service")],
        env=env(port, workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: answers(port), 30, "the service")
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok
    except requests.RequestException:
        return False


def wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def buckets(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str
) -> dict[float, float]:
    """A histogram's buckets (of the one series whose labels include ``match``)."""
    return {
        float(labels["le"]): value
        for labels, value in samples.get(name, [])
        if all(labels.get(key) == wanted for key, wanted in match.items())
    }


def quantile(before: dict[float, float], after: dict[float, float], share: float) -> float | None:
    """The bucket bound under which ``share`` of the window's observations fall."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    if not counts or counts[-1][1] <= 0:
        return None
    for bound, count in counts:
        if count >= share * counts[-1][1]:
            return bound
    return None


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RSS for {pid}")


def tcp_memory() -> int:
    """The kernel's memory for TCP sockets, all of them, in bytes (/proc/net/sockstat)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


class Pollers:
    """POLLERS clients polling /v1/prices every half second beside the streams."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/v1/prices"
        self.statuses: list[int] = []
        self.latencies: list[float] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.poll) for _ in range(POLLERS)]

    def poll(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status = session.get(self.url, timeout=10).status_code
            except requests.RequestException:
                status = 0
            self.latencies.append(time.monotonic() - started)
            self.statuses.append(status)
            self.stop.wait(0.5)

    def __enter__(self) -> Pollers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "polls": len(self.statuses),
            "not_200": sum(1 for status in self.statuses if status != 200),
            "p99_s": ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
            if ordered
            else None,
        }


@contextmanager
def clients(port: int, workdir: Path, *args: str) -> Iterator[dict[str, Any]]:
    """The client process; yields a dict that holds its summary once it stopped."""
    ready = workdir / f"ready-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.push_clients",
            "--url",
            f"http://127.0.0.1:{port}",
            "--tick",
            str(TICK),
            "--ready-file",
            str(ready),
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    result: dict[str, Any] = {}
    try:
        wait_for(lambda: ready.exists() or process.poll() is not None, 600, "every client")
        yield result
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
        result.update(json.loads(out))


def measured(port: int, worker: int, seconds: float) -> dict[str, Any]:
    """The server over ``seconds`` with the clients connected: CPU, events, fan-out."""
    before, cpu_before, started = scrape(port), cpu_of([worker]), time.monotonic()
    rss_open = rss(worker)
    sockets = []  # sampled through the window: between two ticks the buffers are empty
    while time.monotonic() - started < seconds:
        sockets.append(tcp_memory())
        time.sleep(0.25)
    after, cpu_after = scrape(port), cpu_of([worker])
    elapsed = time.monotonic() - started
    events = total(after, "stream_events_sent_total") - total(before, "stream_events_sent_total")
    cpu = cpu_after.total - cpu_before.total
    clock_ticks = round(cpu * CLOCK_TICKS)
    fanout = quantile(
        buckets(before, "stream_fanout_seconds_bucket"),
        buckets(after, "stream_fanout_seconds_bucket"),
        0.99,
    )
    # The pollers' requests as the server timed them (from reading the request to the
    # response handed to the socket): what of their delay is the server's.
    name, route = "http_request_duration_seconds_bucket", "/v1/prices"
    polls = quantile(buckets(before, name, route=route), buckets(after, name, route=route), 0.99)
    return {
        "window_s": round(elapsed, 1),
        "polls_server_p99_le_s": polls,
        "open": total(after, "streams_open"),
        "events": events,
        "worker_cpu_s": round(cpu, 2),
        "cpu_per_event_us": round(cpu / events * 1e6, 1)
        if events and clock_ticks >= LEAST_CLOCK_TICKS
        else "below the clock's resolution",
        "fanout_p99_le_s": fanout,
        "rss_open": rss_open,
        "tcp_memory_max": max(sockets),
    }


def row_streams(row: str, size: int, workdir: Path) -> dict[str, Any]:
    transport, extra, _ = STREAM_ROWS[row]
    port = free_port()
    with service(port, workdir / row) as process:
        (worker,) = children(process.pid)
        idle = rss(worker)
        args = ("--transport", transport, "--clients", str(size), *extra)
        with clients(port, workdir, *args) as seen, Pollers(port) as pollers:
            server = measured(port, worker, SECONDS)
        server["rss_per_connection_kib"] = round((server["rss_open"] - idle) / size / 1024, 1)
        # Both ends are on this machine: the kernel's figure holds the clients' sockets too.
        server["tcp_memory_max_per_connection_kib"] = round(
            server["tcp_memory_max"] / size / 1024, 2
        )
        return {"row": row, "size": size, "server": server, "clients": seen,
                "pollers": pollers.summary(), "rss_idle": idle}  # fmt: skip


def row_far_behind(far: int, normal: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    with service(port, workdir / "far_behind") as process:
        (worker,) = children(process.pid)
        idle = rss(worker)
        args = ("--clients", str(normal), "--far-behind", str(far))
        with clients(port, workdir, *args) as seen:
            # The far-behind ones open as the others are steady; their replays are written
            # (or stuck in full sockets) within a tick or two: then they hang.
            time.sleep(2 * TICK)
            samples = []
            for _ in range(int(SECONDS)):
                samples.append(rss(worker))
                time.sleep(1)
            # The server's own account, read while every client is still connected: how
            # many streams it ended and why (the far-behind ones, once their sockets and
            # queues are full: slow_consumer), and how many it holds open.
            server = scrape(port)
        ends: dict[str, float] = {}
        for labels, value in server.get("stream_ends_total", []):
            ends[labels["reason"]] = ends.get(labels["reason"], 0.0) + value
        return {"row": "far_behind", "size": normal, "far_behind": far, "clients": seen,
                "rss_idle": idle, "rss_samples": samples, "rss_min": min(samples),
                "rss_max": max(samples),
                "server_ends": ends, "server_open": total(server, "streams_open")}  # fmt: skip


def row_restart(size: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    with ExitStack() as first:
        first.enter_context(service(port, workdir / "restart-1"))
        with clients(port, workdir, "--clients", str(size)) as seen:
            time.sleep(3 * TICK)
            stopping = time.monotonic()
            first.close()  # SIGTERM, and wait for it to exit
            stopped_in = time.monotonic() - stopping
            with service(port, workdir / "restart-2"):
                time.sleep(30)
    return {"row": "restart", "size": size, "stop_s": round(stopped_in, 1), "clients": seen}


def main() -> None:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scale-") as directory:
        workdir = Path(directory)
        for row in ROWS:
            print(f"scale: {row}", file=sys.stderr, flush=True)
            if row in STREAM_ROWS:
                results.append(row_streams(row, SIZES[row], workdir))
            elif row == "far_behind":
                results.append(
                    row_far_behind(SIZES["far_behind"], SIZES["beside_far_behind"], workdir)
                )
            elif row == "restart":
                results.append(row_restart(SIZES["restart"], workdir))
            results[-1]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if MERGE:
        kept = json.loads((ROOT / "bench" / "scale.json").read_text())["rows"]
        ran = {row["row"] for row in results}
        results = [row for row in kept if row["row"] not in ran] + results
        results.sort(key=lambda row: ORDER.index(row["row"]))
    report = {"tick_seconds": TICK, "worker_connections": WORKER_CONNECTIONS, "rows": results}
    (ROOT / "bench" / "scale.json").write_text(json.dumps(report, indent=2) + "\n")
    (ROOT / "bench" / "SCALE.md").write_text(markdown(report))


def readme_table(report: dict[str, Any]) -> str:
    """The README's summary of the run: one line a row, every figure from scale.json (a
    test holds the README to it)."""
    lines = [
        "| run | clients | saw every tick | tick to seen p99 | fan-out p99 | "
        "memory / connection | CPU / event | bytes / event | pollers beside (p99) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["rows"]:
        seen = row["clients"]
        complete = f"{seen['complete']:,} of {seen['clients']:,}"
        if row["row"] in STREAM_ROWS:
            server, pollers = row["server"], row["pollers"]
            cpu = server["cpu_per_event_us"]
            lines.append(
                f"| {STREAM_ROWS[row['row']][2]} | {row['size']:,} "
                f"| {complete} | {_ms(seen['delay_p99_s'])} "
                f"| {_bound(server['fanout_p99_le_s'])} | {server['rss_per_connection_kib']} KiB "
                f"| {cpu if isinstance(cpu, str) else f'{cpu} µs'} "
                f"| {seen.get('bytes_per_event', '-')} "
                f"| {pollers['not_200']} not 200, {_ms(pollers['p99_s'])} |"
            )
        elif row["row"] == "far_behind":
            slow = dropped_as_slow(row)
            lines.append(
                f"| SSE beside {row['far_behind']} far-behind (slow consumers) | {row['size']:,} "
                f"| {complete} | {_ms(seen['delay_p99_s'])} | | RSS {row['rss_min'] / 2**20:.0f}-"
                f"{row['rss_max'] / 2**20:.0f} MiB while they hang | | | "
                f"dropped as slow: {slow:.0f} |"
            )
        elif row["row"] == "restart":
            lines.append(
                f"| SSE across a restart | {row['size']:,} | {complete} "
                f"| longest silence {seen['longest_silence_s']:.1f} s "
                f"| | | | | ticks missed: {seen['ticks_missed']} |"
            )
    return "\n".join(lines)


def rss_growth(row: dict[str, Any]) -> float:
    """How far the worker's RSS rose above its first sample once the far-behind clients
    hung (dropping them gives memory back: a fall is not growth)."""
    samples = row.get("rss_samples") or [row["rss_min"], row["rss_max"]]
    return float(max(samples) - samples[0])


def dropped_as_slow(row: dict[str, Any]) -> float:
    """Streams the server ended for not keeping up: a queue behind, or a write timed out."""
    ends = row["server_ends"]
    return float(ends.get("slow_consumer", 0) + ends.get("too_slow", 0))


FLAT_MIB = 4  # "memory flat while they hang": RSS grows by no more than this


def goals_table(report: dict[str, Any]) -> str:
    """Issue #20's goals against the run, each measured figure from scale.json."""
    lines = ["| goal | measured | met |", "| --- | --- | :---: |"]

    def goal(text: str, measured: str, met: bool) -> None:
        lines.append(f"| {text} | {measured} | {'yes' if met else '**no**'} |")

    for row in report["rows"]:
        seen, size = row["clients"], row["size"]
        every = seen["complete"] == seen["clients"] and not seen["ticks_repeated"]
        p99 = seen["delay_p99_s"] or math.inf
        if row["row"] in STREAM_ROWS:
            name = f"{size:,} {'SSE streams' if row['row'] == 'sse' else 'WebSockets'}"
            if row["row"] == "websocket_deflate":
                name += " with deflate"
            goal(f"{name}: every tick, none twice", f"{seen['complete']:,} of {size:,}", every)
            goal(f"{name}: tick to seen p99 ≤ 500 ms", _ms(p99), p99 <= 0.5)
            if row["row"] == "sse":
                server, pollers = row["server"], row["pollers"]
                cpu = server["cpu_per_event_us"]
                goal(
                    f"{name}: live memory ≤ 50 KiB per stream",
                    f"{server['rss_per_connection_kib']} KiB",
                    server["rss_per_connection_kib"] <= 50,
                )
                goal(
                    f"{name}: server CPU ≤ 30 µs per event",
                    cpu if isinstance(cpu, str) else f"{cpu} µs",
                    not isinstance(cpu, str) and cpu <= 30,
                )
                goal(
                    f"{name}: four pollers beside, all 200, p99 ≤ 250 ms",
                    f"{pollers['not_200']} not 200, {_ms(pollers['p99_s'])}",
                    not pollers["not_200"] and (pollers["p99_s"] or math.inf) <= 0.25,
                )
        elif row["row"] == "far_behind":
            name = f"{size:,} streams beside {row['far_behind']} far-behind"
            goal(f"{name}: none misses a tick", f"{seen['ticks_missed']} missed", every)
            goal(f"{name}: tick to seen p99 ≤ 300 ms", _ms(p99), p99 <= 0.3)
            grew = rss_growth(row) / 2**20
            goal(
                f"{name}: server memory flat while they hang (grows ≤ {FLAT_MIB} MiB)",
                f"grew {grew:.1f} MiB (RSS {row['rss_min'] / 2**20:.0f}-"
                f"{row['rss_max'] / 2**20:.0f} MiB)",
                grew <= FLAT_MIB,
            )
            slow = dropped_as_slow(row)
            goal(
                f"{name}: the far-behind ones ended by the server as slow "
                "(`slow_consumer` or `too_slow`)",
                f"{slow:.0f} of {row['far_behind']} (server's `stream_ends_total`)",
                slow >= row["far_behind"],
            )
        elif row["row"] == "restart":
            silence = seen["longest_silence_s"]
            goal(
                f"a restart under {size:,} SSE streams: every client back within 30 s",
                f"longest silence {silence:.1f} s",
                every and silence <= 30,
            )
            goal(
                f"a restart under {size:,} SSE streams: no tick lost",
                f"{seen['ticks_missed']} missed",
                not seen["ticks_missed"],
            )
    return "\n".join(lines)


def _bound(seconds: float | None) -> str:
    """A histogram quantile: the bound of its bucket (past the last: above that one)."""
    if seconds is None:
        return "none"
    if math.isinf(seconds):
        return f"over {_ms(FANOUT_BUCKETS[-1])}"
    return f"≤ {_ms(seconds)}"


def _ms(seconds: float | None) -> str:
    return "none" if seconds is None else f"{seconds * 1000:.0f} ms"


def markdown(report: dict[str, Any]) -> str:
    """bench/SCALE.md: the rows of scale.json, as written by the run."""
    lines = [
        "# The push path at scale (`make scale`)",
        "",
        "One run on this 2-core machine, the clients on it too (their own process): "
        "`crypto-service` in its default shape (one gevent worker, `memory://`) with the "
        "per-client budgets raised and `WORKER_CONNECTIONS="
        f"{report['worker_connections'] or '(default)'}`, ticks of {report['tick_seconds']:g} s. Delay is "
        "from a tick's start to a client holding it (the clients' clock), for the ticks "
        "after every client had connected; fan-out is the "
        "server's own time from handing a tick to the first connection to the last (the "
        "bound of its histogram bucket); memory per connection is the worker's RSS with all "
        "open, read while open, less its RSS before; CPU is the worker's over the window. "
        "Written by `bench/scale.py` from `bench/scale.json`.",
        "",
    ]
    lines += ["## Against issue #20's goals", "", goals_table(report), ""]
    for row in report["rows"]:
        seen = row["clients"]
        name = row["row"]
        if "measured_at" in row:
            lines += [f"*Row `{name}`, run {row['measured_at']}:*", ""]
        if name in STREAM_ROWS:
            server, pollers = row["server"], row["pollers"]
            cpu = server["cpu_per_event_us"]
            lines += [
                f"## {row['size']:,} {'SSE streams' if name == 'sse' else 'WebSockets'}"
                + (" (permessage-deflate offered)" if name == "websocket_deflate" else ""),
                "",
                "| figure | value |",
                "| --- | ---: |",
                f"| connected | {seen['connected']:,} of {seen['clients']:,} |",
                f"| saw every tick, none twice | {seen['complete']:,} |",
                f"| ticks missed, repeated | {seen['ticks_missed']}, {seen['ticks_repeated']} |",
                f"| tick to seen p50, p99 | {_ms(seen['delay_p50_s'])}, "
                f"{_ms(seen['delay_p99_s'])} |",
                f"| fan-out p99 (server) | {_bound(server['fanout_p99_le_s'])} |",
                f"| worker memory per open connection | {server['rss_per_connection_kib']} KiB |",
                "| kernel TCP memory per connection, both ends, highest | "
                f"{server['tcp_memory_max_per_connection_kib']} KiB |",
                f"| worker CPU per delivered event | "
                f"{cpu if isinstance(cpu, str) else f'{cpu} µs'} |",
                f"| events delivered in {server['window_s']} s | {server['events']:,.0f} |",
                f"| bytes received per event (clients' sockets) | "
                f"{seen.get('bytes_per_event', '-')} |",
                f"| pollers beside: polls, not 200, p99 | {pollers['polls']}, "
                f"{pollers['not_200']}, {_ms(pollers['p99_s'])} |",
                "| pollers beside: p99 as the server timed them | "
                f"{_bound(server.get('polls_server_p99_le_s'))} |",
                "",
            ]
        elif name == "far_behind":
            lines += [
                f"## {row['far_behind']} far-behind clients beside {row['size']:,} streams",
                "",
                "The far-behind ones ask for 999 ticks back and never read.",
                "",
                "| figure | value |",
                "| --- | ---: |",
                f"| normal streams that saw every tick | {seen['complete']:,} of "
                f"{seen['clients']:,} |",
                f"| ticks missed | {seen['ticks_missed']} |",
                f"| tick to seen p99 | {_ms(seen['delay_p99_s'])} |",
                f"| worker RSS while they hang: min, max | {row['rss_min'] / 2**20:.0f}, "
                f"{row['rss_max'] / 2**20:.0f} MiB |",
                *(
                    f"| streams the server ended as `{reason}` | {count:.0f} |"
                    for reason, count in sorted(row["server_ends"].items())
                    if count
                ),
                f"| streams the server held open at the end | {row['server_open']:.0f} |",
                "",
            ]
        elif name == "restart":
            lines += [
                f"## A restart under {row['size']:,} SSE streams",
                "",
                "SIGTERM, then a new server on the same port.",
                "",
                "| figure | value |",
                "| --- | ---: |",
                f"| old server gone after | {row['stop_s']} s |",
                f"| longest silence a client lived | {seen['longest_silence_s']:.1f} s |",
                f"| ticks missed (resumed with Last-Event-ID) | {seen['ticks_missed']} |",
                f"| clients that saw every tick | {seen['complete']:,} of {seen['clients']:,} |",
                "",
            ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()


def rewrite_reports() -> None:
    """bench/SCALE.md again from the committed bench/scale.json (no new run)."""
    report = json.loads((ROOT / "bench" / "scale.json").read_text())
    (ROOT / "bench" / "SCALE.md").write_text(markdown(report))
