"""Configuration: read once from the environment, validated, then passed around frozen.

Every setting is an environment variable (12-factor). A bad value raises
:class:`ConfigError` naming the variable, which the entry points turn into one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from limits import parse_many

T = TypeVar("T")

SYMBOL_MAX_LENGTH = 10
SYMBOL_PATTERN = re.compile(rf"^[A-Z0-9]{{1,{SYMBOL_MAX_LENGTH}}}$")
DEFAULT_SYMBOLS = "BTC:100.00,ETH:50.00,SOL:20.00,XRP:10.00"
RATE_LIMIT_STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it
STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")


class ConfigError(ValueError):
    """A configuration variable has an unusable value."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class ApiKey:
    """A client key. Only its fingerprint is ever logged or exported."""

    digest: bytes = field(repr=False)
    fingerprint: str
    limit: str


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 5000
    workers: int = 1
    threads: int = 8
    timeout: int = 30
    graceful_timeout: int = 20
    keepalive: int = 5
    max_requests: int = 0
    max_requests_jitter: int = 0
    symbols: dict[str, float] = field(
        default_factory=lambda: _parse_symbols(DEFAULT_SYMBOLS, "SYMBOLS")
    )
    price_tick_seconds: float = 3.0
    price_seed: str = field(default="crypto-price", repr=False)
    rate_limit: str = "120/minute"
    rate_limit_storage_uri: str = field(default="memory://", repr=False)  # may hold a password
    rate_limit_strategy: str = "fixed-window"
    rate_limit_fail_open: bool = True
    api_keys: tuple[ApiKey, ...] = ()
    trusted_proxies: int = 0
    log_format: str = "json"
    log_level: str = "info"
    log_flush_seconds: float = 0.5
    metrics_dir: str | None = None
    fault_latency_ms: int = 0
    fault_error_rate: float = 0.0

    @property
    def default_symbol(self) -> str:
        return next(iter(self.symbols))

    @property
    def shared_limit_storage(self) -> bool:
        return not self.rate_limit_storage_uri.startswith("memory://")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError on the first bad value."""

        def get(name: str, parse: Callable[[str, str], T], default: T) -> T:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            return parse(raw.strip(), name)

        d = cls()
        rate_limit = get("RATE_LIMIT", _parse_limit, d.rate_limit)
        settings = cls(
            host=get("HOST", _parse_host, d.host),
            port=get("PORT", _int_between(1, 65535), d.port),
            workers=get("WORKERS", _int_between(1, 64), d.workers),
            threads=get("THREADS", _int_between(1, 256), d.threads),
            timeout=get("TIMEOUT", _int_between(1, 3600), d.timeout),
            graceful_timeout=get("GRACEFUL_TIMEOUT", _int_between(1, 3600), d.graceful_timeout),
            keepalive=get("KEEPALIVE", _int_between(0, 3600), d.keepalive),
            max_requests=get("MAX_REQUESTS", _int_between(0, 10_000_000), d.max_requests),
            max_requests_jitter=get(
                "MAX_REQUESTS_JITTER", _int_between(0, 10_000_000), d.max_requests_jitter
            ),
            symbols=get("SYMBOLS", _parse_symbols, d.symbols),
            price_tick_seconds=get("PRICE_TICK_SECONDS", _float_between(0.1, 86400.0), 3.0),
            price_seed=get("PRICE_SEED", _parse_seed, d.price_seed),
            rate_limit=rate_limit,
            rate_limit_storage_uri=get("RATE_LIMIT_STORAGE_URI", _parse_storage_uri, "memory://"),
            rate_limit_strategy=get(
                "RATE_LIMIT_STRATEGY", _one_of(RATE_LIMIT_STRATEGIES), d.rate_limit_strategy
            ),
            rate_limit_fail_open=get("RATE_LIMIT_FAIL_OPEN", _parse_bool, True),
            api_keys=get("API_KEYS", _parse_api_keys(rate_limit), ()),
            trusted_proxies=get("TRUSTED_PROXIES", _int_between(0, 10), 0),
            log_format=get("LOG_FORMAT", _one_of(LOG_FORMATS), d.log_format),
            log_level=get("LOG_LEVEL", _one_of(LOG_LEVELS), d.log_level),
            log_flush_seconds=get(
                "LOG_FLUSH_SECONDS", _float_between(0.0, 10.0), d.log_flush_seconds
            ),
            metrics_dir=get(METRICS_DIR_VARIABLE, _keep, None),
            fault_latency_ms=get("FAULT_LATENCY_MS", _int_between(0, 600_000), 0),
            fault_error_rate=get("FAULT_ERROR_RATE", _float_between(0.0, 1.0), 0.0),
        )
        if settings.max_requests > 0 and not settings.shared_limit_storage:
            raise ConfigError(
                "MAX_REQUESTS",
                f"recycling workers (MAX_REQUESTS={settings.max_requests}) with "
                "RATE_LIMIT_STORAGE_URI=memory:// would start each new worker's counters at "
                "zero and let clients past RATE_LIMIT; set MAX_REQUESTS=0, or set "
                "RATE_LIMIT_STORAGE_URI=redis://host:port",
            )
        if settings.workers > 1 and not settings.shared_limit_storage:
            raise ConfigError(
                "WORKERS",
                f"{settings.workers} worker processes with RATE_LIMIT_STORAGE_URI=memory:// would "
                "give each process its own counters and multiply RATE_LIMIT; use THREADS to scale "
                "one process, or set RATE_LIMIT_STORAGE_URI=redis://host:port",
            )
        return settings

    def describe(self) -> dict[str, object]:
        """The effective configuration with secrets masked, for the startup log line."""
        return {
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "threads": self.threads,
            "timeout": self.timeout,
            "graceful_timeout": self.graceful_timeout,
            "keepalive": self.keepalive,
            "max_requests": self.max_requests,
            "max_requests_jitter": self.max_requests_jitter,
            "symbols": ",".join(f"{s}:{p:.2f}" for s, p in self.symbols.items()),
            "price_tick_seconds": self.price_tick_seconds,
            "price_seed": "***",
            "rate_limit": self.rate_limit,
            "rate_limit_storage_uri": _mask_uri(self.rate_limit_storage_uri),
            "rate_limit_strategy": self.rate_limit_strategy,
            "rate_limit_fail_open": self.rate_limit_fail_open,
            "api_keys": [f"{k.fingerprint}={k.limit}" for k in self.api_keys],
            "trusted_proxies": self.trusted_proxies,
            "log_format": self.log_format,
            "log_level": self.log_level,
            "log_flush_seconds": self.log_flush_seconds,
            "metrics_dir": self.metrics_dir,
            "fault_latency_ms": self.fault_latency_ms,
            "fault_error_rate": self.fault_error_rate,
        }


def key_fingerprint(key: str) -> str:
    """A short, non-reversible name for an API key, safe for logs and metrics."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _keep(raw: str, _name: str) -> str:
    return raw


def _int_between(low: int, high: int) -> Callable[[str, str], int]:
    def parse(raw: str, name: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(name, f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str, str], float]:
    def parse(raw: str, name: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(name, f"expected a number, got {raw!r}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise ConfigError(name, f"must be between {low:g} and {high:g}, got {raw}")
        return value

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(raw: str, name: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}; got {raw!r}")
        return value

    return parse


def _parse_bool(raw: str, name: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


def _parse_host(raw: str, name: str) -> str:
    if any(c.isspace() for c in raw) or "/" in raw:
        raise ConfigError(name, f"not a host name or address: {raw!r}")
    return raw


def _parse_seed(raw: str, name: str) -> str:
    if len(raw) > 256:
        raise ConfigError(name, "must be at most 256 characters")
    return raw


def _parse_limit(raw: str, name: str) -> str:
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if len(items) != 1:
        raise ConfigError(
            name, f"expected one rate such as '120/minute' or '10 per second', got {raw!r}"
        )
    return raw


def _parse_symbols(raw: str, name: str) -> dict[str, float]:
    symbols: dict[str, float] = {}
    for item in raw.split(","):
        symbol, sep, base = item.strip().partition(":")
        symbol = symbol.strip().upper()
        if not sep or not SYMBOL_PATTERN.match(symbol):
            raise ConfigError(
                name, f"expected SYMBOL:BASE_PRICE items like 'BTC:100.00', got {item.strip()!r}"
            )
        if symbol in symbols:
            raise ConfigError(name, f"symbol {symbol} is listed twice")
        try:
            price = float(base)
        except ValueError:
            price = math.nan
        if not (math.isfinite(price) and 0.01 <= price <= 1e9):
            raise ConfigError(name, f"base price of {symbol} must be between 0.01 and 1e9")
        symbols[symbol] = price
    return symbols


def _parse_storage_uri(raw: str, name: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in STORAGE_SCHEMES or "://" not in raw:
        raise ConfigError(
            name, f"expected memory:// or redis://host:port, got scheme {scheme or 'none'!r}"
        )
    return raw


def _parse_api_keys(default_limit: str) -> Callable[[str, str], tuple[ApiKey, ...]]:
    def parse(raw: str, name: str) -> tuple[ApiKey, ...]:
        keys: list[ApiKey] = []
        seen: set[bytes] = set()
        for position, item in enumerate(raw.split(","), start=1):
            key, sep, limit = item.strip().partition("=")
            if not re.fullmatch(r"[A-Za-z0-9._~+/-]{16,256}", key):
                # The key itself is never echoed, only where it sits in the list.
                raise ConfigError(
                    name, f"key #{position} must be 16-256 characters of [A-Za-z0-9._~+/-]"
                )
            if sep:
                _parse_limit(limit.strip(), f"{name} (key #{position} limit)")
            digest = hashlib.sha256(key.encode()).digest()
            if digest in seen:
                raise ConfigError(name, f"key #{position} is listed twice")
            seen.add(digest)
            keys.append(ApiKey(digest, key_fingerprint(key), limit.strip() or default_limit))
        return tuple(keys)

    return parse


def _mask_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@", 1)
    return uri
