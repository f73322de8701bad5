"""Exceptions of the ``compensations`` package.

Tree::

    CompensationError                 root of this package
    └── PolicyError                   a RetryPolicy was built with impossible values
"""

from __future__ import annotations


class CompensationError(Exception):
    """Root of every error raised by ``compensations``."""


class PolicyError(CompensationError, ValueError):
    """A retry policy has impossible values; the message names the field and the fix."""
