"""The database's tables, declared once: the migrations create them, the stores read and
write them (history_store, key_store), and a test holds the two together."""

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

# API keys managed without a restart (service/key_store.py). Only each key's SHA-256 is
# stored, never the key. A name's current key is its row neither revoked nor rotated out
# (expires_ms NULL); a rotated-out key works until expires_ms; limit empty means
# RATE_LIMIT's.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("fingerprint", sa.String(16), primary_key=True),
    sa.Column("digest", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("rate_limit", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger),
    sa.Column("revoked_ms", sa.BigInteger),
    sa.Index(
        "api_keys_current_name",
        "name",
        unique=True,
        sqlite_where=sa.text("expires_ms IS NULL AND revoked_ms IS NULL"),
        postgresql_where=sa.text("expires_ms IS NULL AND revoked_ms IS NULL"),
    ),
)

# One row, raised by every change to api_keys in the same transaction: what the workers
# poll to know they must read the keys again (and what serialises the changes).
api_key_generation = sa.Table(
    "api_key_generation",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

# Each key's use per hour (unix ms of its start): requests (429s included), 429s, streams
# opened (SSE and WebSocket) and the latest request's time. Written by the workers in
# batches; hours older than key_store.USAGE_RETENTION_DAYS are deleted.
api_key_usage = sa.Table(
    "api_key_usage",
    metadata,
    sa.Column("fingerprint", sa.String(16), primary_key=True),
    sa.Column("hour_ms", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("rate_limited", sa.BigInteger, nullable=False),
    sa.Column("streams", sa.BigInteger, nullable=False),
    sa.Column("last_ms", sa.BigInteger, nullable=False),
)
