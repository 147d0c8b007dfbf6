"""The price feed: tells the time, maps it to ticks and serves cached quotes."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import lru_cache

from service.prices import PriceModel, TickQuote

HISTORY_MAX = 1000  # the largest history a client may ask for, in ticks
# A tick named by a client (an ETag, Last-Event-ID): today's ticks of 0.1 s have 11 digits.
TICK_DIGITS = 15
TICK_PATTERN = f"^[0-9]{{1,{TICK_DIGITS}}}$"


def parse_tick(text: str) -> int | None:
    """The tick that ``text`` names (as TICK_PATTERN), or None."""
    if not (text.isascii() and text.isdigit() and len(text) <= TICK_DIGITS):
        return None
    return int(text)


class PriceFeed:
    """Quotes for the current tick of every symbol, computed once per tick and process."""

    def __init__(
        self,
        model: PriceModel,
        symbols: list[str],
        tick_seconds: float,
        on_new_tick: Callable[[TickQuote], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.symbols = tuple(symbols)
        self.now = clock  # unix time, as the service tells it
        self.tick_seconds = tick_seconds
        self._on_new_tick = on_new_tick
        self._latest: dict[str, TickQuote] = {}
        self._advancing = threading.Lock()
        # Enough to answer the longest history of every symbol from memory.
        self._price = lru_cache(maxsize=(HISTORY_MAX + 8) * len(symbols))(model.price)

    def tick_at(self, now: float) -> int:
        return math.floor(now / self.tick_seconds)

    def fresh_seconds(self, now: float) -> int:
        """The whole seconds left in the tick of ``now``: how long an answer about it
        stays fresh (a Cache-Control max-age)."""
        return max(0, math.floor((self.tick_at(now) + 1) * self.tick_seconds - now))

    def quote(self, symbol: str, now: float) -> TickQuote:
        tick = self.tick_at(now)
        latest = self._latest.get(symbol)
        if latest is not None and latest.tick == tick:
            return latest  # the common case, without the lock
        quote = self._quote(symbol, tick)
        with self._advancing:
            # Compared with what is current now, not with the snapshot read above: a thread
            # that lost a race to a newer tick must not move the feed, or its gauges, back.
            # The report is made under the lock too, so reports cannot overtake each other.
            current = self._latest.get(symbol)
            if current is None or tick > current.tick:
                self._latest[symbol] = quote
                if self._on_new_tick is not None:
                    self._on_new_tick(quote)
        return quote

    def at_tick(self, symbol: str, tick: int, now: float) -> TickQuote:
        """The quote of ``tick``: the current one as :meth:`quote` gives it, or a past one."""
        if tick == self.tick_at(now):
            return self.quote(symbol, now)
        return self._quote(symbol, tick)

    def history(self, symbol: str, now: float, limit: int) -> list[TickQuote]:
        """The last ``limit`` ticks up to and including the current one, oldest first."""
        if not 1 <= limit <= HISTORY_MAX:
            raise ValueError(f"limit must be between 1 and {HISTORY_MAX}")
        current = self.tick_at(now)
        return [self._quote(symbol, tick) for tick in range(current - limit + 1, current + 1)]

    def _quote(self, symbol: str, tick: int) -> TickQuote:
        return TickQuote(
            symbol=symbol,
            price=self._price(symbol, tick),
            tick=tick,
            updated_at=round(tick * self.tick_seconds, 6),
            next_update_at=round((tick + 1) * self.tick_seconds, 6),
        )
