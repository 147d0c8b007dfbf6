"""The push path against hostile, slow, dead and refused clients, under real gunicorn (the
default gevent worker): bounded memory, probes answered with every connection taken,
every stream ends on time, no 500 inside a WebSocket, leases and places freed, Origin
checked, and refusals an EventSource comes back from. Each is counted from the server's
side: its metrics, its log, its memory, Redis's own sets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import redis
import requests
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from client.sse import EventStream, split_lines
from tests.integration.conftest import HOST, RedisServer, Service, ServiceFactory, wait_until

# Twenty symbols: a document of about 2 KiB, so that a replay of 1,000 ticks (2 MiB) is
# more than the kernel's buffers hold for a client that reads nothing.
MANY_SYMBOLS = ",".join(f"S{n:02d}:{10 + n}" for n in range(20))
SMALL_BUFFER = 2048  # the client's receive buffer: a tiny window


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def connect(service: Service, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(10)
    sock.connect((HOST, service.port))
    return sock


def status_of(sock: socket.socket) -> tuple[int, bytes]:
    """The status and headers of the answer on ``sock`` (what follows stays unread)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise AssertionError(f"connection closed after {head!r}")
        head += chunk
    return int(head.split(b" ", 2)[1]), head


def open_stream(
    service: Service, path: str, *headers: str, buffer: int | None = None
) -> socket.socket:
    sock = connect(service, buffer)
    lines = "".join(f"{header}\r\n" for header in headers)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{service.port}\r\n{lines}\r\n".encode())
    return sock


class WsPeer:
    """A WebSocket client on a raw socket (wsproto): every byte under the test's control."""

    def __init__(
        self, service: Service, *headers: tuple[str, str], buffer: int | None = None
    ) -> None:
        self.sock = connect(service, buffer)
        self.ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=f"{HOST}:{service.port}",
            target="/v1/prices/ws",
            extensions=[PerMessageDeflate()],
            extra_headers=[(name.encode(), value.encode()) for name, value in headers],
        )
        self.sock.sendall(self.ws.send(request))
        self.status, self.head = status_of(self.sock)
        if self.status == 101:
            self.ws.receive_data(self.head)
            events = list(self.ws.events())
            assert isinstance(events[0], AcceptConnection), events
            self.accepted: AcceptConnection = events[0]

    def events(self, timeout: float = 10) -> list[Event]:
        """Everything that arrives until the server ends the connection."""
        self.sock.settimeout(timeout)
        seen: list[Event] = []
        try:
            while data := self.sock.recv(65536):
                self.ws.receive_data(data)
                seen.extend(self.ws.events())
        except (TimeoutError, ConnectionResetError):
            pass
        return seen


def metric_500s(service: Service) -> float:
    return service.metric("http_requests_total", status="500")


def test_unasked_websocket_messages_are_refused_early_and_leave_no_memory_behind(
    start_service: ServiceFactory,
) -> None:
    service = start_service(
        PRICE_TICK_SECONDS="60", RATE_LIMIT="100000/minute", MAX_STREAMS_PER_CLIENT="1000"
    )
    (worker,) = service.worker_pids()
    before = rss_bytes(worker)
    message = BytesMessage(data=os.urandom(1 << 20))
    codes = []
    for _ in range(200):  # 200 messages of 1 MiB that nobody asked for
        peer = WsPeer(service)
        assert peer.status == 101, peer.head
        (deflate,) = peer.accepted.extensions  # offered, agreed on the server's terms:
        assert isinstance(deflate, PerMessageDeflate) and deflate.client_no_context_takeover
        with peer.sock:
            # It may be refused before the client has even sent it all.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                peer.sock.sendall(peer.ws.send(message))
            codes += [e.code for e in peer.events(timeout=5) if isinstance(e, CloseConnection)]
    assert codes == [1009] * 200  # each refused as too big, none read to its end
    wait_until(lambda: service.metric("streams_open") == 0, 10, "every WebSocket to end")
    assert rss_bytes(worker) - before < 64 << 20


def test_a_worker_full_of_streams_still_answers_probes_and_polls(
    start_service: ServiceFactory,
) -> None:
    service = start_service(
        WORKER_CONNECTIONS="40",
        MAX_STREAMS_PER_CLIENT="1000",
        RATE_LIMIT="100000/minute",
        PRICE_TICK_SECONDS="60",
    )
    with ExitStack() as stack:
        refused = None
        for _ in range(40):  # as many as the worker has connections
            sock = stack.enter_context(open_stream(service, "/v1/prices/stream"))
            status, head = status_of(sock)
            if status != 200:
                refused = status, head
                break
        assert refused is not None and refused[0] == 503, "every connection was taken"
        assert b"Retry-After:" in refused[1]
        assert service.metric("streams_open") == 36  # 40 less a tenth kept free
        for path in ("/healthz", "/readyz", "/v1/prices", "/metrics"):
            started = time.monotonic()
            assert requests.get(f"{service.url}{path}", timeout=3).status_code == 200, path
            assert time.monotonic() - started < 3
        assert (
            service.metric(
                "connections_refused_total", route="/v1/prices/stream", reason="over_capacity"
            )
            == 1
        )


def never_read_replay(service: Service) -> socket.socket:
    """A stream asked to replay 1,000 ticks by a client that reads none of it."""
    return open_stream(service, "/v1/prices/stream", "Last-Event-ID: 1", buffer=SMALL_BUFFER)


def test_a_stream_never_read_ends_at_its_lifetime_and_frees_its_place(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        STREAM_LIFETIME_MINUTES="0.1",
        SYMBOLS=MANY_SYMBOLS,
        PRICE_TICK_SECONDS="0.1",
    )
    leases = redis.Redis(host=HOST, port=redis_storage.port)
    with never_read_replay(service):
        wait_until(lambda: service.metric("streams_open") == 1, 10, "the stream to open")
        assert leases.zcard(f"crypto/streams/{HOST}") == 1
        opened = time.monotonic()
        # Its lifetime (6 s), and at most one write's timeout (10 s) after it.
        wait_until(lambda: service.metric("streams_open") == 0, 25, "the stream to end")
        assert time.monotonic() - opened > 4  # it ended at its time, not at once
        assert leases.zcard(f"crypto/streams/{HOST}") == 0
    logs = service.logs()
    assert "Traceback" not in logs and "client too slow" in logs


def test_a_far_behind_stream_never_read_is_dropped_as_too_slow_on_the_default_documents(
    start_service: ServiceFactory,
) -> None:
    # The default four symbols: a 999-tick replay is about 500 KiB, which a send buffer
    # sized from loopback's 64 KiB segments would take whole and hold for hours.
    service = start_service()
    with open_stream(service, "/v1/prices/stream", "Last-Event-ID: 1", buffer=SMALL_BUFFER):
        wait_until(lambda: service.metric("streams_open") == 1, 10, "the stream to open")
        opened = time.monotonic()
        # Its socket full within the replay, then the write timeout (10 s).
        wait_until(
            lambda: service.metric("stream_ends_total", reason="too_slow") == 1,
            25,
            "the reader to be dropped as too slow",
        )
        assert time.monotonic() - opened > 8  # after the write's timeout, not at once
        assert service.metric("streams_open") == 0
        assert service.metric("stream_ends_total", reason="gone") == 0
    logs = service.logs()
    assert "Traceback" not in logs and "client too slow" in logs


def test_sigterm_with_a_stream_never_read_exits_well_within_the_graceful_timeout(
    start_service: ServiceFactory,
) -> None:
    service = start_service(GRACEFUL_TIMEOUT="20", SYMBOLS=MANY_SYMBOLS, PRICE_TICK_SECONDS="0.1")
    with never_read_replay(service):
        wait_until(lambda: service.metric("streams_open") == 1, 10, "the stream to open")
        time.sleep(1)  # its write blocked on the full window
        sent = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
        assert time.monotonic() - sent < 8
    assert "Traceback" not in service.logs()


def test_a_websocket_reader_too_slow_is_closed_cleanly_with_no_500(
    start_service: ServiceFactory,
) -> None:
    # 200 symbols every 0.1 s (200 KiB/s uncompressed; deflated, far less: off here)
    # fill the kernel's buffers in seconds; pings (every 300 s here) play no part: the
    # sends alone must end it.
    symbols = ",".join(f"S{n:03d}:{10 + n}" for n in range(200))
    service = start_service(
        SYMBOLS=symbols,
        PRICE_TICK_SECONDS="0.1",
        STREAM_HEARTBEAT_SECONDS="300",
        WEBSOCKET_DEFLATE="false",
    )
    peer = WsPeer(service, buffer=SMALL_BUFFER)
    assert peer.status == 101
    with peer.sock:
        wait_until(lambda: service.metric("streams_open", transport="websocket") == 1, 10, "open")
        # Not read at all: the server's sends block, and after 10 s it gives the reader up.
        wait_until(
            lambda: service.metric("streams_open", transport="websocket") == 0,
            45,
            "the slow reader to be dropped",
        )
        events = peer.events(timeout=5)  # what it had been sent, read at last
    texts, pending = [], ""
    for event in events:
        if isinstance(event, TextMessage):
            pending += event.data
            if event.message_finished:
                texts.append(pending)
                pending = ""
    # Whole documents, then at most one frame cut short by the end of the connection.
    assert texts and all(json.loads(text)["prices"] for text in texts)
    assert not [e for e in events if isinstance(e, CloseConnection) and e.code in (1002, 1007)]
    assert metric_500s(service) == 0
    logs = service.logs()
    assert "Traceback" not in logs and '"status":500' not in logs
    assert "client too slow" in logs


def test_a_closed_websockets_place_is_freed_within_a_heartbeat(
    start_service: ServiceFactory,
) -> None:
    service = start_service(PRICE_TICK_SECONDS="60", STREAM_HEARTBEAT_SECONDS="2")
    peer = WsPeer(service)
    wait_until(lambda: service.metric("streams_open", transport="websocket") == 1, 10, "open")
    peer.sock.close()  # gone without a close frame, long before the next tick
    closed = time.monotonic()
    wait_until(
        lambda: service.metric("streams_open", transport="websocket") == 0, 10, "the place freed"
    )
    assert time.monotonic() - closed < 2


def test_a_killed_workers_places_are_free_within_a_minute(
    start_service: ServiceFactory, redis_storage: RedisServer
) -> None:
    service = start_service(
        WORKERS="2",
        RATE_LIMIT_STORAGE_URI=redis_storage.uri,
        RATE_LIMIT="100000/minute",
        MAX_STREAMS_PER_CLIENT="1",
        STREAM_HEARTBEAT_SECONDS="2",  # a lease of 6 s, renewed every 2 s
        PRICE_TICK_SECONDS="0.5",
    )
    url = f"{service.url}/v1/prices/stream"
    one, other = sorted(service.worker_pids())

    def on(worker: int) -> AbstractContextManager[None]:
        return service.paused({other if worker == one else one})

    with on(one):
        held = requests.get(url, stream=True, timeout=(5, 30))
    assert held.status_code == 200
    time.sleep(8)  # longer than a lease: the live stream's lease was renewed
    assert requests.get(url, timeout=5).status_code == 429
    os.kill(one, signal.SIGKILL)
    killed = time.monotonic()
    held.close()

    def reopened() -> bool:
        with requests.get(url, stream=True, timeout=(5, 30)) as answer:
            return answer.status_code == 200

    wait_until(reopened, 60, "the killed worker's place to be free")
    assert time.monotonic() - killed < 6 + 2 + 3  # a lease, a renewal, and some slack


@contextmanager
def ws_with_origin(service: Service, origin: str) -> Iterator[WsPeer]:
    peer = WsPeer(service, ("Origin", origin))
    try:
        yield peer
    finally:
        peer.sock.close()


def test_a_websocket_from_another_origin_is_refused(start_service: ServiceFactory) -> None:
    service = start_service(ALLOWED_ORIGINS="https://app.example")
    with ws_with_origin(service, "https://evil.example") as evil:
        assert evil.status == 403 and b'"forbidden_origin"' in evil.sock.recv(4096)
    with ws_with_origin(service, f"http://{HOST}:{service.port}") as same:
        assert same.status == 101
    with ws_with_origin(service, "https://app.example") as allowed:
        assert allowed.status == 101
    assert (
        service.metric(
            "connections_refused_total", route="/v1/prices/ws", reason="forbidden_origin"
        )
        == 1
    )


def test_a_refused_event_stream_is_a_200_to_event_stream_clients_and_a_429_to_others(
    start_service: ServiceFactory,
) -> None:
    service = start_service(RATE_LIMIT="1/minute")
    assert requests.get(f"{service.url}/crypto-price", timeout=5).status_code == 200
    url = f"{service.url}/v1/prices/stream"
    plain = requests.get(url, timeout=5)
    assert plain.status_code == 429 and int(plain.headers["Retry-After"]) >= 1
    asked = requests.get(url, headers={"Accept": "text/event-stream"}, timeout=5)
    assert asked.status_code == 200 and asked.headers["Content-Type"].startswith(
        "text/event-stream"
    )
    assert "event: error" in asked.text and '"status": 429' in asked.text
    # Counted as what it is: two 429s, two rate-limited requests; logged so too.
    assert service.metric("http_requests_total", route="/v1/prices/stream", status="429") == 2
    assert service.metric("http_requests_rate_limited_total", route="/v1/prices/stream") == 2
    service.stop()  # the access log complete
    assert [s.status for s in service.served("/v1/prices/stream")] == [429, 429]


def test_far_behind_clients_that_never_read_hold_up_no_other_stream(
    start_service: ServiceFactory,
) -> None:
    service = start_service(
        SYMBOLS=MANY_SYMBOLS,
        PRICE_TICK_SECONDS="0.2",
        RATE_LIMIT="100000/minute",
        MAX_STREAMS_PER_CLIENT="1000",
    )
    with ExitStack() as stack:
        for _ in range(30):  # each asks for 999 ticks back, and reads nothing
            stack.enter_context(never_read_replay(service))
        wait_until(
            lambda: service.metric("http_requests_total", route="/v1/prices/stream") == 30,
            20,
            "the replays to be asked for",
        )
        arrivals: list[tuple[int, float]] = []  # (tick, seen - tick start)
        url = f"{service.url}/v1/prices/stream?symbols=S00"
        with requests.get(url, stream=True, timeout=(5, 30)) as reply:
            for event in EventStream().feed(split_lines(reply.iter_content(chunk_size=None))):
                tick = int(event.last_event_id)
                arrivals.append((tick, time.time() - tick * 0.2))
                if len(arrivals) == 25:
                    break
    ticks = [tick for tick, _ in arrivals]
    assert ticks == list(range(ticks[0], ticks[0] + 25))  # none missed, none twice
    delays = sorted(delay for _, delay in arrivals[1:])  # the first is the current tick
    assert delays[-2] < 0.3, delays  # each as it starts, whatever the others do


def test_a_consumer_that_falls_a_queue_behind_is_ended_and_counted(
    start_service: ServiceFactory,
) -> None:
    symbols = ",".join(f"S{n:03d}:{10 + n}" for n in range(200))  # about 20 KiB a tick
    service = start_service(SYMBOLS=symbols, PRICE_TICK_SECONDS="0.1")
    with open_stream(service, "/v1/prices/stream", buffer=SMALL_BUFFER) as sock:
        assert status_of(sock)[0] == 200

        def ended_as_slow() -> bool:
            sock.recv(4096)  # reading, but 4 KiB at a time: less than a tick a tick
            return service.metric("stream_ends_total", reason="slow_consumer") == 1

        wait_until(ended_as_slow, 30, "the slow consumer to be ended")
    assert service.metric("stream_ends_total", reason="too_slow") == 0
