"""A real HTTP server on loopback that answers from a script: for client tests that need
answers the price service would never give (malformed payloads, 503s, silence)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    body: bytes | str | Mapping[str, object] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def quote_body(
    price: float = 100.0, tick: int = 1000, tick_seconds: float = 3.0
) -> dict[str, object]:
    return {
        "price": price,
        "symbol": "BTC",
        "tick": tick,
        "updated_at": tick * tick_seconds,
        "next_update_at": (tick + 1) * tick_seconds,
        "timestamp": time.time(),
    }


class ScriptedServer:
    """Answers requests in order from ``script``; the last answer repeats."""

    def __init__(self, script: list[Answer]) -> None:
        self.script = script
        self.requests: list[dict[str, str]] = []
        self.answered: list[int] = []  # the status of each answer sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index = len(server.requests)
                server.requests.append({"path": self.path, **dict(self.headers)})
                answer = server.script[min(index, len(server.script) - 1)]
                time.sleep(answer.delay)
                body = answer.body
                if isinstance(body, Mapping):
                    body = json.dumps(body)
                data = body.encode() if isinstance(body, str) else body
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                server.answered.append(answer.status)

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class SilentServer:
    url: str
    held: list[socket.socket]  # connections accepted and never answered

    @property
    def accepted(self) -> int:
        return len(self.held)


@contextmanager
def silent_server() -> Iterator[SilentServer]:
    """Accepts connections and never answers: the client's timeouts must save it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    server = SilentServer(f"http://127.0.0.1:{listener.getsockname()[1]}", [])
    stopping = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
                server.held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stopping.set()
        thread.join()
        for conn in server.held:
            conn.close()
        listener.close()
