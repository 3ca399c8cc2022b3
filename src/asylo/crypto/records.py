"""The record layer: every session payload sealed with AES-256-GCM under a per-record sequence number.

Each direction has its own key and its own counter. The nonce is the 96-bit big-endian sequence number and is
never sent: the receiver knows which number comes next, so a replayed, reordered, dropped or altered record fails
authentication. The AAD is the direction label followed by the 64-bit sequence number, so a record is also bound
to its direction even if both directions were (wrongly) given the same key.

Any failure kills the opener for good: after a bad record the stream's position is unknown, and continuing would
hand an attacker an oracle. The session aborts instead. The counter refuses to wrap, since a repeated nonce
under one GCM key gives away the authentication key.

Both classes are safe to share between threads (a lock makes "take the next number" atomic, so two threads can
never seal under one nonce), but records must reach the peer in the order they were sealed.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from asylo.status import DataLossError, InvalidArgumentError

RECORD_KEY_SIZE = 32  # AES-256 only: one key size, nothing to negotiate or get wrong
TAG_SIZE = 16
NONCE_SIZE = 12
# The sequence number travels as 8 bytes in the AAD; 2**64 - 1 records per direction, then the session must end.
MAX_RECORDS = 2**64 - 1
# Labels are short protocol constants; a bound catches a payload passed as the label by mistake.
_MAX_DIRECTION_SIZE = 64


class RecordError(DataLossError):
    """A record did not authenticate (altered, replayed, reordered, truncated) or the layer can go no further."""


class _RecordState:
    """What both ends of one direction share: the cipher (set up once), the label and the counter."""

    __slots__ = ("_aead", "_dead", "_direction", "_key", "_lock", "_seq")

    def __init__(self, key: bytes, direction: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != RECORD_KEY_SIZE:
            raise InvalidArgumentError(f"record key must be {RECORD_KEY_SIZE} bytes (AES-256)")
        self._key = algorithms.AES(bytes(key))
        if not isinstance(direction, bytes) or not 0 < len(direction) <= _MAX_DIRECTION_SIZE:
            raise InvalidArgumentError(f"record direction must be a label of 1 to {_MAX_DIRECTION_SIZE} bytes")
        self._aead = AESGCM(bytes(key))
        self._direction = direction
        self._lock = threading.Lock()
        self._seq = 0
        self._dead = False

    @property
    def sequence(self) -> int:
        """The sequence number of the next record."""
        return self._seq

    def _nonce_and_aad(self, seq: int) -> tuple[bytes, bytes]:
        return seq.to_bytes(NONCE_SIZE, "big"), self._direction + seq.to_bytes(8, "big")


class RecordSealer(_RecordState):
    """The sending end of one direction: `seal` each payload in the order it will be sent."""

    __slots__ = ()

    def seal(self, plaintext: bytes | bytearray | memoryview) -> bytes:
        """ciphertext || 16-byte tag for the next sequence number; the plaintext is not copied."""
        seq = self._take_sequence()
        nonce, aad = self._nonce_and_aad(seq)
        try:
            return self._aead.encrypt(nonce, plaintext, aad)
        except (OverflowError, TypeError, ValueError) as exc:
            raise self._failed(seq, exc) from exc

    def seal_into(self, parts: Sequence[bytes | bytearray | memoryview], out: memoryview) -> int:
        """The record of the concatenation of `parts`, written into `out`; its length. The same record as
        `seal(b"".join(parts))`, without the join or a fresh buffer: a large body's fragment goes from the caller's
        extents into `out` in one pass of the cipher (a fresh megabyte per record costs more than encrypting it).
        `out` needs room for the plaintext, the tag and 15 bytes the cipher may use."""
        size = sum(len(part) for part in parts)
        if len(out) < size + TAG_SIZE + 15:
            raise InvalidArgumentError(f"a {size}-byte record needs {size + TAG_SIZE + 15} bytes of room")
        seq = self._take_sequence()
        nonce, aad = self._nonce_and_aad(seq)
        try:
            encryptor = Cipher(self._key, modes.GCM(nonce)).encryptor()
            encryptor.authenticate_additional_data(aad)
            written = 0
            for part in parts:
                written += encryptor.update_into(part, out[written:])
            encryptor.finalize()
            out[written:written + TAG_SIZE] = encryptor.tag
        except (OverflowError, TypeError, ValueError) as exc:
            raise self._failed(seq, exc) from exc
        return written + TAG_SIZE

    def _take_sequence(self) -> int:
        """The next record's number, spent from here on (never reuse a nonce)."""
        with self._lock:
            if self._dead:
                raise RecordError("record sealer is closed after an earlier failure")
            seq = self._seq
            if seq >= MAX_RECORDS:
                self._dead = True
                raise RecordError(f"record sequence numbers exhausted after {MAX_RECORDS} records; start a new session")
            self._seq = seq + 1
            return seq

    def _failed(self, seq: int, exc: Exception) -> RecordError:
        # The number is spent either way (never reuse a nonce); the peer will miss it, so end here too.
        with self._lock:
            self._dead = True
        return RecordError(f"cannot seal record {seq}: {exc}")


class RecordOpener(_RecordState):
    """The receiving end of one direction: `open` each record in the order it arrived."""

    __slots__ = ()

    def open(self, record: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of the next record; `RecordError` (and a dead opener) for anything else."""
        # Held across the decryption: two threads must not both accept a record under one sequence number.
        with self._lock:
            if self._dead:
                raise RecordError("record opener is closed after an earlier bad record; the session must end")
            seq = self._seq
            try:
                if seq >= MAX_RECORDS:
                    raise RecordError(f"record sequence numbers exhausted after {MAX_RECORDS} records")
                if len(record) < TAG_SIZE:
                    raise RecordError(f"record {seq} is {len(record)} bytes, shorter than its {TAG_SIZE}-byte tag")
                nonce, aad = self._nonce_and_aad(seq)
                try:
                    plaintext = self._aead.decrypt(nonce, record, aad)
                except InvalidTag as exc:
                    raise RecordError(
                        f"record {seq} does not authenticate: altered, replayed, reordered or from another key"
                    ) from exc
                except (OverflowError, TypeError, ValueError) as exc:
                    raise RecordError(f"record {seq} cannot be opened: {exc}") from exc
            except BaseException:
                self._dead = True
                raise
            self._seq = seq + 1
            return plaintext
