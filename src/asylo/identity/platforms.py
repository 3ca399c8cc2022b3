"""The platform interface: what runs an enclave, attests it and derives its sealing keys.

`SimPlatform` is the one implementation today. Real TEEs (TDX/SEV-SNP through configfs-tsm, SGX through Gramine,
Nitro) implement this same interface on the enclave side and add a `PlatformVerifier` (asylo.identity.verify) on
the host side, so the session and the trusted runtime never change when one is added.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import ClassVar

from asylo.identity.identity import EnclaveIdentity
from asylo.proto import identity_pb2

REPORT_DATA_SIZE = 64
SEALING_KEY_SIZE = 32


class SealPolicy(enum.Enum):
    """What a sealing key is bound to, and so who can unseal.

    MEASUREMENT: exactly this build of the enclave. SIGNER: every enclave of this signer and product id (and the
    same debug setting), so an upgrade to a higher SVN can still read what the old version sealed.
    """

    MEASUREMENT = "measurement"
    SIGNER = "signer"


class Platform(ABC):
    """One enclave's view of the platform it runs on."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def identity(self) -> EnclaveIdentity:
        """The enclave this platform instance runs (and attests)."""

    @abstractmethod
    def evidence(self, report_data: bytes) -> bytes:
        """Serialized `identity_pb2.Evidence` for this enclave carrying `report_data` (exactly 64 bytes)."""

    @abstractmethod
    def sealing_key(self, policy: SealPolicy, identity: EnclaveIdentity) -> bytes:
        """The 32-byte sealing key for `identity` under `policy`; only the enclave's own identity is allowed."""


class PlatformVerifier(ABC):
    """The host side of one platform kind: authenticates that platform's evidence.

    `EvidenceVerifier` does what is common to every platform (size, version, report data, the expectation) and
    hands the platform-specific part, "did a trusted platform of this kind really say this?", to the verifier
    registered for the evidence's `platform` kind.
    """

    kind: ClassVar[str]

    @abstractmethod
    def authenticate(self, evidence: identity_pb2.Evidence) -> EnclaveIdentity:
        """Check the platform's signature chain over all of `evidence` and return the identity it attests.

        Raise `AttestationError` naming what failed. Everything returned, and `evidence.report_data`, must be
        covered by what was checked.
        """
