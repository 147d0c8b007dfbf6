"""The fan-out: one render per tick and symbol set whatever the number of streams, the
same bytes for each, a slow consumer ended without holding anyone up, heartbeats when
ticks are long, and every subscription ended on drain."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

from wsproto.frame_protocol import FrameProtocol, Opcode

from service.fanout import (
    HEARTBEAT,
    QUEUE_TICKS,
    Hub,
    Put,
    Rendered,
    SocketWriter,
    Subscription,
    render,
)


class Documents:
    """A document function that counts its calls."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[tuple[str, ...], int]] = Counter()

    def __call__(self, key: tuple[str, ...], tick: int, now: float) -> str:
        self.calls[key, tick] += 1
        return f'{{"symbols": "{",".join(key)}", "tick": {tick}}}'


def hub_of(documents: Documents, tick_seconds: float = 3600, heartbeat: float = 3600) -> Hub:
    return Hub(documents, tick_seconds, heartbeat)


def test_one_render_per_tick_and_symbol_set_whatever_the_streams() -> None:
    documents = Documents()
    hub = hub_of(documents)
    btc = [hub.subscribe(["BTC"]) for _ in range(500)]
    both = [hub.subscribe(["BTC", "ETH"]) for _ in range(300)]
    hub.publish(7)
    assert documents.calls == {(("BTC",), 7): 1, (("BTC", "ETH"), 7): 1}
    delivered = [s.take() for s in btc + both]
    assert all(len(items) == 1 and items[0].tick == 7 for items in delivered)
    assert len({id(items[0]) for items in delivered[:500]}) == 1  # the very same bytes
    assert delivered[0][0].sse == b'id: 7\ndata: {"symbols": "BTC", "tick": 7}\n\n'


def test_a_frame_is_a_whole_websocket_text_message() -> None:
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(render(3, '{"a": 1}').frame)
    (frame,) = list(client.received_frames())
    assert frame.opcode is Opcode.TEXT and frame.payload == '{"a": 1}'
    assert frame.frame_finished and frame.message_finished


def test_a_consumer_that_falls_behind_is_ended_and_holds_nobody_up() -> None:
    hub = hub_of(Documents())
    slow, fine = hub.subscribe(["BTC"]), hub.subscribe(["BTC"])
    for tick in range(QUEUE_TICKS + 1):
        hub.publish(tick)
        assert [item.tick for item in fine.take()] == [tick]
    assert slow.reason == "slow_consumer"
    assert [item.tick for item in slow.take()] == list(range(QUEUE_TICKS))  # nothing more
    hub.publish(99)
    assert [item.tick for item in fine.take()] == [99]


def test_heartbeats_reach_every_subscription_when_ticks_are_long() -> None:
    hub = hub_of(Documents(), tick_seconds=3600, heartbeat=0.2)
    subscriptions = [hub.subscribe(["BTC"]) for _ in range(3)]
    started = time.monotonic()
    assert all(s.take() == [HEARTBEAT] for s in subscriptions)
    assert time.monotonic() - started < 2


def test_ticks_are_published_as_they_start() -> None:
    hub = hub_of(Documents(), tick_seconds=0.2)
    subscription = hub.subscribe(["BTC"])
    seen: list[int] = []
    while len(seen) < 3:
        seen += [item.tick for item in subscription.take() if item is not HEARTBEAT]
    assert seen == list(range(seen[0], seen[0] + 3))


def test_draining_ends_every_subscription_and_new_ones_at_once() -> None:
    hub = hub_of(Documents())
    subscriptions = [hub.subscribe(["BTC"]) for _ in range(5)]
    waiting = threading.Thread(target=subscriptions[0].take)
    waiting.start()
    hub.drain()
    waiting.join(timeout=2)
    assert not waiting.is_alive()
    assert all(s.reason == "draining" for s in subscriptions)
    assert hub.subscribe(["ETH"]).reason == "draining"


def test_unsubscribed_streams_get_nothing_more() -> None:
    hub = hub_of(Documents())
    subscription = hub.subscribe(["BTC"])
    hub.unsubscribe(subscription)
    hub.publish(1)
    assert len(hub) == 0 and not subscription.ready.is_set()


def test_a_subscription_written_directly_gets_each_tick_once_and_the_rest_later() -> None:
    sent: list[int] = []

    def send(item: Rendered) -> bool:  # the socket takes all but the end of tick 7
        sent.append(item.tick)
        return item.tick != 7

    subscription = Subscription(("BTC",))
    subscription.last = 5  # given from the cache already
    subscription.write_directly(send)
    outcomes = [subscription.put(render(tick, "{}")) for tick in (5, 6, 7, 8)]
    assert outcomes == [Put.PASSED, Put.WRITTEN, Put.WRITTEN, Put.QUEUED]
    assert sent == [6, 7]  # 5 was sent already; 8 waits behind the rest of 7
    assert subscription.ready.is_set()  # the connection is woken: it is behind
    with subscription.writing:
        queued = subscription.backlog()
    assert [item.tick for item in queued] == [8]
    assert subscription.put(render(9, "{}")) is Put.WRITTEN  # caught up: direct again
    assert sent == [6, 7, 9]


def test_a_socket_writer_finishes_what_the_socket_did_not_take_before_anything_else() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(5)  # non-blocking underneath, as the workers' sockets are
        writer = SocketWriter(ours)
        chunks = [bytes([65 + n % 26]) * 3000 for n in range(200)]
        taken_at_once = 0
        for chunk in chunks:
            if not writer.write_nowait(chunk):
                break
            taken_at_once += 1
        assert taken_at_once < len(chunks) and writer.unsent  # the buffers filled up
        received = bytearray()
        reader = threading.Thread(target=lambda: received.extend(read_all(theirs)))
        reader.start()
        writer.write_all(chunks[taken_at_once + 1 :])
        ours.shutdown(socket.SHUT_WR)
        reader.join(10)
    assert bytes(received) == b"".join(chunks)  # whole, in order, nothing twice


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = bytearray()
    while chunk := sock.recv(65536):
        data.extend(chunk)
    return bytes(data)


def test_a_replay_waits_while_a_fanout_runs() -> None:
    hub = hub_of(Documents())
    in_fanout, release = threading.Event(), threading.Event()

    def send(item: Rendered) -> bool:  # a write the fan-out is in the middle of
        in_fanout.set()
        return release.wait(5)

    hub.subscribe(["BTC"]).write_directly(send)
    publisher = threading.Thread(target=hub.publish, args=(1,))
    publisher.start()
    assert in_fanout.wait(5)
    replay = threading.Thread(target=hub.wait_for_fanout)
    replay.start()
    replay.join(0.3)
    assert replay.is_alive()  # held back while the tick goes out
    release.set()
    replay.join(5)
    publisher.join(5)
    assert not replay.is_alive()


def test_the_fanout_reports_what_it_wrote_itself_by_transport() -> None:
    reports: list[dict[str, int]] = []
    hub = Hub(Documents(), 3600, 3600, on_fanout=lambda _s, written: reports.append(dict(written)))
    for transport in ("sse", "sse", "websocket"):
        hub.attach(Subscription(("BTC",), transport=transport)).write_directly(lambda _i: True)
    hub.attach(Subscription(("BTC",), transport="sse"))  # queued: its connection counts it
    gone = hub.attach(Subscription(("BTC",), transport="websocket"))

    def closed(_item: Rendered) -> bool:
        raise ConnectionResetError

    gone.write_directly(closed)
    hub.publish(1)
    assert reports == [{"sse": 2, "websocket": 1}]
    assert gone.reason == "gone"
