"""execution reports: every order event numbered per account, with the order's fill state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:30:00

`order_events.seq` counts each account's events 1, 2, 3, ... with no gap, in commit order:
the order log takes a batch's numbers from `account_sequences` in the transaction that
writes the events, whose row lock holds the account's other writers until it commits, so
no later number can commit before an earlier one. It is what the execution stream is
resumed by. `cum_qty`, `avg_price` and `position_qty` are the order's filled quantity and
average price, and the position, after the event: with the order's own row and the fill,
the execution report as it was sent. Existing events are numbered by id; their fill state
is not known and stays empty.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.storage.sql.tables

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _decimal(name: str) -> sa.Column[object]:
    return sa.Column(name, app.storage.sql.tables.ExactDecimal(precision=38, scale=12))


def upgrade() -> None:
    op.create_table(
        "account_sequences",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    with op.batch_alter_table("order_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(_decimal("cum_qty"))
        batch.add_column(_decimal("avg_price"))
        batch.add_column(_decimal("position_qty"))
    op.execute(
        "UPDATE order_events SET seq = numbered.n FROM (SELECT id, row_number() OVER"
        " (PARTITION BY account ORDER BY id) AS n FROM order_events) AS numbered"
        " WHERE order_events.id = numbered.id"
    )
    op.execute(
        "INSERT INTO account_sequences (account, last_seq)"
        " SELECT account, max(seq) FROM order_events GROUP BY account"
    )
    op.create_index("order_events_account_seq", "order_events", ["account", "seq"], unique=True)


def downgrade() -> None:
    op.drop_index("order_events_account_seq", table_name="order_events")
    with op.batch_alter_table("order_events") as batch:
        for name in ("position_qty", "avg_price", "cum_qty", "seq"):
            batch.drop_column(name)
    op.drop_table("account_sequences")
