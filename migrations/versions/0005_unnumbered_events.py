"""order events may be committed unnumbered, and numbered just after

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 15:30:00

On PostgreSQL the gateway commits order events without their number, and one process
numbers them right after (a number taken inside each commit held the account's other
writers for that commit's WAL flush). This partial index finds the events still to be
numbered, in id order; it stays empty on SQLite, which numbers events as it commits them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNNUMBERED = sa.text("seq IS NULL")


def upgrade() -> None:
    op.create_index(
        "order_events_unnumbered",
        "order_events",
        ["id"],
        postgresql_where=_UNNUMBERED,
        sqlite_where=_UNNUMBERED,
    )


def downgrade() -> None:
    op.drop_index("order_events_unnumbered", table_name="order_events")
