"""What a hardware TEE measured when it launched, once verified, and what a host may require of it.

A confidential VM (SEV-SNP, TDX), an SGX enclave or a Nitro Enclave is measured by the hardware at launch: its
launch measurement, its policy, its TCB. That is the first layer of an enclave's identity on real hardware. The
second is the image that pyasylo's trusted runtime, part of what was measured, reports having loaded (an
`EnclaveIdentity`). The hardware's report data binds the two (see `asylo.identity.hardware`).

Each hardware platform has a `QuoteVerifier` here: it takes the vendor's evidence (a report, a quote, an
attestation document) and its endorsements (certificates, collateral), checks it offline against the vendor's
roots pinned in the code, and returns a `LaunchIdentity`: the verified facts, and the report data the hardware
signed. It knows nothing of sessions, so `asylo evidence verify` runs it on a file as the session runs it on a
welcome. What the host then requires of those facts is a `LaunchExpectation` (`SnpLaunch`, `TdxLaunch`,
`SgxEnclave`, `NitroPcrs`), which combines with the image expectations through `AllOf`.
"""

from __future__ import annotations

import datetime
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from asylo.identity.expectations import IdentityExpectation
from asylo.status import InvalidArgumentError

if TYPE_CHECKING:
    from asylo.identity.identity import EnclaveIdentity


@dataclass(frozen=True)
class Endorsements:
    """What travels beside the vendor's evidence so it can be verified offline.

    `certificates`: DER certificates the evidence is checked with, leaf first (SNP: the VCEK or VLEK, then
    optionally the ASK and ARK; the verifier still demands an ARK pinned in the code). `collateral`: the DCAP
    collateral as JSON (TDX and SGX: TCB info, QE identity, CRLs and their issuer chains).
    """

    certificates: tuple[bytes, ...] = ()
    collateral: bytes = b""


class LaunchIdentity(ABC):
    """Facts a hardware platform attested about a launch, every one covered by a verified signature.

    Implementations are frozen dataclasses. `report_data` is what the hardware signed as chosen by the guest
    (64 bytes for SNP, TDX and SGX; Nitro's `user_data`, whatever length it has), and `debug` whether the hardware
    leaves the guest's memory open to its host (a debug policy bit, a debug TD, an SGX debug enclave, a Nitro
    enclave started in debug mode).
    """

    __slots__ = ()

    kind: ClassVar[str]

    report_data: bytes
    debug: bool

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and refusals: the platform kind and its main measurement."""

    @abstractmethod
    def to_json(self) -> dict[str, object]:
        """The facts as JSON-ready values (bytes as lowercase hex), with "kind" first: what `asylo evidence
        verify` prints and what an operator copies into an expectation."""


class QuoteVerifier(ABC):
    """The host side of one hardware platform: vendor evidence in, verified `LaunchIdentity` out.

    `at` is the time to verify certificates, CRLs, collateral and freshness against (default: now, UTC); passing
    it is how a test or an operator checks evidence as of when it was made. Every refusal is an
    `AttestationError` whose message says what failed. Nothing here touches the network.
    """

    kind: ClassVar[str]

    @abstractmethod
    def verify(self, evidence: bytes, endorsements: Endorsements, *,
               at: datetime.datetime | None = None) -> LaunchIdentity:
        """The verified launch; AttestationError naming the first check that failed."""

    def expected_report_data(self, report_data: bytes) -> bytes:
        """What this platform's hardware signs when its attester is asked to carry `report_data` (64 bytes): the
        bytes themselves (SNP, TDX, SGX, Nitro), or a digest where the hardware takes less (a TPM's qualifying
        data). The host compares the launch's `report_data` with this."""
        return report_data


def verification_time(at: datetime.datetime | None) -> datetime.datetime:
    """`at` as an aware UTC time (a naive one is taken as UTC), or now."""
    if at is None:
        return datetime.datetime.now(datetime.UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=datetime.UTC)
    return at.astimezone(datetime.UTC)


class LaunchExpectation(IdentityExpectation):
    """An expectation on the hardware layer of an identity: the launch of platform `kind`.

    It fails for an identity without a verified launch of that kind (a sim enclave, another TEE), so
    `AllOf(SnpLaunch(...), MeasurementIs(image))` holds only for that image, run by that runtime, in that VM.
    """

    __slots__ = ()

    kind: ClassVar[str]

    @abstractmethod
    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        """Why `launch` does not meet this expectation, or None if it does."""

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        launch = identity.launch
        if launch is None or launch.kind != self.kind:
            attested = "no hardware launch" if launch is None else f"a {launch.kind} launch"
            return (f"expected a verified {self.kind} launch, the enclave has {attested} "
                    f"(platform {identity.platform!r})")
        return self.launch_mismatch(launch)

    def constrains_launch(self, kind: str) -> bool:
        # Of its own kind it checks reference values; an identity of any other kind it refuses outright.
        return True


def expected_bytes(value: object, what: str, size: int) -> bytes | None:
    """A reference value given to an expectation: None (not checked) or exactly `size` bytes; InvalidArgumentError
    naming `what` ("SNP measurement") otherwise."""
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidArgumentError(f"expected {what} must be {size} bytes, got {got}")
    return value


def hex_fields(values: Mapping[str, object]) -> dict[str, object]:
    """`values` with bytes as lowercase hex (and tuples as lists), for `LaunchIdentity.to_json`."""

    def convert(value: object) -> object:
        if isinstance(value, bytes | bytearray):
            return bytes(value).hex()
        if isinstance(value, tuple | list):
            return [convert(item) for item in value]
        if isinstance(value, Mapping):
            return {str(key): convert(item) for key, item in value.items()}
        return value

    return {name: convert(value) for name, value in values.items()}
