"""``crypto-poll``: poll the price API politely and survive its failures."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import structlog

from client.api import Fetcher, PollError, PriceClient, Quote
from client.metrics import ClientMetrics
from client.poller import Listener, Poller, PollerOptions
from client.retry import RetryEvent, RetryPolicy
from client.streams import SseClient, WebSocketClient
from client.version import __version__

log = structlog.get_logger(logger_name="crypto-poll")
F = TypeVar("F", bound=Callable[..., Any])


class StopPolling(BaseException):
    """Raised by the signal handler to abandon a request in flight."""


class Printer(Listener):
    """Prices on stdout (text or JSON lines); retries and failures on stderr."""

    def __init__(self, output: str) -> None:
        self.output = output

    def on_quote(self, quote: Quote, previous: Quote | None) -> None:
        click.echo(format_quote(quote, previous, self.output))

    def on_retry(self, event: RetryEvent) -> None:
        log.warning(
            "retrying", attempt=event.attempt, wait_s=round(event.wait, 3), reason=event.reason
        )

    def on_failure(self, poll: int, error: PollError, attempts: int) -> None:
        log.error("poll failed", poll=poll, attempts=attempts, reason=error.reason)


def format_quote(quote: Quote, previous: Quote | None, output: str) -> str:
    """One line for a quote: every field as JSON, or the seed client's line followed by
    what it lacked (the symbol when the server names one, the change since the last)."""
    if output == "json":
        return json.dumps(quote.fields, separators=(",", ":"))
    line = f"Price: ${quote.price:.2f} | Time: {quote.timestamp:.2f}"
    if quote.symbol is not None:
        line += f" | {quote.symbol}"
    if previous is None:
        return line + " | change: n/a"
    delta = quote.price - previous.price
    line += f" | change: {delta:+.2f}"
    if previous.price != 0 and math.isfinite(delta):
        line += f" ({delta / previous.price:+.2%})"
    return line


class FanOut(Listener):
    """Every event to every listener, in order."""

    def __init__(self, *listeners: Listener) -> None:
        self.listeners = listeners

    def on_poll(self, outcome: str) -> None:
        for listener in self.listeners:
            listener.on_poll(outcome)

    def on_quote(self, quote: Quote, previous: Quote | None) -> None:
        for listener in self.listeners:
            listener.on_quote(quote, previous)

    def on_retry(self, event: RetryEvent) -> None:
        for listener in self.listeners:
            listener.on_retry(event)

    def on_failure(self, poll: int, error: PollError, attempts: int) -> None:
        for listener in self.listeners:
            listener.on_failure(poll, error, attempts)

    def on_request(self, seconds: float) -> None:
        for listener in self.listeners:
            listener.on_request(seconds)

    def on_change_delay(self, seconds: float) -> None:
        for listener in self.listeners:
            listener.on_change_delay(seconds)

    def on_skipped_ticks(self, ticks: int) -> None:
        for listener in self.listeners:
            listener.on_skipped_ticks(ticks)


TRANSPORTS = ("poll", "long-poll", "sse", "websocket")
LONG_POLL_WAIT = 30  # seconds the server may hold a long-poll (Prefer: wait=30)


def make_client(
    transport: str, url: str, symbols: list[str], timeout: float, api_key: str | None
) -> Fetcher:
    """The transport's client; every one answers ``fetch()`` alike."""
    if transport == "sse":
        return SseClient(url, symbols, timeout=timeout, api_key=api_key)
    if transport == "websocket":
        return WebSocketClient(url, symbols, timeout=timeout, api_key=api_key)
    wait = LONG_POLL_WAIT if transport == "long-poll" else None
    return PriceClient(url, symbols, timeout=timeout, api_key=api_key, long_poll_wait=wait)


def _configure_logging(log_format: str, quiet: bool) -> None:
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.ERROR if quiet else logging.INFO
        ),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
    )


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"expected http(s)://host[:port], got {value!r}")
    return value


def _symbols(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    # Repeatable, and a comma list is accepted too (--symbol BTC,ETH; CRYPTO_POLL_SYMBOL="BTC ETH").
    symbols = [s.strip().upper() for item in value for s in item.split(",") if s.strip()]
    for symbol in symbols:
        if not (symbol.isascii() and symbol.isalnum() and len(symbol) <= 10):
            raise click.BadParameter(f"not a symbol: {symbol!r}")
    return list(dict.fromkeys(symbols))


def option(*decls: str, **attrs: Any) -> Callable[[F], F]:
    """A click option that also reads CRYPTO_POLL_<NAME> and names it in errors and --help."""
    name = decls[0].lstrip("-").split("/")[0].replace("-", "_").upper()
    return click.option(*decls, envvar=f"CRYPTO_POLL_{name}", show_envvar=True, **attrs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--url",
    default="http://localhost:5000",
    show_default=True,
    callback=_check_url,
    help="Base URL of the price service.",
)
@option(
    "--symbol",
    "symbols",
    multiple=True,
    callback=_symbols,
    help="Symbol to poll; repeat for several (then /v1/prices is used). "
    "Default: the server's default symbol.",
)
@option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Shortest gap between two polls, in seconds.",
)
@option(
    "--count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Polls to make (each with its retries); 0 polls until stopped.",
)
@option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=5.0,
    show_default=True,
    help="Connect and read timeout of one request, in seconds.",
)
@option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Attempts per poll, the first included.",
)
@option(
    "--max-wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds one poll may spend retrying.",
)
@option(
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one line per price; json: one object per line with every field.",
)
@option("--api-key", default=None, help="Sent as X-API-Key.")
@option(
    "--transport",
    type=click.Choice(TRANSPORTS),
    default="poll",
    show_default=True,
    help="poll: scheduled requests; long-poll: requests the server holds until the tick "
    "turns (Prefer: wait); sse: Server-Sent Events; websocket: a WebSocket.",
)
@option(
    "--align/--no-align",
    default=True,
    show_default=True,
    help="Poll just after the server's price ticks (--no-align: fixed interval).",
)
@option(
    "--spread",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    help="Random delay in [0, spread] s added after a tick, so clients do not all arrive at once.",
)
@option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve the client's own Prometheus metrics on this port.",
)
@option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Format of the log lines on stderr.",
)
@option("--quiet", is_flag=True, help="Log errors only; no retry notices, no summary.")
@click.version_option(__version__, prog_name="crypto-poll")
def main(
    url: str,
    symbols: list[str],
    interval: float,
    count: int,
    timeout: float,
    max_attempts: int,
    max_wait: float,
    output: str,
    api_key: str | None,
    transport: str,
    align: bool,
    spread: float,
    metrics_port: int | None,
    log_format: str,
    quiet: bool,
) -> None:
    """Poll the crypto price service. Every option can also be set with an environment
    variable CRYPTO_POLL_<OPTION>, e.g. CRYPTO_POLL_INTERVAL=5.

    Exit status: 0 when stopped by SIGINT/SIGTERM or when all --count polls succeeded;
    1 when any of the --count polls failed after its retries; 2 for a usage error.
    """
    _configure_logging(log_format, quiet)
    client = make_client(transport, url, symbols, timeout, api_key)
    listeners: list[Listener] = [Printer(output)]
    if metrics_port is not None:
        metrics = ClientMetrics()
        metrics.serve(metrics_port)
        listeners.append(metrics)
    stop = threading.Event()
    poller = Poller(
        client,
        PollerOptions(
            interval, count, align, spread, RetryPolicy(max_attempts, max_wait), transport
        ),
        FanOut(*listeners),
        stop,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()
        if client.in_flight:
            raise StopPolling()  # abandon the request rather than wait out its timeout

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        poller.run()
    except StopPolling:
        pass
    finally:
        client.close()
    stats = poller.stats
    if not quiet:
        reconnects = getattr(client, "reconnects", None)  # push transports count them
        extra = {"transport": transport} | (
            {"reconnects": reconnects} if reconnects is not None else {}
        )
        log.info("summary", **stats.summary(), **extra)
    if stats.failures and not stop.is_set():
        log.error(f"{stats.failures} of {stats.polls} polls failed")
        sys.exit(1)
