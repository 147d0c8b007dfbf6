"""The worker's held connections: capped, given back once, all ended on drain, and those
still open a moment later cut (their blocked writes fail at once)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from service.capacity import OVER_CAPACITY_RETRY_SECONDS, HeldConnections, OverCapacity


def test_places_are_capped_and_given_back_once() -> None:
    held = HeldConnections(2)
    first, second = held.take(), held.take()
    with pytest.raises(OverCapacity) as refused:
        held.take()
    assert refused.value.code == 503 and refused.value.error == "over_capacity"
    retry_after = dict(refused.value.get_headers())["Retry-After"]
    low, high = OVER_CAPACITY_RETRY_SECONDS
    assert low <= int(retry_after) <= high
    first.release()
    first.release()  # twice: still one place given back
    assert len(held) == 1
    held.take()
    with pytest.raises(OverCapacity):
        held.take()
    second.release()
    assert len(held) == 1


def test_draining_ends_every_place_and_new_ones_start_ended() -> None:
    held = HeldConnections(10)
    places = [held.take() for _ in range(3)]
    held.drain()
    assert all(place.ended.is_set() for place in places)
    assert held.take().ended.is_set()


def test_a_connection_still_open_after_the_drain_is_cut() -> None:
    held = HeldConnections(10, cut_after=0.2)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        place = held.take(ours)
        # A writer blocked on a peer that reads nothing: what the cut must undo.
        ours.setblocking(False)
        try:
            while True:
                ours.send(b"x" * 65536)
        except BlockingIOError:
            pass  # full
        started = time.monotonic()
        held.drain()
        theirs.settimeout(5)
        while theirs.recv(1 << 20):  # drain the buffer: then the end of the stream
            pass
        assert 0.15 < time.monotonic() - started < 3
        with pytest.raises(BrokenPipeError):
            ours.send(b"more")
        assert place.ended.is_set()


LOWERED = (
    "import json, resource\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
    "from service.capacity import raise_open_file_limit\n"
    "problem = raise_open_file_limit({connections})\n"
    "print(json.dumps([problem, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard]))\n"
)


def open_file_limit_after(connections: int) -> tuple[str | None, int, int]:
    result = subprocess.run(
        [sys.executable, "-c", LOWERED.format(connections=connections)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    problem, soft, hard = json.loads(result.stdout)
    return problem, soft, hard


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    problem, soft, hard = open_file_limit_after(connections=100)
    assert soft == hard and problem is None


def test_a_hard_limit_too_low_for_the_connections_is_named_with_them() -> None:
    _, _, hard = open_file_limit_after(connections=100)
    problem, _, _ = open_file_limit_after(connections=hard)
    assert problem is not None
    assert "RLIMIT_NOFILE" in problem and f"WORKER_CONNECTIONS={hard}" in problem
