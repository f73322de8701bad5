"""Order-status database: orders and their timeline (order_events).

Revision ID: 0001_orders
Revises:
Create Date: 2026-11-21

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_orders"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create orders and order_events."""
    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("saga_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("current_service", sa.String(length=100), nullable=True),
        sa.Column("current_step", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint("saga_id", name=op.f("uq_orders_saga_id")),
    )
    op.create_index(
        op.f("ix_orders_status_updated_at"), "orders", ["status", "updated_at"], unique=False
    )
    op.create_index(op.f("ix_orders_updated_at"), "orders", ["updated_at"], unique=False)

    op.create_table(
        "order_events",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=True),
        sa.Column("service", sa.String(length=100), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "seq", name=op.f("pk_order_events")),
    )
    op.create_index(
        op.f("ix_order_events_order_id_seq"), "order_events", ["order_id", "seq"], unique=False
    )


def downgrade() -> None:
    """Drop orders and order_events."""
    op.drop_index(op.f("ix_order_events_order_id_seq"), table_name="order_events")
    op.drop_table("order_events")
    op.drop_index(op.f("ix_orders_updated_at"), table_name="orders")
    op.drop_index(op.f("ix_orders_status_updated_at"), table_name="orders")
    op.drop_table("orders")
