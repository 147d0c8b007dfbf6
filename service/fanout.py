"""One fan-out per tick per process: a publisher wakes once at each tick, renders each
distinct document (one per requested symbol set) once, as the bytes each transport
sends, and hands the same bytes to every push connection waiting for it.

Each connection has a :class:`Subscription`: a small bounded queue of rendered ticks and
an event it waits on. The publisher never waits for a connection: a subscription whose
queue is full (its client takes less than a tick a tick) is ended with the reason
``slow_consumer``, and its transport closes the connection (an SSE client resumes with
``Last-Event-ID``; a WebSocket gets close code 1013 "try again later"). The publisher
yields to the event loop every ``YIELD_EVERY`` deliveries, so polls are served during a
fan-out to thousands of streams.

When ticks are longer than the heartbeat, the publisher also wakes every heartbeat and
hands every subscription a heartbeat, so no connection keeps a timer of its own: a
connection wakes only when there is something to send or to check (its lifetime, the
drain).
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from wsproto.frame_protocol import FrameProtocol

QUEUE_TICKS = 8  # rendered ticks a connection may have waiting before it is a slow consumer
YIELD_EVERY = 200  # deliveries between two yields to the event loop
REPLAY_YIELD_EVERY = 16  # replayed ticks (each may be rendered first) between two yields
REPLAY_CACHE = 4096  # rendered (symbol set, tick) kept for reconnects that ask for the past


@dataclass(frozen=True, slots=True)
class Rendered:
    """One tick's document for one symbol set, as each transport sends it."""

    tick: int
    sse: bytes  # "id: <tick>\ndata: <document>\n\n"
    frame: bytes  # a WebSocket text frame (server side: unmasked)
    chunk: bytes  # the SSE event framed as an HTTP/1.1 chunk, for a stream written directly
    deflated: bytes  # the text frame compressed (permessage-deflate, no context takeover)


def chunk_of(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body (RFC 9112, 7.1)."""
    return b"%X\r\n%s\r\n" % (len(data), data)


def deflated_frame(data: bytes) -> bytes:
    """``data`` as a compressed text frame (RFC 7692) that any connection which agreed to
    permessage-deflate can take: compressed alone (the server takes no context over), with
    the smallest window a client may ask for (512 bytes: the documents refer only to
    themselves, and a client's ``server_max_window_bits`` is at least 9)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -9)
    payload = (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = FrameProtocol(client=False, extensions=[]).send_data(payload, fin=True)
    return b"\xc1" + bytes(frame[1:])  # FIN, RSV1 ("compressed"), opcode text; then the length


HEARTBEAT = Rendered(-1, b": heartbeat\n\n", b"", chunk_of(b": heartbeat\n\n"), b"")


def render(tick: int, document: str) -> Rendered:
    frame = FrameProtocol(client=False, extensions=[]).send_data(document, fin=True)
    sse = f"id: {tick}\ndata: {document}\n\n".encode()
    return Rendered(tick, sse, bytes(frame), chunk_of(sse), deflated_frame(document.encode()))


class Put(enum.Enum):
    """What ``Subscription.put`` did with an item."""

    WRITTEN = "written"  # to the socket by the publisher (what the socket left, later)
    QUEUED = "queued"  # for the connection to write
    PASSED = "passed"  # ended already, or a tick the connection was given from the cache
    DROPPED = "dropped"  # the queue was full: the subscription ended as a slow consumer


class Subscription:
    """One push connection's place in the fan-out; ``transport`` names it in the metrics."""

    __slots__ = (
        "_behind", "_capacity", "_queue", "_send", "key", "last", "ready", "reason",
        "transport", "writing",
    )  # fmt: skip

    def __init__(
        self, key: tuple[str, ...], capacity: int = QUEUE_TICKS, transport: str = ""
    ) -> None:
        self.key = key
        self.transport = transport
        self._capacity = capacity
        self._queue: deque[Rendered] = deque()
        self.ready = threading.Event()
        self.reason: str | None = None  # why it ended, once it has
        self.last = -1  # the newest tick the connection was given
        # Written directly by the publisher: how (None: queued for the connection to write),
        # whether the connection has bytes the socket did not take yet, and who is writing
        # to the connection now.
        self._send: Callable[[Rendered], bool] | None = None
        self._behind = False
        self.writing = threading.Lock()

    def write_directly(self, send: Callable[[Rendered], bool]) -> None:
        """From now on the publisher writes each item itself with ``send``, called holding
        ``writing``, which must not block: False when the socket did not take it all (the
        connection keeps the rest and sends it before anything else; what comes meanwhile
        is queued for it), OSError when the connection is gone."""
        self._send = send

    def stop_writing_directly(self) -> None:
        """Back to queueing (call it holding ``writing``)."""
        self._send = None
        self._behind = False

    def put(self, item: Rendered) -> Put:
        """Write or queue ``item``; the subscription ends if its queue is full."""
        if self.reason is not None or 0 <= item.tick <= self.last:
            return Put.PASSED
        send = self._send
        # Not while the connection is writing (it holds ``writing``) or is behind.
        if (
            send is not None
            and not self._queue
            and not self._behind
            and self.writing.acquire(blocking=False)
        ):
            outcome, written = Put.WRITTEN, True
            try:
                written = send(item)
                self.last = max(self.last, item.tick)
            except OSError:
                self.end("gone")
                outcome = Put.PASSED
            finally:
                self.writing.release()
            if not written:
                self._behind = True
                self.ready.set()
            return outcome
        if len(self._queue) >= self._capacity:
            self.end("slow_consumer")
            return Put.DROPPED
        self._queue.append(item)
        self.ready.set()
        return Put.QUEUED

    def end(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.ready.set()

    def backlog(self) -> list[Rendered]:
        """For a subscription written directly: what was queued meanwhile, taken; the
        connection is no longer behind once it has written its rest and these. Call it
        holding ``writing``, and write it all before letting go."""
        self._behind = False
        return self._taken()

    def wait(self, until: float | None = None) -> None:
        """Until something is queued, the connection is behind, it ended, or (monotonic)
        ``until``."""
        while not self._queue and not self._behind and self.reason is None:
            left = None if until is None else until - time.monotonic()
            if left is not None and left <= 0:
                return
            self.ready.wait(left)
            self.ready.clear()

    def take(self) -> list[Rendered]:
        """Everything queued, oldest first; waits until there is something or it ended."""
        self.wait()
        return self._taken()

    def _taken(self) -> list[Rendered]:
        items: list[Rendered] = []
        while True:  # one by one: under threads the publisher may append meanwhile
            try:
                items.append(self._queue.popleft())
            except IndexError:
                return items


class SocketWriter:
    """Writes to a connection's socket, without waiting (``write_nowait``, for the
    publisher) or within the socket's timeout (``write_all``), keeping what the socket did
    not take at once and sending it before anything else, so that what was begun (an
    HTTP chunk, a WebSocket frame) is always finished first. Whoever calls it holds the
    subscription's ``writing``."""

    __slots__ = ("_fd", "_sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self.unsent = b""

    def write_nowait(self, data: bytes) -> bool:
        """Write what the socket takes now; False when some is left for ``write_all``. The
        socket must be non-blocking underneath (it is, under gevent or with a timeout)."""
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        self.unsent = data[written:]
        return not self.unsent

    def write_all(self, chunks: Iterable[bytes] = ()) -> None:
        """What is left, then ``chunks``; raises what the socket raises (a timeout: the
        client stopped reading)."""
        if self.unsent:
            self._sock.sendall(self.unsent)
            self.unsent = b""
        for chunk in chunks:
            self._sock.sendall(chunk)


class Hub:
    """The fan-out of one process. ``document(symbols, tick, now)`` is the JSON text of
    a tick; ``on_fanout(seconds, written)`` is told how long each tick's fan-out took,
    from the first delivery to the last, and how many ticks it wrote to sockets itself,
    by transport (counted once per fan-out: a metric per write would cost more than
    the write's own Python)."""

    def __init__(
        self,
        document: Callable[[tuple[str, ...], int, float], str],
        tick_seconds: float,
        heartbeat_seconds: float,
        clock: Callable[[], float] = time.time,
        on_fanout: Callable[[float, Mapping[str, int]], None] | None = None,
    ) -> None:
        self._document = document
        self._tick_seconds = tick_seconds
        self._heartbeat = heartbeat_seconds
        self._clock = clock
        self._on_fanout = on_fanout
        self._subscriptions: dict[tuple[str, ...], set[Subscription]] = {}
        self._lock = threading.Lock()
        self._publisher: threading.Thread | None = None
        self._draining = False
        # Clear while a fan-out runs: replays wait for it (``wait_for_fanout``), so that
        # reconnects asking for the past never delay the present.
        self._idle = threading.Event()
        self._idle.set()
        self.rendered = lru_cache(maxsize=REPLAY_CACHE)(self._render)

    def _render(self, key: tuple[str, ...], tick: int) -> Rendered:
        return render(tick, self._document(key, tick, self._clock()))

    def tick_at(self, now: float) -> int:
        return int(now // self._tick_seconds)

    def wait_for_fanout(self) -> None:
        """Yield to the event loop, and wait while a fan-out runs."""
        time.sleep(0)
        self._idle.wait()

    def subscribe(self, symbols: Iterable[str]) -> Subscription:
        return self.attach(Subscription(tuple(symbols)))

    def attach(self, subscription: Subscription) -> Subscription:
        """From now on, hand ``subscription`` every tick published."""
        with self._lock:
            self._subscriptions.setdefault(subscription.key, set()).add(subscription)
            if self._draining:
                subscription.end("draining")
            if self._publisher is None:  # started in the worker that serves
                self._publisher = threading.Thread(
                    target=self._publish_forever, name="fanout", daemon=True
                )
                self._publisher.start()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subscribers = self._subscriptions.get(subscription.key)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscriptions[subscription.key]

    def drain(self) -> None:
        """End every subscription. Safe in a signal handler: it only sets events."""
        self._draining = True
        for subscription in self._snapshot():
            subscription.end("draining")

    def __len__(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

    def _snapshot(self) -> list[Subscription]:
        with self._lock:
            return [s for subscribers in self._subscriptions.values() for s in subscribers]

    def _publish_forever(self) -> None:
        last = self.tick_at(self._clock())
        quiet_since = time.monotonic()
        while True:
            until_tick = (last + 1) * self._tick_seconds - self._clock()
            until_heartbeat = quiet_since + self._heartbeat - time.monotonic()
            time.sleep(max(0.0, min(until_tick, until_heartbeat)))
            current = self.tick_at(self._clock())
            if current > last:
                for tick in range(last + 1, current + 1):  # a slow wake-up skips none
                    self.publish(tick)
                last, quiet_since = current, time.monotonic()
            elif time.monotonic() - quiet_since >= self._heartbeat:
                self._deliver(lambda _key: HEARTBEAT)
                quiet_since = time.monotonic()

    def publish(self, tick: int) -> None:
        """Render ``tick`` once per symbol set and hand it to every subscription."""
        self._deliver(lambda key: self.rendered(key, tick))

    def _deliver(self, item_of: Callable[[tuple[str, ...]], Rendered]) -> None:
        started = time.perf_counter()
        with self._lock:
            groups = [(key, list(subscribers)) for key, subscribers in self._subscriptions.items()]
        delivered = 0
        written: Counter[str] = Counter()
        self._idle.clear()
        try:
            for key, subscribers in groups:
                item = item_of(key)
                for subscription in subscribers:
                    if subscription.put(item) is Put.WRITTEN and item is not HEARTBEAT:
                        written[subscription.transport] += 1
                    delivered += 1
                    if delivered % YIELD_EVERY == 0:
                        time.sleep(0)  # under gevent: let polls and writes run
        finally:
            self._idle.set()
        if self._on_fanout is not None and delivered:
            self._on_fanout(time.perf_counter() - started, written)
