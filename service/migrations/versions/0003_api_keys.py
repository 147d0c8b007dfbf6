"""API keys managed without a restart, and their use per hour.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CURRENT = "expires_ms IS NULL AND revoked_ms IS NULL"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("fingerprint", sa.String(16), primary_key=True),
        sa.Column("digest", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("rate_limit", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger),
        sa.Column("revoked_ms", sa.BigInteger),
    )
    op.create_index(
        "api_keys_current_name",
        "api_keys",
        ["name"],
        unique=True,
        sqlite_where=sa.text(CURRENT),
        postgresql_where=sa.text(CURRENT),
    )
    generation = op.create_table(
        "api_key_generation",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(generation, [{"id": 1, "generation": 0}])
    op.create_table(
        "api_key_usage",
        sa.Column("fingerprint", sa.String(16), primary_key=True),
        sa.Column("hour_ms", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("rate_limited", sa.BigInteger, nullable=False),
        sa.Column("streams", sa.BigInteger, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_key_usage")
    op.drop_table("api_key_generation")
    op.drop_index("api_keys_current_name", "api_keys")
    op.drop_table("api_keys")
