"""Alembic revisions of the trips listener."""
