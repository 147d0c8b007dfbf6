"""A polite, resilient client of the crypto price service, and the ``crypto-poll`` CLI."""

from client.api import (
    BadPayload,
    FatalError,
    Fetched,
    PollError,
    PriceClient,
    Quote,
    RetryableError,
)
from client.poller import Listener, Poller, PollerOptions, Stats
from client.retry import RetryPolicy, fetch_with_retries

__all__ = [
    "BadPayload",
    "FatalError",
    "Fetched",
    "Listener",
    "PollError",
    "Poller",
    "PollerOptions",
    "PriceClient",
    "Quote",
    "RetryPolicy",
    "RetryableError",
    "Stats",
    "fetch_with_retries",
]
