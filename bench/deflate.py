"""``make deflate``: permessage-deflate (RFC 7692) for the pushed documents, measured on
and off, so that the WebSocket's default (off) rests on a figure.

The documents are the service's own: ``service.push.document`` for consecutive ticks of
every symbol (what a WebSocket with no ``symbols=`` gets). Three ways to send them:

* ``off``: the frame as the service sends it.
* ``shared``: what the service sends (``service.fanout.deflated_frame``): each message
  compressed alone (``server_no_context_takeover``), so one compression per tick serves
  every connection; its CPU per message is that of one compression divided by the
  connections (10,000 here; per tick, the whole).
* ``per_connection``: each connection's own compressor kept across messages (context
  takeover, the extension's default); a compression per connection and message, and a
  compressor held by every connection (its memory read with tracemalloc, which sees
  zlib's allocations).

CPU is process time over at least ``LEAST_CPU_SECONDS`` of compressing (so that no
figure rests on a few clock ticks). Writes bench/deflate.json.
"""

from __future__ import annotations

import json
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

from service.app import create_app
from service.fanout import deflated_frame, render
from service.push import document
from service.state import get_state

ROOT = Path(__file__).resolve().parents[1]
TICKS = 2000
LEAST_CPU_SECONDS = 2.0
CONNECTIONS = 10_000
HELD = 200  # compressors held at once to read the memory of one


def documents(ticks: int = TICKS) -> list[str]:
    state = get_state(create_app())
    first = state.feed.tick_at(time.time())
    step = state.settings.price_tick_seconds
    return [
        document(state.feed, state.feed.symbols, tick, tick * step)
        for tick in range(first, first + ticks)
    ]


def deflated(compressor: zlib._Compress, data: bytes) -> bytes:
    """One message's payload as RFC 7692 sends it: the sync flush's tail removed."""
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


def frame_bytes(payload: int) -> int:
    """A server frame's size (RFC 6455: 2, 4 or 10 bytes of header, no mask)."""
    return payload + (2 if payload < 126 else 4 if payload < 65536 else 10)


def cpu_per_message(compress_all: Any, messages: int) -> float:
    """Seconds of CPU per message, repeating the run until it took LEAST_CPU_SECONDS."""
    rounds, started = 0, time.process_time()
    while (spent := time.process_time() - started) < LEAST_CPU_SECONDS:
        compress_all()
        rounds += 1
    return spent / (rounds * messages)


def measure(texts: list[str]) -> dict[str, Any]:
    payloads = [text.encode() for text in texts]
    sizes_off = [frame_bytes(len(p)) for p in payloads]

    def shared() -> list[bytes]:  # as the service sends it: a whole frame
        return [deflated_frame(p) for p in payloads]

    def per_connection() -> list[bytes]:
        compressor = zlib.compressobj(wbits=-15)
        return [deflated(compressor, p) for p in payloads]

    render_cpu = cpu_per_message(lambda: [render(1, t) for t in texts], len(texts))
    shared_cpu = cpu_per_message(shared, len(payloads))
    own_cpu = cpu_per_message(per_connection, len(payloads))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = []
    for _ in range(HELD):
        compressor = zlib.compressobj(wbits=-15)
        deflated(compressor, payloads[0])
        held.append(compressor)
    compressor_bytes = (tracemalloc.get_traced_memory()[0] - before) / HELD
    tracemalloc.stop()

    def row(frames: list[int], cpu: float, **more: Any) -> dict[str, Any]:
        return {
            "bytes_per_message": round(sum(frames) / len(frames), 1),
            "bytes_saved_share": round(1 - sum(frames) / sum(sizes_off), 3),
            "cpu_per_message_us": round(cpu * 1e6, 2),
            **more,
        }

    return {
        "messages": len(payloads),
        "document_bytes_mean": round(sum(map(len, payloads)) / len(payloads), 1),
        "render_cpu_per_tick_us": round(render_cpu * 1e6, 2),  # every form, compressed too
        "off": row(sizes_off, 0.0, memory_per_connection_kib=0),
        "shared": row(
            [len(frame) for frame in shared()],
            shared_cpu / CONNECTIONS,
            cpu_per_tick_us=round(shared_cpu * 1e6, 2),
            connections=CONNECTIONS,
            memory_per_connection_kib=0,
        ),
        "per_connection": row(
            [frame_bytes(len(p)) for p in per_connection()],
            own_cpu,
            memory_per_connection_kib=round(compressor_bytes / 1024, 1),
        ),
    }


def readme_line(report: dict[str, Any]) -> str:
    """The README's figures on permessage-deflate, from deflate.json (a test holds it)."""
    off, shared, own = report["off"], report["shared"], report["per_connection"]
    return (
        f"A pushed document is {off['bytes_per_message']:.0f} bytes on the wire uncompressed; "
        f"compressed alone (one compression a tick for every connection) "
        f"{shared['bytes_per_message']:.0f} bytes ({shared['bytes_saved_share']:.0%} less) "
        f"for {shared['cpu_per_tick_us']:.0f} µs of CPU a tick; with each connection's own "
        f"compressor {own['bytes_per_message']:.0f} bytes ({own['bytes_saved_share']:.0%} "
        f"less) for {own['cpu_per_message_us']:.1f} µs per message and "
        f"{own['memory_per_connection_kib']:.0f} KiB held per connection."
    )


def main() -> None:
    report = measure(documents())
    (ROOT / "bench" / "deflate.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
