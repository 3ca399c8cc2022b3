"""Status codes and the exception hierarchy every layer raises.

An error that crosses the enclave boundary travels as a (code, message) pair and is raised again on the other side as
the exception class for its code, so callers catch `NotFoundError` whether the enclave runs in-process or remotely.
The codes are the canonical ones that gRPC and Asylo share (google.rpc.Code).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from asylo.proto import status_pb2


class StatusCode(enum.IntEnum):
    """Canonical status codes; the same numbers as `asylo.StatusCode` in status.proto and as gRPC's."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class Status:
    """An operation's outcome: OK, or a code and a message saying what went wrong."""

    code: StatusCode = StatusCode.OK
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == StatusCode.OK

    def to_proto(self) -> status_pb2.StatusProto:
        return status_pb2.StatusProto(code=int(self.code), message=self.message)  # type: ignore[arg-type]

    @classmethod
    def from_proto(cls, proto: status_pb2.StatusProto) -> Status:
        return cls(code_or_unknown(proto.code), proto.message)

    @classmethod
    def from_exception(cls, exc: BaseException) -> Status:
        """The status an exception stands for: its own code if it is an AsyloError, else UNKNOWN with its type."""
        if isinstance(exc, AsyloError):
            return cls(exc.code, exc.message)
        try:
            text = str(exc)
        except Exception:  # a user's exception whose __str__ fails must not take the answer down with it
            text = "<the exception could not be printed>"
        return cls(StatusCode.UNKNOWN, f"{type(exc).__name__}: {text}")

    def raise_for_status(self) -> None:
        """Raise the exception for this status; do nothing if it is OK."""
        if not self.ok:
            raise error_for(self.code, self.message)

    def __str__(self) -> str:
        return self.code.name if not self.message else f"{self.code.name}: {self.message}"


def code_or_unknown(value: int) -> StatusCode:
    """The StatusCode for a number that came from a peer (UNKNOWN for one we do not know)."""
    # A peer may send a number we do not know; that is its error, reported as UNKNOWN rather than a crash here.
    try:
        return StatusCode(value)
    except ValueError:
        return StatusCode.UNKNOWN


class AsyloError(Exception):
    """Base of every error pyasylo raises; `code` is the canonical status code, `message` the explanation."""

    code: ClassVar[StatusCode] = StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status(self) -> Status:
        return Status(self.code, self.message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class CancelledError(AsyloError):
    code = StatusCode.CANCELLED


class UnknownError(AsyloError):
    code = StatusCode.UNKNOWN


class InvalidArgumentError(AsyloError):
    code = StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(AsyloError):
    code = StatusCode.DEADLINE_EXCEEDED


class NotFoundError(AsyloError):
    code = StatusCode.NOT_FOUND


class AlreadyExistsError(AsyloError):
    code = StatusCode.ALREADY_EXISTS


class PermissionDeniedError(AsyloError):
    code = StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(AsyloError):
    code = StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(AsyloError):
    code = StatusCode.FAILED_PRECONDITION


class AbortedError(AsyloError):
    code = StatusCode.ABORTED


class OutOfRangeError(AsyloError):
    code = StatusCode.OUT_OF_RANGE


class UnimplementedError(AsyloError):
    code = StatusCode.UNIMPLEMENTED


class InternalError(AsyloError):
    code = StatusCode.INTERNAL


class EnclaveUnavailable(AsyloError):  # noqa: N818 - the name Asylo's users know; it is an error all the same
    """The enclave cannot be reached: destroyed, aborted, or its proxy or connection is gone."""

    code = StatusCode.UNAVAILABLE


class DataLossError(AsyloError):
    code = StatusCode.DATA_LOSS


class UnauthenticatedError(AsyloError):
    code = StatusCode.UNAUTHENTICATED


class AttestationError(UnauthenticatedError):
    """The peer's platform evidence or enclave identity was not accepted: the message says which check failed.

    A subclass, not a code of its own, so that it crosses the boundary as UNAUTHENTICATED like any other failed
    authentication, while local callers can still catch the attestation case on its own.
    """


_ERROR_FOR_CODE: dict[StatusCode, type[AsyloError]] = {
    cls.code: cls
    for cls in (
        CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError, NotFoundError,
        AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError, FailedPreconditionError, AbortedError,
        OutOfRangeError, UnimplementedError, InternalError, EnclaveUnavailable, DataLossError, UnauthenticatedError,
    )
}


def error_for(code: StatusCode, message: str) -> AsyloError:
    """The exception for a non-OK status code (UNKNOWN for OK, which is not an error and so a caller's bug)."""
    return _ERROR_FOR_CODE.get(code, UnknownError)(message)
