"""The evidence container: bounds, version and canonical encoding, whatever the platform.

Evidence arrives from an untrusted peer, so decoding is strict before any platform code looks at it: a size
bound, a known version, and bytes that are exactly the deterministic encoding of what they parse to (no unknown
fields riding along unsigned, no alternative encodings of one statement).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from asylo.proto import identity_pb2
from asylo.status import AttestationError

EVIDENCE_VERSION = 1
# Sim evidence is about 300 bytes; an SEV-SNP report with its VCEK, ASK and ARK about 5 KiB; a TDX quote (5 KiB,
# its PCK chain inside) with its DCAP collateral (about 16 KiB of JSON) about 21 KiB. Room for larger TCB infos.
MAX_EVIDENCE_SIZE = 64 * 1024


def encode_evidence(evidence: identity_pb2.Evidence) -> bytes:
    return evidence.SerializeToString(deterministic=True)


def decode_evidence(data: bytes | bytearray | memoryview) -> identity_pb2.Evidence:
    """Parse evidence from a peer; `AttestationError` names the first check that failed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise AttestationError(f"evidence must be bytes, got {type(data).__name__}")
    if len(data) > MAX_EVIDENCE_SIZE:
        raise AttestationError(f"evidence is {len(data)} bytes, over the limit of {MAX_EVIDENCE_SIZE}")
    raw = bytes(data)
    evidence = identity_pb2.Evidence()
    try:
        evidence.ParseFromString(raw)
    except DecodeError as exc:
        raise AttestationError(f"evidence is not a valid Evidence message: {exc}") from exc
    # The runtime keeps unknown fields and writes them back out; drop them so the comparison below sees them.
    evidence.DiscardUnknownFields()
    if encode_evidence(evidence) != raw:
        raise AttestationError("evidence is not canonically encoded (unknown fields or a non-canonical encoding)")
    if evidence.version != EVIDENCE_VERSION:
        raise AttestationError(
            f"unsupported evidence version {evidence.version} (this pyasylo reads version {EVIDENCE_VERSION})"
        )
    return evidence
