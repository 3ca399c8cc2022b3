"""Hardware platforms in the session: one piece of vendor evidence binds the launch, the image and the session.

The hardware measures what it launched (the confidential VM or the Nitro enclave image, with pyasylo's runtime
inside), not the enclave image that runtime later loads. So the evidence has two layers:

    the runtime's claim   EnclaveIdentity of the image it loaded (measurement, signer, product id, SVN, debug)
    the hardware's word   a report/quote/document whose report data = runtime_binding(T, claim)

where T is the handshake transcript (64 bytes; it covers both key shares, the host's nonce and the welcome's
fields). The hardware signs its report data, so a verified quote proves that *this* launch's runtime made *this*
claim for *this* session: a claim altered in transit, or a quote replayed from another session, fails the
binding. What the host then requires of the launch (reference values: an SNP measurement, a TDX MRTD, Nitro
PCRs) is a `LaunchExpectation`, combined with the image expectation; the host refuses hardware evidence whose
expectation sets no reference values for the launch, since the claim is only as good as the runtime making it.

The report data is a digest rather than T itself because T does not cover the claim's product id, SVN and debug
flag, and Nitro's `user_data` and SNP's/TDX's 64 bytes hold exactly one digest.

`HardwarePlatform` is the enclave side (a `QuoteAttester` makes the vendor evidence: configfs-tsm for SNP and
TDX, /dev/nsm for Nitro); `HardwareEvidenceVerifier` the host side (a `QuoteVerifier` checks the vendor evidence).
Neither knows which vendor it serves.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
from collections.abc import Callable
from typing import Protocol

from asylo.identity.evidence import EVIDENCE_VERSION, MAX_EVIDENCE_SIZE, encode_evidence
from asylo.identity.identity import EnclaveIdentity
from asylo.identity.launch import Endorsements, LaunchIdentity, QuoteVerifier
from asylo.identity.platforms import REPORT_DATA_SIZE, Platform, PlatformVerifier, SealPolicy
from asylo.proto import identity_pb2
from asylo.status import AttestationError, FailedPreconditionError, InvalidArgumentError, ResourceExhaustedError

_BINDING_DOMAIN = b"asylo-runtime-claim-v1\0"
#: More certificates than any vendor chain has (SNP: VCEK, ASK, ARK).
MAX_CERTIFICATES = 8


def runtime_binding(report_data: bytes, identity: identity_pb2.EnclaveIdentity) -> bytes:
    """The 64 bytes a hardware platform signs: SHA-512 over a domain, the session's report data and every field
    of the runtime's identity claim, each length-prefixed (never protobuf bytes, which are not canonical)."""
    fields = (
        report_data,
        identity.measurement,
        identity.signer,
        identity.product_id.to_bytes(4, "big"),
        identity.svn.to_bytes(4, "big"),
        bytes([identity.debug]),
        identity.platform.encode("utf-8"),
    )
    digest = hashlib.sha512(_BINDING_DOMAIN)
    for field in fields:
        digest.update(len(field).to_bytes(4, "big"))
        digest.update(field)
    return digest.digest()


class QuoteAttester(Protocol):
    """The enclave side of one hardware platform: asks the hardware for evidence over 64 bytes of report data."""

    @property
    def kind(self) -> str: ...

    def attest(self, report_data: bytes) -> tuple[bytes, Endorsements]:
        """The vendor's evidence carrying `report_data`, and what the host needs to verify it offline."""
        ...


class HardwarePlatform(Platform):
    """One enclave on a hardware platform, as the trusted runtime offers it to enclave code.

    Sealing is not offered yet: SEV-SNP's derived keys (MSG_KEY_REQ) have no configfs interface, and TDX and
    Nitro have no sealing key of their own (deployments derive one from a key service after attestation). A
    clear refusal beats a key that only looks hardware-bound.
    """

    __slots__ = ("_attester", "_identity", "kind")

    def __init__(self, attester: QuoteAttester, identity: EnclaveIdentity) -> None:
        if not isinstance(identity, EnclaveIdentity) or identity.platform != attester.kind:
            raise InvalidArgumentError(f"a {attester.kind} platform runs enclaves with {attester.kind!r} identities")
        self._attester = attester
        self._identity = identity
        self.kind = attester.kind

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    def evidence(self, report_data: bytes) -> bytes:
        if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
            raise InvalidArgumentError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")
        claim = self._identity.to_proto()
        quote, endorsements = self._attester.attest(runtime_binding(report_data, claim))
        evidence = identity_pb2.Evidence(
            version=EVIDENCE_VERSION, platform=self._attester.kind, simulated=False, identity=claim,
            report_data=report_data, quote=quote, certificates=endorsements.certificates,
            collateral=endorsements.collateral,
        )
        encoded = encode_evidence(evidence)
        if len(encoded) > MAX_EVIDENCE_SIZE:
            # Said here, where the operator can act on it, rather than as a refusal at every host.
            raise ResourceExhaustedError(
                f"the {self._attester.kind} evidence is {len(encoded)} bytes, over the {MAX_EVIDENCE_SIZE} a host "
                f"accepts (a quote of {len(quote)}, {len(endorsements.certificates)} certificates, collateral of "
                f"{len(endorsements.collateral)} bytes)")
        return encoded

    def sealing_key(self, policy: SealPolicy, identity: EnclaveIdentity, *, svn: int | None = None) -> bytes:
        raise FailedPreconditionError(
            f"sealing is not available on platform {self._attester.kind!r} in this release (only the simulated "
            f"platform seals); derive data keys from a key service that releases them after attestation"
        )

    def __repr__(self) -> str:
        return f"HardwarePlatform({self._attester.kind}, {self._identity.describe()})"


class HardwareProvider:
    """A machine whose enclaves run on hardware `attester` serves: the `PlatformProvider` the proxy holds."""

    __slots__ = ("_attester", "description")

    def __init__(self, attester: QuoteAttester, description: str) -> None:
        self._attester = attester
        #: What the start-up line says of it ("snp via configfs-tsm at /sys/kernel/config/tsm/report").
        self.description = description

    @property
    def kind(self) -> str:
        return self._attester.kind

    @property
    def fingerprint(self) -> str:
        """What hosts trust: a TPM's attestation key by its fingerprint (as the sim platform's key); the vendor-rooted
        platforms by their roots and reference values, so their kind stands where a fingerprint would."""
        fingerprint = getattr(self._attester, "fingerprint", None)
        return fingerprint if isinstance(fingerprint, str) else self._attester.kind

    def platform(self, identity: EnclaveIdentity) -> HardwarePlatform:
        return HardwarePlatform(self._attester, identity)

    def own_launch(self, verifier: QuoteVerifier) -> LaunchIdentity:
        """This machine's launch as a host would see it: fresh evidence over a random nonce (no enclave's claim),
        verified by `verifier` and checked to carry that nonce. For `asylo platform show`: the reference values
        an operator hands to hosts, and a check that the machine's evidence verifies at all."""
        if verifier.kind != self.kind:
            raise InvalidArgumentError(f"a {verifier.kind} verifier for a {self.kind} platform")
        nonce = os.urandom(REPORT_DATA_SIZE)
        quote, endorsements = self._attester.attest(nonce)
        launch = verifier.verify(quote, endorsements)
        if launch.report_data != verifier.expected_report_data(nonce):
            raise AttestationError(f"the {self.kind} evidence verifies but its report data is not the nonce it was "
                                   f"asked for: the platform returned stale or replayed evidence")
        return launch

    def __repr__(self) -> str:
        return f"HardwareProvider({self.description})"


class HardwareEvidenceVerifier(PlatformVerifier):
    """The host side of one hardware platform: `quote_verifier` checks the vendor evidence, this checks that the
    hardware's report data binds the evidence's report data and identity claim (see the module doc).

    `clock` gives the time to verify at (default: now); a test passes the time a genuine sample was made.
    """

    def __init__(self, quote_verifier: QuoteVerifier, *,
                 clock: Callable[[], datetime.datetime] | None = None) -> None:
        if not isinstance(quote_verifier, QuoteVerifier):
            raise InvalidArgumentError(f"not a QuoteVerifier: {type(quote_verifier).__name__}")
        self.kind = quote_verifier.kind
        self._quote_verifier = quote_verifier
        self._clock = clock

    def authenticate(self, evidence: identity_pb2.Evidence) -> EnclaveIdentity:
        if evidence.simulated:
            raise AttestationError(f"evidence from platform {self.kind!r} is marked simulated")
        if not evidence.quote:
            raise AttestationError(f"evidence from platform {self.kind!r} carries no {self.kind} evidence")
        if len(evidence.certificates) > MAX_CERTIFICATES:
            raise AttestationError(f"evidence carries {len(evidence.certificates)} certificates "
                                   f"(at most {MAX_CERTIFICATES})")
        if evidence.signature or evidence.platform_public_key:
            raise AttestationError(f"evidence from platform {self.kind!r} carries a sim platform's key or signature")
        if not evidence.HasField("identity"):
            raise AttestationError("evidence carries no enclave identity")
        claim = EnclaveIdentity.from_proto(evidence.identity)
        at = self._clock() if self._clock is not None else None
        launch = self._quote_verifier.verify(
            evidence.quote, Endorsements(tuple(evidence.certificates), evidence.collateral), at=at)
        expected = self._quote_verifier.expected_report_data(runtime_binding(evidence.report_data, evidence.identity))
        if launch.report_data != expected:
            raise AttestationError(
                f"the {self.kind} evidence is genuine but its report data ({launch.report_data.hex()[:32]}...) "
                f"does not bind this session and enclave identity: it was made for another session, or the "
                f"identity claim was altered"
            )
        return dataclasses.replace(claim, launch=launch)
