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
# written late (after an outage) lands in its place.
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
)
