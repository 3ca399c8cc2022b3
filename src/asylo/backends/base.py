"""What the host side holds for a loaded enclave, whichever backend hosts it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class LoadedEnclave(Protocol):
    """A loaded enclave as the host sees it: entry calls in, exit calls served on the calling thread."""

    @property
    def name(self) -> str: ...

    @property
    def measurement(self) -> bytes:
        """SHA-256 measurement of the image the enclave was loaded from."""
        ...

    @property
    def signer(self) -> bytes:
        """SHA-256 of the public key that signed the image."""
        ...

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        """Make an entry call from the calling thread; raises AsyloError (EnclaveUnavailable once closed)."""
        ...

    def close(self, reason: str) -> None:
        """Tear the enclave down: pending and later calls fail with EnclaveUnavailable(reason). Idempotent."""
        ...

    @property
    def closed(self) -> bool: ...
