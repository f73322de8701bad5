"""Trips database: trips (one row per trip booking saga) and their timeline

Revision ID: 0001_trips
Revises:
Create Date: 2026-11-21 19:28:26.628091

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_trips"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create trips and trips_timeline."""

    op.create_table(
        "trips",
        sa.Column("destination", sa.String(length=100), nullable=True),
        sa.Column("flight", sa.String(length=40), nullable=True),
        sa.Column("hotel", sa.String(length=40), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("events_seen", sa.Integer(), nullable=False),
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("business_key", sa.String(length=200), nullable=False),
        sa.Column("saga_type", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("current_step", sa.String(length=100), nullable=True),
        sa.Column("current_service", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", name=op.f("pk_trips")),
    )
    with op.batch_alter_table("trips", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trips_business_key_started_at"),
            ["business_key", "started_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_trips_status_updated_at"), ["status", "updated_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_trips_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "trips_timeline",
        sa.Column("saga_id", sa.String(length=200), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("business_key", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("step", sa.String(length=100), nullable=True),
        sa.Column("service", sa.String(length=100), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "seq", name=op.f("pk_trips_timeline")),
    )
    with op.batch_alter_table("trips_timeline", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trips_timeline_business_key_seq"), ["business_key", "seq"], unique=False
        )


def downgrade() -> None:
    """Drop trips and trips_timeline."""

    with op.batch_alter_table("trips_timeline", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trips_timeline_business_key_seq"))

    op.drop_table("trips_timeline")
    with op.batch_alter_table("trips", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trips_updated_at"))
        batch_op.drop_index(batch_op.f("ix_trips_status_updated_at"))
        batch_op.drop_index(batch_op.f("ix_trips_business_key_started_at"))

    op.drop_table("trips")
