"""orders refused by the gateway's own risk checks are denied, not rejected

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 01:40:00

`rejected` stays for the venue's refusals (NautilusTrader's distinction). An order the risk
checks refused carries its check's code (`risk.*`) as its reason; its status, and the
event that ended it, become `denied`. The answers stored for replays keep what was sent.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE order_events SET to_status = 'denied' WHERE to_status = 'rejected'"
        " AND reason LIKE 'risk.%'"
    )
    op.execute(
        "UPDATE orders SET status = 'denied' WHERE status = 'rejected'"
        " AND reject_reason LIKE 'risk.%'"
    )


def downgrade() -> None:
    op.execute("UPDATE order_events SET to_status = 'rejected' WHERE to_status = 'denied'")
    op.execute("UPDATE orders SET status = 'rejected' WHERE status = 'denied'")
