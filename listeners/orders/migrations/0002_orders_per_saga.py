"""Order-status database: state per saga (primary key saga_id); an order may have several.

Revision ID: 0002_orders_per_saga
Revises: 0001_orders
Create Date: 2026-11-21

"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002_orders_per_saga"
down_revision: str | Sequence[str] | None = "0001_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Key orders by saga_id; index order_id, created_at."""
    with op.batch_alter_table("orders", recreate="always") as batch:
        batch.drop_constraint("uq_orders_saga_id", type_="unique")
        batch.drop_constraint("pk_orders", type_="primary")
        batch.create_primary_key("pk_orders", ["saga_id"])
        batch.create_index("ix_orders_order_id_created_at", ["order_id", "created_at"])


def downgrade() -> None:
    """Key orders by order_id again, keeping each order's newest saga."""
    # Keeps each order's most recently started saga: the primary key is order_id again.
    op.execute(
        "DELETE FROM orders WHERE EXISTS (SELECT 1 FROM orders newer "
        "WHERE newer.order_id = orders.order_id AND (newer.created_at > orders.created_at "
        "OR (newer.created_at = orders.created_at AND newer.saga_id > orders.saga_id)))"
    )
    with op.batch_alter_table("orders", recreate="always") as batch:
        batch.drop_index("ix_orders_order_id_created_at")
        batch.drop_constraint("pk_orders", type_="primary")
        batch.create_primary_key("pk_orders", ["order_id"])
        batch.create_unique_constraint("uq_orders_saga_id", ["saga_id"])
