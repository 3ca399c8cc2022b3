"""Platform key fingerprints: how operators name a platform key and how hosts say which ones they trust.

A fingerprint is the lowercase hex SHA-256 of the raw public key: one fixed format for every key type, short
enough to paste into `--trust-platform`, and impossible to confuse with the key itself.
"""

from __future__ import annotations

import hashlib
import re

from asylo.status import InvalidArgumentError

_FINGERPRINT_PATTERN = re.compile(r"[0-9a-f]{64}")


def platform_fingerprint(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()


def parse_fingerprint(text: str) -> str:
    """The canonical (lowercase) form of a fingerprint someone typed; `InvalidArgumentError` if it is not one."""
    if not isinstance(text, str):
        raise InvalidArgumentError(f"platform fingerprint must be a string, got {type(text).__name__}")
    canonical = text.strip().lower()
    if not _FINGERPRINT_PATTERN.fullmatch(canonical):
        raise InvalidArgumentError(
            f"not a platform fingerprint: {text!r} (expected 64 hex digits, as `asylo platform show` prints)"
        )
    return canonical
