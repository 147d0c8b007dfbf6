"""Configuration: read once from the environment, validated, then passed around frozen.

Every setting is an environment variable (12-factor). A bad value raises
:class:`ConfigError` naming the variable, which the entry points turn into one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from limits import parse_many

from service.key_format import digest_of, fingerprint_of_digest

T = TypeVar("T")

SYMBOL_MAX_LENGTH = 10
SYMBOL_PATTERN = re.compile(rf"^[A-Z0-9]{{1,{SYMBOL_MAX_LENGTH}}}$")
DEFAULT_SYMBOLS = "BTC:100.00,ETH:50.00,SOL:20.00,XRP:10.00"
RATE_LIMIT_STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "console")
WORKER_CLASSES = ("gthread", "gevent")
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")
DEFAULT_DATABASE_URL = "sqlite:///data/prices.sqlite3"  # under the working directory
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
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
    limit: str  # empty: RATE_LIMIT's (Settings.limit_of)


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


def parse_limit(raw: str, name: str) -> str:
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


def _parse_database_url(raw: str, name: str) -> str:
    scheme = urlsplit(raw).scheme.lower()
    if scheme not in DATABASE_SCHEMES or "://" not in raw:
        raise ConfigError(
            name,
            "expected sqlite:///relative/path, sqlite:////absolute/path or "
            f"postgresql://user:password@host/database, got scheme {scheme or 'none'!r}",
        )
    if scheme == "sqlite" and raw.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://"):
        raise ConfigError(name, "a SQLite URL needs a file path: sqlite:///data/prices.sqlite3")
    return raw


def format_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it: 90m, 36h, 7d."""
    for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration_between(low: int, high: int) -> Callable[[str, str], int]:
    """A duration such as 30s, 90m, 36h or 7d, in seconds."""

    def parse(raw: str, name: str) -> int:
        number, unit = raw[:-1], raw[-1:].lower()
        if unit not in DURATION_UNITS or not (number.isascii() and number.isdigit()):
            raise ConfigError(name, f"expected a duration such as 30s, 90m, 36h or 7d, got {raw!r}")
        seconds = int(number[:9]) * DURATION_UNITS[unit] if len(number) <= 9 else high + 1
        if not low <= seconds <= high:
            raise ConfigError(
                name,
                f"must be between {format_duration(low)} and {format_duration(high)}, got {raw!r}",
            )
        return seconds

    return parse


def _parse_secret(raw: str, name: str) -> str:
    if len(raw) < 32 or not raw.isascii() or not raw.isprintable():
        # The value itself is never echoed.
        raise ConfigError(name, "must be at least 32 printable ASCII characters (random)")
    return raw


def _parse_origins(raw: str, name: str) -> tuple[str, ...]:
    origins: list[str] = []
    for item in raw.split(","):
        origin = item.strip().rstrip("/").lower()
        if origin == "*":
            origins.append(origin)
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ConfigError(
                name, f"expected origins such as 'https://example.com' or '*', got {item.strip()!r}"
            )
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return tuple(origins)


def _parse_api_keys(raw: str, name: str) -> tuple[ApiKey, ...]:
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
            parse_limit(limit.strip(), f"{name} (key #{position} limit)")
        digest = digest_of(key)
        if digest in seen:
            raise ConfigError(name, f"key #{position} is listed twice")
        seen.add(digest)
        keys.append(ApiKey(digest, fingerprint_of_digest(digest), limit.strip()))
    return tuple(keys)


Parser = Callable[[str, str], Any]  # (raw value, variable name) -> value, or ConfigError


def setting(
    default: Any = None,
    parse: Parser = _keep,
    *,
    variable: str | None = None,
    show: Callable[[Any], object] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """One setting, declared once: its default, the parser of its environment variable (the
    field's name in capitals unless ``variable`` says otherwise), and how the start-up line
    shows it (``show``, to mask a secret). ``factory`` makes a mutable default."""
    metadata = {"parse": parse, "variable": variable, "show": show}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, repr=show is None)
    return field(default=default, metadata=metadata, repr=show is None)


@dataclass(frozen=True)
class Settings:
    host: str = setting("0.0.0.0", _parse_host)
    port: int = setting(5000, _int_between(1, 65535))
    workers: int = setting(1, _int_between(1, 64))
    threads: int = setting(8, _int_between(1, 256))
    timeout: int = setting(30, _int_between(1, 3600))
    graceful_timeout: int = setting(20, _int_between(1, 3600))
    keepalive: int = setting(5, _int_between(0, 3600))
    max_requests: int = setting(0, _int_between(0, 10_000_000))
    max_requests_jitter: int = setting(0, _int_between(0, 10_000_000))
    symbols: dict[str, float] = setting(
        parse=_parse_symbols,
        factory=lambda: _parse_symbols(DEFAULT_SYMBOLS, "SYMBOLS"),
        show=lambda symbols: ",".join(f"{s}:{p:.2f}" for s, p in symbols.items()),
    )
    price_tick_seconds: float = setting(3.0, _float_between(0.1, 86400.0))
    price_seed: str = setting("crypto-price", _parse_seed, show=lambda _: "***")
    rate_limit: str = setting("120/minute", parse_limit)
    rate_limit_storage_uri: str = setting(  # may hold a password
        "memory://", _parse_storage_uri, show=lambda uri: _mask_uri(uri)
    )
    rate_limit_strategy: str = setting("fixed-window", _one_of(RATE_LIMIT_STRATEGIES))
    rate_limit_fail_open: bool = setting(True, _parse_bool)
    # Each key's limit, or the empty string for RATE_LIMIT's (see limit_of).
    api_keys: tuple[ApiKey, ...] = setting(
        (),
        _parse_api_keys,
        show=lambda keys: [f"{k.fingerprint}={k.limit or 'RATE_LIMIT'}" for k in keys],
    )
    trusted_proxies: int = setting(0, _int_between(0, 10))
    log_format: str = setting("json", _one_of(LOG_FORMATS))
    log_level: str = setting("info", _one_of(LOG_LEVELS))
    log_flush_seconds: float = setting(0.5, _float_between(0.0, 10.0))
    metrics_dir: str | None = setting(None, _keep, variable=METRICS_DIR_VARIABLE)
    max_streams_per_client: int = setting(10, _int_between(1, 100_000))
    stream_lifetime_minutes: float = setting(10.0, _float_between(0.01, 1440.0))
    stream_heartbeat_seconds: float = setting(15.0, _float_between(0.5, 300.0))
    worker_class: str = setting("gevent", _one_of(WORKER_CLASSES))
    # 10,000 push connections and room beside them (make scale: about 30-50 KiB each).
    worker_connections: int = setting(12_000, _int_between(1, 100_000))
    # Streams and long-polls one worker holds at once; None: held_cap's default.
    max_held_connections: int | None = setting(None, _int_between(0, 100_000))
    # Origins (scheme://host[:port]) whose pages may open a WebSocket; empty: the service's own.
    allowed_origins: tuple[str, ...] = setting((), _parse_origins)
    # permessage-deflate for WebSockets that offer it (compressed once per tick; NOTES).
    websocket_deflate: bool = setting(True, _parse_bool)
    # Where the price history is kept (service/database.py); may hold a password.
    database_url: str = setting(
        DEFAULT_DATABASE_URL, _parse_database_url, show=lambda url: _mask_uri(url)
    )
    # Raw ticks are kept this long: a week of every tick (about 200,000 rows a symbol at
    # 3 s), the longest window the page and the statistics offer. Candles, and the
    # statistics' sums in them, are kept longer and need no raw tick once rolled up.
    history_retention_seconds: int = setting(
        7 * 86400, duration_between(3600, 3650 * 86400), variable="HISTORY_RETENTION"
    )
    # Signs the stream tokens of POST /v1/tokens (service/tokens.py): every worker and
    # replica that should accept a token needs the same. Unset, gunicorn's master makes
    # one at start for its workers (service/gunicorn_conf.py): tokens then hold on this
    # instance only.
    token_secret: str | None = setting(None, _parse_secret, show=lambda s: s and "***")
    token_ttl_seconds: int = setting(300, duration_between(10, 3600), variable="TOKEN_TTL")
    fault_latency_ms: int = setting(0, _int_between(0, 600_000))
    fault_error_rate: float = setting(0.0, _float_between(0.0, 1.0))

    def __post_init__(self) -> None:
        if self.max_requests > 0 and not self.shared_limit_storage:
            raise ConfigError(
                "MAX_REQUESTS",
                f"recycling workers (MAX_REQUESTS={self.max_requests}) with "
                "RATE_LIMIT_STORAGE_URI=memory:// would start each new worker's counters at "
                "zero and let clients past RATE_LIMIT; set MAX_REQUESTS=0, or set "
                "RATE_LIMIT_STORAGE_URI=redis://host:port",
            )
        if self.workers > 1 and not self.shared_limit_storage:
            raise ConfigError(
                "WORKERS",
                f"{self.workers} worker processes with RATE_LIMIT_STORAGE_URI=memory:// would "
                "give each process its own counters and multiply RATE_LIMIT; one worker serves "
                "many connections at once (WORKER_CONNECTIONS), or set "
                "RATE_LIMIT_STORAGE_URI=redis://host:port to use more cores",
            )

        if self.max_held_connections is not None and self.max_held_connections >= self.slots:
            raise ConfigError(
                "MAX_HELD_CONNECTIONS",
                f"{self.max_held_connections} held streams and long-polls would take every one "
                f"of a worker's {self.slots} connections ({self._slots_variable}), leaving none "
                "for probes, polls and /metrics; set it below that",
            )

    @property
    def slots(self) -> int:
        """Requests one worker serves at once: its connections (gevent), or threads."""
        if self.worker_class == "gevent":
            return self.worker_connections
        return min(self.threads, self.worker_connections)

    @property
    def _slots_variable(self) -> str:
        return "WORKER_CONNECTIONS" if self.worker_class == "gevent" else "THREADS"

    @property
    def held_cap(self) -> int:
        """Streams and long-polls one worker may hold: MAX_HELD_CONNECTIONS, or by default
        its slots less a tenth (at least one) kept for probes, polls and scrapes."""
        if self.max_held_connections is not None:
            return self.max_held_connections
        return self.slots - max(1, self.slots // 10)

    @property
    def default_symbol(self) -> str:
        return next(iter(self.symbols))

    @property
    def shared_limit_storage(self) -> bool:
        return not self.rate_limit_storage_uri.startswith("memory://")

    def limit_of(self, key: ApiKey) -> str:
        """The rate limit of a client presenting ``key``."""
        return key.limit or self.rate_limit

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError on the first bad value."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            variable = variable_of(spec)
            raw = env.get(variable)
            if raw is not None and raw.strip():
                values[spec.name] = spec.metadata["parse"](raw.strip(), variable)
        return cls(**values)

    def describe(self) -> dict[str, object]:
        """The effective configuration with secrets masked, for the startup log line."""
        described: dict[str, object] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            show = spec.metadata["show"]
            described[spec.name] = show(value) if show is not None else value
        return described


def variable_of(spec: Field[Any]) -> str:
    """The environment variable of a Settings field."""
    variable: str | None = spec.metadata["variable"]
    return variable or spec.name.upper()


def _mask_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@", 1)
    return uri
