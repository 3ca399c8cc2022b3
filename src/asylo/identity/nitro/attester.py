"""The Nitro attester: an attestation document from the Nitro Secure Module whose user_data is the runtime binding.

The document carries its own certificate chain (cabundle), so nothing else travels with it.
"""

from __future__ import annotations

from asylo.identity.launch import Endorsements
from asylo.identity.nitro.nsm import NitroSecureModule

KIND = "nitro"


class NitroAttester:
    """Makes Nitro evidence inside a Nitro enclave (a `QuoteAttester`)."""

    kind = KIND

    def __init__(self, nsm: NitroSecureModule) -> None:
        self._nsm = nsm

    def attest(self, report_data: bytes) -> tuple[bytes, Endorsements]:
        return self._nsm.attestation(report_data), Endorsements()

    def __repr__(self) -> str:
        return f"NitroAttester({self._nsm!r})"
