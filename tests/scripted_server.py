"""A real HTTP server on loopback that answers from a script: for client tests that need
answers the price service would never give (malformed payloads, 503s, silence)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


class RawServer:
    """Answers each connection with the bytes ``reply(request_head)`` returns (or yields,
    part by part, as a server streaming over time would), then closes it: for answers no
    HTTP library would write (a WebSocket's frames, broken streams, close-delimited
    bodies)."""

    def __init__(self, reply: Callable[[bytes], bytes | Iterable[bytes]]) -> None:
        self.reply = reply
        self.connections = 0
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                try:
                    reply = self.reply(head)
                    for part in [reply] if isinstance(reply, bytes) else reply:
                        conn.sendall(part)
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(4096)  # until the client has read and closed (or 5 s)
                except OSError:
                    pass

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopping.set()
        self._thread.join()
        self._listener.close()


def websocket_accept(head: bytes) -> bytes:
    """The 101 answer to a WebSocket handshake (RFC 6455: the key's SHA-1 with the GUID)."""
    key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head)
    assert key is not None, head
    digest = hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + base64.b64encode(digest) + b"\r\n\r\n"
    )


def websocket_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A server's (unmasked) frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([127]) + struct.pack("!Q", len(payload))
    return head + payload
