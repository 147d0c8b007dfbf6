"""The statistics' parts: sums in the candles, and the symbols' comoments per candle.

Candles rolled up before this revision get their sums when the recorder next starts, from
the ticks still kept (HistoryStore.fill_statistics); older ones keep NULL.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candles") as batch:
        batch.add_column(sa.Column("sum_price", sa.Double))
        batch.add_column(sa.Column("returns", sa.Integer))
        batch.add_column(sa.Column("sum_return", sa.Double))
        batch.add_column(sa.Column("sum_return_sq", sa.Double))
    op.create_table(
        "candle_pairs",
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


def downgrade() -> None:
    op.drop_table("candle_pairs")
    with op.batch_alter_table("candles") as batch:
        for name in ("sum_return_sq", "sum_return", "returns", "sum_price"):
            batch.drop_column(name)
