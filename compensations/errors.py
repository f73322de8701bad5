"""Exceptions of the ``compensations`` package.

Tree::

    CompensationError                 root of this package
    ├── PolicyError                   a RetryPolicy was built with impossible values
    └── HttpCallError                 an HTTP participant call failed
        ├── TransientHttpError        connect error, timeout, 5xx, 429: retrying may help
        └── BusinessHttpError         other 4xx: the participant said no; never retried

Every error exposes ``non_retryable`` so executors can classify it without importing
this module's types.
"""

from __future__ import annotations


class CompensationError(Exception):
    """Root of every error raised by ``compensations``."""

    non_retryable: bool = False


class PolicyError(CompensationError, ValueError):
    """A retry policy has impossible values; the message names the field and the fix."""

    non_retryable = True


class HttpCallError(CompensationError):
    """An HTTP call to a participant failed."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TransientHttpError(HttpCallError):
    """Connect error, timeout, 5xx or 429: the same request may succeed later."""

    non_retryable = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class BusinessHttpError(HttpCallError):
    """A 4xx answer (other than 408/429): a business refusal, never retried."""

    non_retryable = True
