"""Cryptographic building blocks of the session, as thin, hard-to-misuse wrappers over `cryptography`.

    host_share = KeyShare.generate()                                   # each side: a fresh X25519 share
    keys = derive_session_keys(host_share.exchange(peer_public), transcript_hash)
    sealer, opener = keys.for_host()                                   # AES-256-GCM per direction
    record = sealer.seal(payload); payload = peer_opener.open(record)  # RecordError on anything wrong

Each module holds one concept: `key_exchange` (X25519), `session_keys` (HKDF), `records` (the AEAD record layer).
This package sits at the bottom of the layers: it imports nothing of pyasylo but `asylo.status`.
"""

from __future__ import annotations

from asylo.crypto.key_exchange import KEY_SHARE_SIZE, SHARED_SECRET_SIZE, KeyShare
from asylo.crypto.records import MAX_RECORDS, RECORD_KEY_SIZE, TAG_SIZE, RecordError, RecordOpener, RecordSealer
from asylo.crypto.session_keys import (
    ENCLAVE_TO_HOST,
    HOST_TO_ENCLAVE,
    SESSION_KEY_SIZE,
    SESSION_KEYS_INFO,
    TRANSCRIPT_HASH_SIZE,
    RecordChannel,
    SessionKeys,
    derive_session_keys,
)

__all__ = [
    "ENCLAVE_TO_HOST",
    "HOST_TO_ENCLAVE",
    "KEY_SHARE_SIZE",
    "MAX_RECORDS",
    "RECORD_KEY_SIZE",
    "SESSION_KEYS_INFO",
    "SESSION_KEY_SIZE",
    "SHARED_SECRET_SIZE",
    "TAG_SIZE",
    "TRANSCRIPT_HASH_SIZE",
    "KeyShare",
    "RecordChannel",
    "RecordError",
    "RecordOpener",
    "RecordSealer",
    "SessionKeys",
    "derive_session_keys",
]
