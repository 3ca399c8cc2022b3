"""The evidence container: bounds, version and canonical encoding, whatever the platform.

Evidence arrives from an untrusted peer, so decoding is strict before any platform code looks at it: a size
bound, a known version, and bytes that are exactly the deterministic encoding of what they parse to (no unknown
fields riding along unsigned, no alternative encodings of one statement).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from asylo.proto import identity_pb2
from asylo.status import AttestationError

EVIDENCE_VERSION = 1
# Sim evidence is about 300 bytes; an SEV-SNP report with its VCEK, ASK and ARK about 5 KiB; a TDX quote (5 KiB,
# its PCK chain inside) with its DCAP collateral (about 16 KiB of JSON) about 21 KiB. Room for larger TCB infos.
MAX_EVIDENCE_SIZE = 64 * 1024

M = TypeVar("M", bound=Message)


def encode_evidence(evidence: identity_pb2.Evidence) -> bytes:
    return evidence.SerializeToString(deterministic=True)


def decode_canonical(kind: type[M], data: bytes | bytearray | memoryview, limit: int, what: str) -> M:
    """Parse a message of `kind` from a peer strictly: at most `limit` bytes, and exactly the deterministic encoding
    of what it parses to (no unknown fields riding along unsigned, no second encoding of one statement).
    `AttestationError` naming `what` ("evidence", "the TPM quote") says which check failed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AttestationError(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > limit:
        raise AttestationError(f"{what} is {len(data)} bytes, over the limit of {limit}")
    raw = bytes(data)
    message = kind()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise AttestationError(f"{what} is not a valid {kind.__name__} message: {exc}") from None
    # The runtime keeps unknown fields and writes them back out; drop them so the comparison below sees them.
    message.DiscardUnknownFields()
    if message.SerializeToString(deterministic=True) != raw:
        raise AttestationError(f"{what} is not canonically encoded (unknown fields or a non-canonical encoding)")
    return message


def decode_evidence(data: bytes | bytearray | memoryview) -> identity_pb2.Evidence:
    """Parse evidence from a peer; `AttestationError` names the first check that failed."""
    evidence = decode_canonical(identity_pb2.Evidence, data, MAX_EVIDENCE_SIZE, "evidence")
    if evidence.version != EVIDENCE_VERSION:
        raise AttestationError(
            f"unsupported evidence version {evidence.version} (this pyasylo reads version {EVIDENCE_VERSION})"
        )
    return evidence
