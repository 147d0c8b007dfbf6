"""The price model: a deterministic, bounded, mean-reverting walk indexed by tick.

Tick ``n = floor(now / tick_seconds)``. The price at tick ``n`` is a pure function of
``(seed, symbol, n)``, so every worker and every replica computes the same price for
the same tick without talking to each other.

Model (log space, per symbol):

* innovations ``e[m] = s * (2u[m] - 1)`` with ``u[m]`` uniform in [0, 1) drawn from a
  generator seeded by ``blake2b(seed, symbol, m // BLOCK)``;
* deviation ``x[n] = sum_{k<K} phi**k * e[n-k]``: an AR(1) (discrete Ornstein-Uhlenbeck)
  process written in its moving-average form and truncated after ``K`` terms, so that
  any tick can be computed directly without replaying history;
* price ``base * exp(B * tanh(x[n] / B))``.

Guarantees: ``|x[n] - x[n-1]| <= 2s`` exactly (the weights telescope), and tanh only
shrinks differences, so with ``2s = log(1 + max_step)`` no tick moves the price by more
than ``max_step`` (2 %). The tanh keeps the price inside ``[base / 2, base * 2]`` forever,
while the AR(1) pulls it back towards ``base`` with a half-life of ~138 ticks; the
stationary standard deviation of ``x`` is about 5.7 %.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from operator import mul

BLOCK = 1024  # innovations drawn per generator seed
WINDOW = 2048  # K: terms kept of the moving-average sum (phi**K ~ 3.5e-5)
PHI = 0.995  # AR(1) coefficient: mean-reversion half-life log(2)/(1-PHI) ~ 138 ticks
BAND = math.log(2.0)  # B: the price stays within a factor of 2 of its base
MAX_STEP = 0.02  # the largest move of one tick, as a fraction of the price
HALF_STEP = math.log1p(MAX_STEP) / 2  # s


@dataclass(frozen=True, slots=True)
class TickQuote:
    symbol: str
    price: float  # rounded to cents, as served
    tick: int
    updated_at: float  # unix seconds when this tick started
    next_update_at: float  # unix seconds when the next tick starts


class PriceModel:
    """Computes prices from ``(seed, symbol, tick)``; holds no clock."""

    def __init__(self, seed: str, symbols: dict[str, float]) -> None:
        self._seed = seed
        self._bases = dict(symbols)
        weights = [1.0]
        for _ in range(WINDOW - 1):
            weights.append(weights[-1] * PHI)
        # Innovations come oldest first, so the weights are stored newest-last too.
        self._weights = tuple(reversed(weights))
        self._block = lru_cache(maxsize=16 * max(1, len(symbols)))(self._draw_block)

    def deviation(self, symbol: str, tick: int) -> float:
        """x[n]: the log-space deviation from the base price at ``tick``."""
        first = tick - WINDOW + 1
        window: list[float] = []
        for block in range(first // BLOCK, tick // BLOCK + 1):
            start = max(first - block * BLOCK, 0)
            stop = min(tick - block * BLOCK + 1, BLOCK)
            window.extend(self._block(symbol, block)[start:stop])
        total: float = sum(map(mul, self._weights, window))
        return total

    def exact_price(self, symbol: str, tick: int) -> float:
        """The unrounded price; ``price`` rounds it to cents."""
        x = self.deviation(symbol, tick)
        return self._bases[symbol] * math.exp(BAND * math.tanh(x / BAND))

    def price(self, symbol: str, tick: int) -> float:
        return round(self.exact_price(symbol, tick), 2)

    def _draw_block(self, symbol: str, block: int) -> tuple[float, ...]:
        digest = hashlib.blake2b(
            f"{self._seed}\x00{symbol}\x00{block}".encode(), digest_size=16
        ).digest()
        # random.Random(int).random() is guaranteed reproducible across Python versions.
        rng = random.Random(int.from_bytes(digest, "big"))
        return tuple(HALF_STEP * (2.0 * rng.random() - 1.0) for _ in range(BLOCK))
