"""The refusals of a provision server that a limit caused, each with the reason the metrics count it under.

Several limits end in the same status code (RESOURCE_EXHAUSTED: the enclave limits, the image size, uploads in
progress, the store's quota; DEADLINE_EXCEEDED: an upload too slow), but an operator reading the metrics needs to
tell them apart: "clients hit the per-client enclave limit" and "the disk is full" call for different actions. So
the code that hits a limit says which one (`reason`, one of metrics.REJECT_REASONS), and the service counts that.
The store, the session table and the service all raise these; this module depends on none of them.
"""

from __future__ import annotations

from asylo.status import DeadlineExceededError, ResourceExhaustedError


class LimitExceededError(ResourceExhaustedError):
    """RESOURCE_EXHAUSTED with the limit that was hit (`reason`, for the metrics' reject reason)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TimeLimitExceededError(DeadlineExceededError):
    """DEADLINE_EXCEEDED of one of the server's own time limits (not the client's deadline), with its `reason`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def reject_reason(error: Exception) -> str | None:
    """The reason a limit error carries, else None (the caller falls back on the status code)."""
    if isinstance(error, LimitExceededError | TimeLimitExceededError):
        return error.reason
    return None
