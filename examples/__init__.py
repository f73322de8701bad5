"""Runnable examples built on the public API of saga-coordinator."""
