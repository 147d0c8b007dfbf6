"""bench/COMPARE.md and bench/compare.png from the figures of ``make compare``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


def write_report(results: dict[str, Any]) -> None:
    runs: dict[str, dict[str, float]] = results["runs"]
    lines = [
        "# Polling or push? (`make compare`)",
        "",
        f"One run on this machine: each transport alone against `crypto-service` in its "
        f"default shape (one gevent worker, `memory://`), for {results['ticks']} ticks of "
        f"{results['tick_seconds']:g} s. Bytes are read at the socket (TCP_INFO), both "
        "directions, HTTP headers included; delay is from a tick's start to the client "
        "holding its price; CPU and memory are the server's, per client.",
        "",
        "| transport | clients | requests / change | bytes up / change | bytes down / change "
        "| delay p50 | delay p99 | server CPU s / client-hour | server KiB / client | failures |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, run in runs.items():
        transport, _ = key.split("/")
        lines.append(
            f"| {transport} | {run['clients']:.0f} | {run['requests_per_change']:.2f} "
            f"| {run['bytes_up_per_change']:.0f} | {run['bytes_down_per_change']:.0f} "
            f"| {_ms(run['delay_p50_s'])} | {_ms(run['delay_p99_s'])} "
            f"| {run['cpu_s_per_client_hour']:.2f} | {run['memory_kib_per_client']:.1f} "
            f"| {run['failures']:.0f} |"
        )
    scale = results.get("scale")
    if scale:
        lines += ["", "## Scale: streams and polls at once", ""]
        for transport, run in scale.items():
            answered = run.get("request_p99_s", math.nan)
            lines.append(
                f"* {run['clients']:.0f} x {transport}: {run['changes_per_client']:.1f} "
                f"changes seen per client (the fewest {run.get('fewest_changes', math.nan):.0f}, "
                f"{run.get('skipped_ticks', math.nan):.0f} ticks skipped in all), tick to seen p50 "
                f"{_ms(run['delay_p50_s'])}, p99 {_ms(run['delay_p99_s'])}"
                + (f", request p99 {_ms(answered)}" if not math.isnan(answered) else "")
                + f", {run['failures']:.0f} failures"
            )
    (BENCH / "COMPARE.md").write_text("\n".join(lines) + "\n")
    _chart(runs)


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
