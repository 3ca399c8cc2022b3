"""The platform interface: what runs an enclave, attests it and derives its sealing keys.

`SimPlatform` (asylo.identity.sim) and `HardwarePlatform` (asylo.identity.hardware: SEV-SNP and TDX through
configfs-tsm, Nitro through /dev/nsm) implement it on the enclave side; each has a `PlatformVerifier` on the host
side, so the session and the trusted runtime never change when one is added.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Protocol

from asylo.identity.identity import EnclaveIdentity
from asylo.proto import identity_pb2

REPORT_DATA_SIZE = 64
SEALING_KEY_SIZE = 32


class SealPolicy(enum.Enum):
    """What a sealing key is bound to, and so who can unseal.

    MEASUREMENT: exactly this build of the enclave. SIGNER: the enclaves of this signer and product id (and the
    same debug setting) at a given SVN or later: the key is bound to an SVN, and an enclave may ask for the key of
    its own SVN or any lower one but never a higher one (as SGX's EGETKEY), so an upgrade can still read what an
    old version sealed while an old version cannot read what a newer one sealed.
    """

    MEASUREMENT = "measurement"
    SIGNER = "signer"


class Platform(ABC):
    """One enclave's view of the platform it runs on: what the trusted runtime hands to enclave code.

    It offers that one enclave's identity, its evidence and its own sealing keys, and nothing else: no attribute of
    an implementation may lead to the platform's root secrets or make a platform for another identity (an enclave
    that could do that could attest as, and unseal the data of, every other enclave on the platform).
    """

    __slots__ = ()

    #: The platform kind ("sim", "snp", ...): a class attribute, or set per instance by a class serving several.
    kind: str

    @property
    @abstractmethod
    def identity(self) -> EnclaveIdentity:
        """The enclave this platform instance runs (and attests)."""

    @abstractmethod
    def evidence(self, report_data: bytes) -> bytes:
        """Serialized `identity_pb2.Evidence` for this enclave carrying `report_data` (exactly 64 bytes)."""

    @abstractmethod
    def sealing_key(self, policy: SealPolicy, identity: EnclaveIdentity, *, svn: int | None = None) -> bytes:
        """The 32-byte sealing key for `identity` under `policy`; only the enclave's own identity is allowed.

        SIGNER keys are bound to `svn` (default: the enclave's own SVN). A lower SVN than the enclave's own is
        allowed (an upgraded enclave reads what older versions sealed); a higher one is `PermissionDeniedError`,
        so an older enclave cannot get the key of what a newer one sealed. MEASUREMENT ignores `svn`: the
        measurement already covers the SVN.
        """


class PlatformProvider(Protocol):
    """A machine's platform as the untrusted side that loads enclaves sees it: the fingerprint hosts trust, and the
    `Platform` of each enclave it runs. The proxy, the provision server and the sim backend hold one of these, never
    a concrete platform: `SimPlatformKey` for the simulated platform, `HardwareProvider` for a TEE (configfs-tsm
    TDX/SNP, Nitro), each with a `PlatformVerifier` on the host side. `fingerprint` is what hosts trust: the sim
    key's fingerprint, or a hardware platform's kind (trusted by its vendor's roots and reference values)."""

    @property
    def kind(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def platform(self, identity: EnclaveIdentity) -> Platform: ...


class PlatformVerifier(ABC):
    """The host side of one platform kind: authenticates that platform's evidence.

    `EvidenceVerifier` does what is common to every platform (size, version, report data, the expectation) and
    hands the platform-specific part, "did a trusted platform of this kind really say this?", to the verifier
    registered for the evidence's `platform` kind.
    """

    #: The platform kind whose evidence this verifies (a class attribute, or set per instance).
    kind: str

    @abstractmethod
    def authenticate(self, evidence: identity_pb2.Evidence) -> EnclaveIdentity:
        """Check the platform's signature chain over all of `evidence` and return the identity it attests.

        Raise `AttestationError` naming what failed. Everything returned, and `evidence.report_data`, must be
        covered by what was checked.
        """
