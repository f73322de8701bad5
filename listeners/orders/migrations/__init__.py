"""Alembic revisions of the order-status listener (shipped with the package)."""
