"""The service's WebSocket against a wsproto client over a socket pair: what a client
sends is bounded and dropped, nothing is negotiated, frames go out whole or the
connection is cut, and a peer that is gone is noticed at once. Whatever bytes a client
sends, the reader ends or goes on, and never raises."""

from __future__ import annotations

import fcntl
import resource
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from service.errors import ApiError
from service.fanout import render
from service.websocket import MAX_MESSAGE_BYTES, WebSocket


class Peer:
    """The client's end: a wsproto client that has sent its request."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        request = self.ws.send(
            Request(host="example", target="/", extensions=[PerMessageDeflate()])
        )
        # As gunicorn hands the request over: read, in the WSGI environ.
        self.environ: dict[str, object] = {"REQUEST_METHOD": "GET"}
        for line in request.decode().split("\r\n")[1:]:
            if line:
                name, _, value = line.partition(":")
                self.environ["HTTP_" + name.upper().replace("-", "_")] = value.strip()

    def events(self, timeout: float = 5.0) -> list[object]:
        """What arrives until the connection ends or ``timeout`` passes."""
        self.sock.settimeout(timeout)
        seen: list[object] = []
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.ws.receive_data(data)
                seen.extend(self.ws.events())
        except (TimeoutError, ConnectionResetError):
            pass
        return seen

    def send(self, event: Event) -> None:
        self.sock.sendall(self.ws.send(event))


def past_select_limit(sock: socket.socket) -> socket.socket:
    """``sock`` moved to a descriptor past 1024 (FD_SETSIZE), as a worker holding
    thousands of connections gives out."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    moved = socket.socket(fileno=fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 1024))
    sock.close()
    assert moved.fileno() >= 1024
    return moved


@contextmanager
def session(
    ping_interval: float = 30.0,
    send_timeout: float = 5.0,
    high_descriptor: bool = False,
    deflate: bool = True,
    wait_turn: Callable[[], None] | None = None,
) -> Iterator[tuple[WebSocket, Peer]]:
    ours, theirs = socket.socketpair()
    if high_descriptor:
        ours = past_select_limit(ours)
    peer = Peer(theirs)
    ws = WebSocket.accept(
        {**peer.environ, "gunicorn.socket": ours},
        ping_interval=ping_interval,
        send_timeout=send_timeout,
        ended=threading.Event(),
    )
    try:
        assert ws.open(deflate=deflate, wait_turn=wait_turn)
        yield ws, peer
    finally:
        ws.finish()
        ours.close()
        theirs.close()


def accepted(peer: Peer) -> AcceptConnection:
    peer.sock.settimeout(5)
    while True:
        peer.ws.receive_data(peer.sock.recv(65536))
        for event in peer.ws.events():
            assert isinstance(event, AcceptConnection)
            return event


def test_deflate_offered_is_agreed_without_context_takeover_and_ticks_arrive_compressed() -> None:
    document = '{"prices": [{"symbol": "BTC", "price": 64000.5, "tick": 7}]}'
    with session() as (ws, peer):
        accept = accepted(peer)
        assert ws.deflate and accept.subprotocol is None
        (agreed,) = accept.extensions
        assert isinstance(agreed, PerMessageDeflate)
        assert agreed.server_no_context_takeover and agreed.client_no_context_takeover
        rendered = render(7, document)
        assert len(rendered.deflated) < len(rendered.frame)
        assert ws.send_frame(rendered.deflated) and ws.send_frame(rendered.deflated)
        ws.close(1001, "bye")
        events = peer.events(timeout=2)
    texts = [e.data for e in events if isinstance(e, TextMessage)]
    assert texts == [document, document]  # the same bytes for every message
    assert any(isinstance(e, CloseConnection) and e.code == 1001 for e in events)


def test_with_deflate_off_nothing_is_negotiated_and_text_frames_arrive_whole() -> None:
    with session(deflate=False) as (ws, peer):
        accept = accepted(peer)
        assert accept.extensions == [] and accept.subprotocol is None  # deflate offered
        assert not ws.deflate
        assert ws.send_text('{"prices": []}')
        ws.close(1001, "bye")
        events = peer.events(timeout=2)
    texts = [e.data for e in events if isinstance(e, TextMessage)]
    assert texts == ['{"prices": []}']
    assert any(isinstance(e, CloseConnection) and e.code == 1001 for e in events)


def test_a_compressed_message_is_refused_once_it_inflates_past_the_bound() -> None:
    with session() as (ws, peer):
        accepted(peer)
        bomb = peer.ws.send(TextMessage(data="0" * (64 << 20)))  # 64 MiB of zeros
        assert len(bomb) < 100_000  # compressed, it is small
        tracemalloc.start()
        try:
            peer.sock.sendall(bomb)
            events = peer.events(timeout=5)
            assert ws.ended.wait(2) and ws.close_code == 1009
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1009]
    assert peak < 16 << 20  # inflated a read at a time, not the 64 MiB


def test_a_message_over_the_bound_closes_with_1009_before_the_rest_arrives() -> None:
    with session() as (ws, peer):
        accepted(peer)
        frame = peer.ws.send(BytesMessage(data=b"x" * (1 << 20)))
        peer.sock.sendall(frame[: MAX_MESSAGE_BYTES * 4])  # the head of a 1 MiB message
        events = peer.events(timeout=5)
        assert ws.ended.wait(2) and ws.close_code == 1009
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1009]


def test_small_messages_are_read_and_dropped() -> None:
    with session() as (ws, peer):
        accepted(peer)
        for _ in range(100):
            peer.send(TextMessage(data="y" * (MAX_MESSAGE_BYTES // 2)))
        peer.send(Ping(b"still there?"))
        peer.sock.settimeout(5)
        pongs: list[object] = []
        while not pongs:
            peer.ws.receive_data(peer.sock.recv(65536))
            pongs = [e for e in peer.ws.events() if isinstance(e, Pong)]
        assert not ws.ended.is_set()


def test_a_connection_past_descriptor_1024_is_read_and_pinged_like_any_other() -> None:
    with session(ping_interval=0.3, high_descriptor=True) as (ws, peer):
        accepted(peer)
        peer.send(Ping(b"still there?"))
        peer.sock.settimeout(5)
        seen: list[object] = []
        while not any(isinstance(e, Ping) for e in seen):  # ours, within the interval
            peer.ws.receive_data(peer.sock.recv(65536))
            seen.extend(peer.ws.events())
        assert any(isinstance(e, Pong) for e in seen)
        assert not ws.ended.is_set()


def test_the_reader_waits_its_turn_before_it_answers() -> None:
    turn = threading.Event()

    def wait_turn() -> None:
        turn.wait(5)

    with session(wait_turn=wait_turn) as (ws, peer):
        accepted(peer)
        peer.send(Ping(b"now?"))
        assert not [e for e in peer.events(timeout=0.5) if isinstance(e, Pong)]  # held back
        turn.set()
        assert [e for e in peer.events(timeout=1) if isinstance(e, Pong)]
        assert not ws.ended.is_set()


def test_a_compressed_frame_not_agreed_is_a_protocol_error() -> None:
    with session(deflate=False) as (ws, peer):
        accepted(peer)
        frame = bytearray(peer.ws.send(TextMessage(data="x")))
        frame[0] |= 0x40  # RSV1: "compressed", which was never agreed
        peer.sock.sendall(bytes(frame))
        events = peer.events(timeout=5)
        assert ws.ended.wait(2)
    assert [e.code for e in events if isinstance(e, CloseConnection)] == [1002]


def test_a_peer_that_closes_its_socket_is_gone_at_once() -> None:
    with session(ping_interval=30) as (ws, peer):
        accepted(peer)
        peer.sock.close()
        assert ws.ended.wait(2)
        assert not ws.send_text("late")


def test_a_peer_that_answers_no_ping_is_gone_within_two_intervals() -> None:
    with session(ping_interval=0.2) as (ws, peer):
        accepted(peer)
        started = time.monotonic()
        assert ws.ended.wait(3)  # pings sent, never read nor answered
        assert time.monotonic() - started < 1.0
        assert ws.close_code == 1008


def test_a_reader_too_slow_is_cut_and_the_sender_told_so_without_an_exception() -> None:
    with session(send_timeout=0.3) as (ws, peer):
        accepted(peer)
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        started = time.monotonic()
        sent = 0
        while ws.send_text("z" * 16384):
            sent += 1
            assert time.monotonic() - started < 10
        assert sent > 0 and ws.ended.is_set() and ws.too_slow


def test_a_request_that_is_not_a_handshake_is_an_http_error_before_any_byte() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        environ = {"REQUEST_METHOD": "GET", "HTTP_HOST": "x", "gunicorn.socket": ours}
        with pytest.raises(ApiError) as refused:
            WebSocket.accept(environ, ping_interval=1, send_timeout=1, ended=threading.Event())
        assert refused.value.code == 400
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8))
def test_whatever_a_client_sends_the_reader_never_raises(chunks: list[bytes]) -> None:
    errors: list[type[BaseException]] = []
    original = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_type)
    try:
        with session() as (ws, peer):
            accepted(peer)
            for chunk in chunks:
                try:
                    peer.sock.sendall(chunk)
                except OSError:
                    break
            ws.send_text("after")
            ws.close(1000, "done")
    finally:
        threading.excepthook = original
    assert errors == []
