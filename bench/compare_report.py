"""bench/COMPARE.md and bench/compare.png from the figures of ``make compare``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.scale import _bound as scale_bound
from bench.scale import goals_table
from bench.scale import readme_table as scale_table

BENCH = Path(__file__).resolve().parent


LABELS = {
    "poll-fixed-2s": "poll every 2 s (the seed's loop)",
    "poll-aligned": "poll, tick-aligned (`crypto-poll`)",
    "long-poll": "long-poll (`Prefer: wait`)",
    "sse": "Server-Sent Events",
    "websocket": "WebSocket",
}
SPREAD_NOTE = (
    "A poller's delay is set by its own schedule, not by the server: the seed's loop polls "
    "every 2 s whatever the tick, `crypto-poll` polls within its spread (0.25 s by "
    "default) after each tick."
)


def write_report(results: dict[str, Any]) -> None:
    runs: dict[str, dict[str, float]] = results["runs"]
    lines = [
        "# Polling or push? (`make compare`)",
        "",
        f"One run on this machine: each transport alone against `crypto-service` in its "
        f"default shape (one gevent worker, `memory://`), for {results['ticks']} ticks of "
        f"{results['tick_seconds']:g} s, the clients in one asyncio process on the same "
        "cores. Bytes are read at the socket (TCP_INFO), both directions, HTTP headers "
        "included; delay is from a tick's start to the client holding its price (the "
        "client's parsing included), fan-out the server's own time from the first "
        "connection written to the last (its histogram's bucket); CPU is the server's "
        "over the run, per client-hour (none where it would rest on fewer than 100 clock "
        "ticks); memory is the server's RSS with every client open (read half way) less "
        "before any, per client (noisy at 10 clients). " + SPREAD_NOTE,
        "",
        "| transport | clients | requests / change | bytes up / change | bytes down / change "
        "| delay p50 | delay p99 | fan-out p99 (server) | server CPU s / client-hour "
        "| server KiB / client (live) | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, run in runs.items():
        transport, _ = key.split("/")
        lines.append(
            f"| {transport} | {run['clients']:.0f} | {run['requests_per_change']:.2f} "
            f"| {run['bytes_up_per_change']:.0f} | {run['bytes_down_per_change']:.0f} "
            f"| {_ms(run['delay_p50_s'])} | {_ms(run['delay_p99_s'])} "
            f"| {_bound(run['fanout_p99_le_s'])} | {_cpu(run)} "
            f"| {run['live_memory_kib_per_client']:.1f} | {run['failures']:.0f} |"
        )
    scale_path = BENCH / "scale.json"
    if scale_path.exists():
        report = json.loads(scale_path.read_text())
        lines += [
            "",
            "## At scale (`make scale`, bench/scale.json)",
            "",
            "The clients in their own process; see bench/SCALE.md for every figure.",
            "",
            scale_table(report),
            "",
            goals_table(report),
        ]
    (BENCH / "COMPARE.md").write_text("\n".join(lines) + "\n")
    _chart(runs)


def readme_table(results: dict[str, Any], size: int = 1000) -> str:
    """The README's table: every transport at ``size`` clients, from compare.json (a test
    holds the README to it)."""
    lines = [
        f"| transport ({size:,} clients) | requests | bytes up | bytes down "
        "| tick to seen p50 / p99 | fan-out p99 (server) | server CPU s per client-hour "
        "| server KiB per client (live) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for transport, label in LABELS.items():
        run = results["runs"][f"{transport}/{size}"]
        lines.append(
            f"| {label} | {run['requests_per_change']:.2f} | {run['bytes_up_per_change']:.0f} "
            f"| {run['bytes_down_per_change']:.0f} "
            f"| {run['delay_p50_s'] * 1000:.0f} / {run['delay_p99_s'] * 1000:.0f} ms "
            f"| {_bound(run['fanout_p99_le_s'])} | {_cpu(run)} "
            f"| {run['live_memory_kib_per_client']:.1f} |"
        )
    return "\n".join(lines)


def readme_findings(results: dict[str, Any]) -> str:
    """The README's figures about the comparison, computed from compare.json."""
    runs = results["runs"]
    sizes = sorted({int(key.split("/")[1]) for key in runs})

    def at(transport: str, size: int, figure: str) -> float:
        return float(runs[f"{transport}/{size}"][figure])

    def total(transport: str, size: int) -> float:
        return at(transport, size, "bytes_up_per_change") + at(
            transport, size, "bytes_down_per_change"
        )

    big = max(sizes)
    saved = [1 - total("poll-aligned", n) / total("poll-fixed-2s", n) for n in sizes]
    push = [total(t, n) for t in ("sse", "websocket") for n in sizes]
    return "\n".join(
        [
            f"* A poll costs {total('poll-aligned', big):.0f} bytes per price change here "
            f"({at('poll-aligned', big, 'bytes_up_per_change'):.0f} up, "
            f"{at('poll-aligned', big, 'bytes_down_per_change'):.0f} down: headers, body "
            f"and the connection's first request spread over the {results['ticks']} ticks); "
            f"a pushed price {_span(push, '.0f')} bytes.",
            "* Tick-aligned polling against the seed's 2 s loop: "
            f"{at('poll-aligned', big, 'requests_per_change'):.2f} requests per change "
            f"instead of {at('poll-fixed-2s', big, 'requests_per_change'):.2f}, "
            f"{_span(saved, '.0%')} fewer bytes, the price seen at p50 "
            f"{at('poll-aligned', min(sizes), 'delay_p50_s'):.2f} s instead of "
            f"{at('poll-fixed-2s', min(sizes), 'delay_p50_s'):.2f} s at {min(sizes)} clients "
            f"and {at('poll-aligned', big, 'delay_p50_s'):.2f} s at {big:,}, where every "
            "poller arrives within the spread after each tick.",
            f"* At {big:,} clients, against tick-aligned polling: SSE costs the server "
            f"{at('sse', big, 'cpu_s_per_client_hour') / at('poll-aligned', big, 'cpu_s_per_client_hour'):.0%} "
            f"of the CPU per client and {total('sse', big) / total('poll-aligned', big):.0%} "
            "of the bytes, WebSocket "
            f"{at('websocket', big, 'cpu_s_per_client_hour') / at('poll-aligned', big, 'cpu_s_per_client_hour'):.0%} "
            f"and {total('websocket', big) / total('poll-aligned', big):.0%}.",
        ]
    )


def _span(values: list[float], spec: str) -> str:
    """``min-max`` of ``values`` as formatted, or the one value when they read the same."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}-{high}"


def _cpu(run: dict[str, float]) -> str:
    cpu = run["cpu_s_per_client_hour"]
    return "below the clock's resolution" if math.isnan(cpu) else f"{cpu:.2f}"


def _bound(seconds: float) -> str:
    return "-" if math.isnan(seconds) else scale_bound(seconds)


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _chart(runs: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transports = list(dict.fromkeys(key.split("/")[0] for key in runs))
    sizes = sorted({int(key.split("/")[1]) for key in runs})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(sizes)
    for index, size in enumerate(sizes):
        xs = [t + index * width for t in range(len(transports))]
        total = [
            runs[f"{t}/{size}"]["bytes_up_per_change"]
            + runs[f"{t}/{size}"]["bytes_down_per_change"]
            for t in transports
        ]
        delay = [runs[f"{t}/{size}"]["delay_p50_s"] * 1000 for t in transports]
        axes[0].bar(xs, total, width, label=f"{size} clients")
        axes[1].bar(xs, delay, width, label=f"{size} clients")
    for axis, title in zip(
        axes, ("bytes per price change per client", "delay p50 (ms)"), strict=True
    ):
        axis.set_xticks(
            [t + 0.4 - width / 2 for t in range(len(transports))], transports, rotation=20
        )
        axis.set_title(title)
        axis.legend()
    figure.tight_layout()
    figure.savefig(BENCH / "compare.png", dpi=90)
