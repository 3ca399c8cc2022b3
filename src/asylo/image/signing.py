"""Signing keys and image signatures (Ed25519).

The signature covers `b"pyasylo-signature-v1\\0" || measurement (32 bytes) || canonical manifest encoding`
(see `asylo.image.measurement`). The measurement already commits to the manifest; the manifest is repeated so
that the signed statement can be read without recomputing the digest, and the prefix keeps an image signature
from ever being valid as a signature over anything else the same key might sign.

A signer is named by its *signer id*: SHA-256 of the raw 32-byte public key, so that ids have one fixed size
and format whatever the key type a later version adds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from asylo._files import read_bounded, write_new_file
from asylo.image.errors import ImageError, ImageVerificationError
from asylo.image.manifest import Manifest
from asylo.image.measurement import encode_manifest

SIGNATURE_DOMAIN = b"pyasylo-signature-v1\0"
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
# A PEM Ed25519 key is about 120 bytes; a bound keeps `load_signing_key` from reading a huge file by mistake.
_MAX_KEY_FILE_SIZE = 64 * 1024


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key, as stored in images."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signer_id(public_key: bytes) -> bytes:
    """The 32-byte id of the signer with this raw public key: its SHA-256."""
    return hashlib.sha256(public_key).digest()


def signing_payload(measurement: bytes, manifest: Manifest) -> bytes:
    return SIGNATURE_DOMAIN + measurement + encode_manifest(manifest)


def sign_measurement(key: Ed25519PrivateKey, measurement: bytes, manifest: Manifest) -> bytes:
    """The 64-byte signature over the signing payload; deterministic (Ed25519), so builds are reproducible."""
    return key.sign(signing_payload(measurement, manifest))


def verify_signature(public_key: bytes, signature: bytes, measurement: bytes, manifest: Manifest) -> None:
    """Raise `ImageVerificationError` unless `signature` is the signer's over this measurement + manifest."""
    try:
        public = Ed25519PublicKey.from_public_bytes(public_key)
        public.verify(signature, signing_payload(measurement, manifest))
    except (InvalidSignature, ValueError) as exc:
        raise ImageVerificationError(
            f"signature does not verify for signer {signer_id(public_key).hex()}"
        ) from exc


def save_signing_key(
    key: Ed25519PrivateKey, path: str | os.PathLike[str], *, overwrite: bool = False
) -> None:
    """Write the key as unencrypted PKCS#8 PEM, readable by the owner only (mode 0600).

    The file is created with mode 0600 by `os.open`, so there is no moment when the key is on disk with wider
    permissions. Without `overwrite` an existing file is refused (it may be the only copy of another key);
    with it the new key is written to a temporary file and renamed over the old one, so a crash leaves one key
    or the other.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    target = Path(path)
    if not overwrite:
        try:
            write_new_file(target, pem, 0o600)
        except FileExistsError as exc:
            raise ImageError(f"{target}: key file already exists; refusing to overwrite it") from exc
        return
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    write_new_file(temporary, pem, 0o600)
    try:
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read a PEM key written by `save_signing_key`; errors say whether it is missing or of the wrong kind."""
    target, data = read_bounded(path, _MAX_KEY_FILE_SIZE, "signing key", ImageError)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # TypeError: the key is encrypted; ValueError: not PEM, or PEM of something that is not a private key;
        # UnsupportedAlgorithm: a key type this cryptography build cannot load.
        raise ImageError(f"{target}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ImageError(f"{target}: not an Ed25519 key (got {type(key).__name__})")
    return key
