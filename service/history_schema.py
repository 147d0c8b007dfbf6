"""The price history's tables, declared once: the migrations create them, the store reads
and writes them, and a test holds the two together."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# One row per symbol and tick served: its start (unix ms), its length and its price.
ticks = sa.Table(
    "ticks",
    metadata,
    sa.Column("symbol", sa.String(16), primary_key=True),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("tick_ms", sa.Integer, nullable=False),
    sa.Column("price", sa.Double, nullable=False),
)

# Candles of 1 minute, 1 hour and 1 day (width_s), kept longer than the ticks. first_ms
# and last_ms are the starts of the ticks that opened and closed it, so that a tick
# written late (after an outage) lands in its place. The sums are the statistics' parts
# (a window's mean and volatility add candles up): of the prices, and of the log returns
# of the ticks that have one (from the tick before, of the same length) and their
# squares. They are NULL in candles rolled up before they were kept (revision 0001)
# whose ticks were pruned before they could be rolled up again.
candles = sa.Table(
    "candles",
    metadata,
    sa.Column("symbol", sa.String(16), primary_key=True),
    sa.Column("width_s", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("open", sa.Double, nullable=False),
    sa.Column("high", sa.Double, nullable=False),
    sa.Column("low", sa.Double, nullable=False),
    sa.Column("close", sa.Double, nullable=False),
    sa.Column("ticks", sa.Integer, nullable=False),
    sa.Column("first_ms", sa.BigInteger, nullable=False),
    sa.Column("last_ms", sa.BigInteger, nullable=False),
    sa.Column("sum_price", sa.Double),
    sa.Column("returns", sa.Integer),
    sa.Column("sum_return", sa.Double),
    sa.Column("sum_return_sq", sa.Double),
)

# The comoments of two symbols' log returns over a candle (symbol before other by name):
# over the ticks where both have one, their count and the sums of x, y, x², y² and xy.
# A window's correlation adds them up.
candle_pairs = sa.Table(
    "candle_pairs",
    metadata,
    sa.Column("symbol", sa.String(16), primary_key=True),
    sa.Column("other", sa.String(16), primary_key=True),
    sa.Column("width_s", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("start_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("pairs", sa.Integer, nullable=False),
    sa.Column("sum_x", sa.Double, nullable=False),
    sa.Column("sum_y", sa.Double, nullable=False),
    sa.Column("sum_xx", sa.Double, nullable=False),
    sa.Column("sum_yy", sa.Double, nullable=False),
    sa.Column("sum_xy", sa.Double, nullable=False),
)
