"""A push connection's places: one of the worker's and one of the client's, both given
back, and neither kept when the other is refused."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.capacity import HeldConnections, OverCapacity
from service.metrics import Metrics
from service.stream_slots import (
    LEASE_MAX_SECONDS,
    ProcessStreamLedger,
    StreamSlots,
    TooManyStreams,
    lease_seconds,
)


def slots(client_cap: int, worker_cap: int) -> tuple[StreamSlots, HeldConnections, Metrics]:
    metrics = Metrics(["BTC"])
    held = HeldConnections(worker_cap)
    return StreamSlots(client_cap, metrics, ProcessStreamLedger(), held, 15), held, metrics


def open_streams(metrics: Metrics) -> float:
    body, _ = metrics.exposition()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "streams_open"
    )


def test_a_client_over_its_cap_is_told_to_wait_a_heartbeat_and_keeps_no_worker_place() -> None:
    streams, held, metrics = slots(client_cap=2, worker_cap=10)
    first = streams.take("a", "sse", None)
    streams.take("a", "websocket", None)
    with pytest.raises(TooManyStreams) as refused:
        streams.take("a", "sse", None)
    assert refused.value.code == 429
    assert dict(refused.value.get_headers())["Retry-After"] == "15"
    assert len(held) == 2 and open_streams(metrics) == 2
    streams.take("b", "sse", None)  # another client has its own places
    first.release()
    first.release()
    assert len(held) == 2 and open_streams(metrics) == 2
    streams.take("a", "sse", None)


def test_a_full_worker_refuses_before_counting_the_client() -> None:
    streams, held, metrics = slots(client_cap=1, worker_cap=1)
    streams.take("a", "sse", None)
    with pytest.raises(OverCapacity):
        streams.take("b", "sse", None)
    assert len(held) == 1 and open_streams(metrics) == 1


def test_a_lease_is_three_heartbeats_and_never_more_than_a_minute() -> None:
    assert lease_seconds(15) == 45
    assert lease_seconds(1) == 3
    assert lease_seconds(300) == LEASE_MAX_SECONDS == 60
