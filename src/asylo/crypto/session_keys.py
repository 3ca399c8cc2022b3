"""Session keys: one AES-256 key per direction, derived from the handshake's shared secret and transcript.

HKDF-SHA256 with the transcript hash as salt binds the keys to everything both sides saw in the handshake, so
a man in the middle who changed any handshake message ends up with keys the other side does not have. Two keys,
one per direction, so a record can never be reflected back to its sender and accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asylo.crypto.key_exchange import SHARED_SECRET_SIZE
from asylo.crypto.records import RecordOpener, RecordSealer
from asylo.status import InvalidArgumentError

SESSION_KEYS_INFO = b"asylo-session-v1 keys"
SESSION_KEY_SIZE = 32  # AES-256
TRANSCRIPT_HASH_SIZE = 32  # SHA-256
# The direction labels records are bound to (their AAD prefix): a label per direction, fixed by the protocol.
HOST_TO_ENCLAVE = b"host->enclave"
ENCLAVE_TO_HOST = b"enclave->host"


class RecordChannel(NamedTuple):
    """One side's record layer: `sealer` for what it sends, `opener` for what it receives."""

    sealer: RecordSealer
    opener: RecordOpener


@dataclass(frozen=True)
class SessionKeys:
    """The two directions' keys; `repr` hides them so a log line or a traceback never prints a key."""

    host_to_enclave: bytes = field(repr=False)
    enclave_to_host: bytes = field(repr=False)

    def __post_init__(self) -> None:
        for name in ("host_to_enclave", "enclave_to_host"):
            key = getattr(self, name)
            if not isinstance(key, bytes) or len(key) != SESSION_KEY_SIZE:
                raise InvalidArgumentError(f"session key {name} must be {SESSION_KEY_SIZE} bytes")

    def for_host(self) -> RecordChannel:
        """The host's record layer: seals host->enclave, opens enclave->host."""
        return RecordChannel(
            RecordSealer(self.host_to_enclave, HOST_TO_ENCLAVE), RecordOpener(self.enclave_to_host, ENCLAVE_TO_HOST)
        )

    def for_enclave(self) -> RecordChannel:
        """The enclave's record layer: seals enclave->host, opens host->enclave."""
        return RecordChannel(
            RecordSealer(self.enclave_to_host, ENCLAVE_TO_HOST), RecordOpener(self.host_to_enclave, HOST_TO_ENCLAVE)
        )


def derive_session_keys(shared_secret: bytes, transcript_hash: bytes) -> SessionKeys:
    """HKDF-SHA256(ikm=shared_secret, salt=transcript_hash, info="asylo-session-v1 keys") -> 64 bytes, split."""
    if not isinstance(shared_secret, bytes) or len(shared_secret) != SHARED_SECRET_SIZE:
        raise InvalidArgumentError(f"shared secret must be {SHARED_SECRET_SIZE} bytes (from KeyShare.exchange)")
    if not isinstance(transcript_hash, bytes) or len(transcript_hash) != TRANSCRIPT_HASH_SIZE:
        raise InvalidArgumentError(f"transcript hash must be a {TRANSCRIPT_HASH_SIZE}-byte SHA-256 digest")
    okm = HKDF(
        algorithm=hashes.SHA256(), length=2 * SESSION_KEY_SIZE, salt=transcript_hash, info=SESSION_KEYS_INFO
    ).derive(shared_secret)
    return SessionKeys(host_to_enclave=okm[:SESSION_KEY_SIZE], enclave_to_host=okm[SESSION_KEY_SIZE:])
