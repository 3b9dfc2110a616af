"""pre-trade risk: limits per account, kill switches, audit of risk control changes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.storage.sql.tables

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "risk_limits",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("limits", sa.Text(), nullable=False),
        sa.Column("updated_at", app.storage.sql.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.create_table(
        "kill_switches",
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", app.storage.sql.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("scope", "account"),
    )
    op.create_table(
        "risk_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", app.storage.sql.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("risk_audit")
    op.drop_table("kill_switches")
    op.drop_table("risk_limits")
