"""``make soak``: the production shape at half its measured capacity for 10 minutes
(SOAK_SECONDS), sampling worker memory, open file descriptors and metrics files.

Writes bench/soak.json; bench/RESULTS.md shows it (regenerated here when bench results
exist). Not part of `make test`: it takes minutes, and it reports rather than asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench import BENCH, BIN, NO_LIMIT, free_port, redis_server, require, serve, wrk
from bench.procfs import children
from service.config import Settings

SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = 15


def process_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return {"rss_kib": rss_kib, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def main() -> None:
    require("wrk", "redis-server")
    with tempfile.TemporaryDirectory(prefix="crypto-soak-") as scratch, redis_server() as redis_uri:
        workdir = Path(scratch)
        env = {
            "WORKERS": "2",
            "RATE_LIMIT": NO_LIMIT,
            "RATE_LIMIT_STORAGE_URI": redis_uri,
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        }
        port = free_port()
        url = f"http://127.0.0.1:{port}/crypto-price"
        with serve([str(BIN / "crypto-service")], env, port) as master:
            wrk(url, 2)
            capacity = wrk(url, 10)["rps"]
            rate = capacity / 2
            connections = 16
            script = workdir / "paced.lua"
            script.write_text(f"function delay() return {connections * 1000 / rate:.3f} end\n")
            load = subprocess.Popen(
                [
                    "wrk",
                    "-t2",
                    f"-c{connections}",
                    f"-d{SECONDS}s",
                    "--latency",
                    "-s",
                    str(script),
                    url,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            samples: list[dict[str, Any]] = []
            started = time.monotonic()
            while load.poll() is None:
                workers = children(master.pid)
                figures = [process_figures(pid) for pid in workers]
                samples.append(
                    {
                        "t": round(time.monotonic() - started),
                        "worker_rss_kib": [f["rss_kib"] for f in figures],
                        "worker_fds": [f["fds"] for f in figures],
                        "master": process_figures(master.pid),
                        "metrics_files": len(list((workdir / "metrics").glob("*.db"))),
                    }
                )
                print(samples[-1], flush=True)
                time.sleep(SAMPLE_EVERY)
            output = load.stdout.read() if load.stdout else ""
    achieved = float(output.split("Requests/sec:")[1].split()[0])
    steady = [s for s in samples if s["t"] >= 30] or samples
    first, last = steady[0], steady[-1]
    result = {
        "shape": f"{env['WORKERS']} {Settings.from_env(env).worker_class} workers, Redis",
        "seconds": SECONDS,
        "capacity_rps": capacity,
        "target_rps": rate,
        "achieved_rps": achieved,
        "first": first,
        "last": last,
        "worker_rss_growth_kib": [
            b - a for a, b in zip(first["worker_rss_kib"], last["worker_rss_kib"], strict=False)
        ],
        "worker_fd_growth": [
            b - a for a, b in zip(first["worker_fds"], last["worker_fds"], strict=False)
        ],
        "samples": samples,
    }
    (BENCH / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    results = BENCH / "results.json"
    if results.exists():
        from bench.report import write_report

        write_report(json.loads(results.read_text()))


if __name__ == "__main__":
    main()
