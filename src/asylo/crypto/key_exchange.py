"""X25519 key shares: each side of a handshake makes a fresh one, sends `public`, and exchanges with the peer's.

A share is ephemeral on purpose: a new one per handshake gives every session keys that no later compromise of a
long-term key can recover (forward secrecy). Peer keys come off the network, so a malformed one or one on a
low-order point (which would force a shared secret the attacker knows) is refused as an `InvalidArgumentError`
rather than turned into a weak secret.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from asylo.status import InvalidArgumentError

KEY_SHARE_SIZE = 32
SHARED_SECRET_SIZE = 32
_ZERO_SECRET = bytes(SHARED_SECRET_SIZE)


class KeyShare:
    """One side's ephemeral X25519 key pair; make one with `KeyShare.generate()` for every handshake."""

    __slots__ = ("_private", "public")

    def __init__(self, private_key: X25519PrivateKey) -> None:
        # Private: `generate` is the way to get one, so no caller ever picks (or reuses) the private key.
        self._private = private_key
        self.public: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyShare:
        return cls(X25519PrivateKey.generate())

    def exchange(self, peer_public: bytes) -> bytes:
        """The 32-byte shared secret with the peer whose raw public key share is `peer_public`.

        Feed it to `derive_session_keys`, never use it as a key directly.
        """
        if not isinstance(peer_public, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"peer key share must be bytes, got {type(peer_public).__name__}")
        peer_bytes = bytes(peer_public)
        if len(peer_bytes) != KEY_SHARE_SIZE:
            raise InvalidArgumentError(
                f"peer key share must be {KEY_SHARE_SIZE} bytes (raw X25519), got {len(peer_bytes)}"
            )
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_bytes))
        except ValueError as exc:
            # OpenSSL refuses the all-zero result that low-order points produce.
            raise InvalidArgumentError("peer key share is a low-order X25519 point (no shared secret)") from exc
        if shared == _ZERO_SECRET:  # belt and braces: never hand out a secret every attacker knows
            raise InvalidArgumentError("peer key share is a low-order X25519 point (no shared secret)")
        return shared

    def __repr__(self) -> str:
        return f"KeyShare(public={self.public.hex()})"
