"""every order event numbered per account: the execution reports' sequence

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 11:30:00

`order_events.seq` counts each account's events 1, 2, 3, ... with no gap, in the order they
were committed: a trigger takes the next number from `account_sequences` in the inserting
transaction, whose row lock holds other writers of the account until it commits, so no
later number can commit before an earlier one. Every path that writes events (the
gateway's group commit, its PostgreSQL statements, the applier) gets it without a change.
Existing events are numbered by id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_TRIGGER = """
CREATE FUNCTION order_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO account_sequences (account, last_seq) VALUES (NEW.account, 1)
  ON CONFLICT (account) DO UPDATE SET last_seq = account_sequences.last_seq + 1
  RETURNING last_seq INTO NEW.seq;
  RETURN NEW;
END $$
"""
POSTGRES_TRIGGER_ON_EVENTS = """
CREATE TRIGGER order_events_seq BEFORE INSERT ON order_events
FOR EACH ROW EXECUTE FUNCTION order_event_seq()
"""

SQLITE_TRIGGER = """
CREATE TRIGGER order_events_seq AFTER INSERT ON order_events FOR EACH ROW BEGIN
  INSERT INTO account_sequences (account, last_seq) VALUES (NEW.account, 1)
  ON CONFLICT (account) DO UPDATE SET last_seq = last_seq + 1;
  UPDATE order_events SET seq = (
    SELECT last_seq FROM account_sequences WHERE account = NEW.account
  ) WHERE id = NEW.id;
END
"""


def upgrade() -> None:
    op.create_table(
        "account_sequences",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account"),
    )
    op.add_column("order_events", sa.Column("seq", sa.BigInteger(), nullable=True))
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
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_TRIGGER)  # one statement each: asyncpg prepares what it runs
        op.execute(POSTGRES_TRIGGER_ON_EVENTS)
    else:
        op.execute(SQLITE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER order_events_seq ON order_events")
        op.execute("DROP FUNCTION order_event_seq()")
    else:
        op.execute("DROP TRIGGER order_events_seq")
    op.drop_index("order_events_account_seq", table_name="order_events")
    op.drop_column("order_events", "seq")
    op.drop_table("account_sequences")
