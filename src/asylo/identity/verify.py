"""Verifying evidence on the host: is this the enclave we expect, on a platform we trust, in this handshake?

    verifier = EvidenceVerifier(trusted_platforms=[fingerprint])
    identity = verifier.verify(evidence, report_data=transcript_binding, expectation=expectation)

The checks, in order, each failing with an `AttestationError` that names it: size and encoding; the evidence
version; a verifier for the platform kind (sim and tpm, by the fingerprints the host trusts; snp, tdx, sgx and
nitro with their vendors' roots pinned; pass `platform_verifiers` to add or replace one); that verifier's
authentication (for
`sim`: the platform key is trusted and its signature verifies; for hardware: the vendor evidence verifies and its
report data binds the runtime's identity claim, see asylo.identity.hardware); the attested identity's platform
kind agrees with the evidence's; the report data equals the caller's (the evidence was made for this handshake,
not replayed from another); on hardware, the expectation sets reference values for the launch; and the identity
meets the expectation.
"""

from __future__ import annotations

import datetime
import functools
import hmac
import logging
from collections.abc import Callable, Iterable, Mapping

from asylo.identity.evidence import decode_evidence
from asylo.identity.expectations import IdentityExpectation
from asylo.identity.fingerprints import parse_fingerprint
from asylo.identity.hardware import HardwareEvidenceVerifier
from asylo.identity.identity import EnclaveIdentity
from asylo.identity.launch import LaunchExpectation, QuoteVerifier
from asylo.identity.platforms import REPORT_DATA_SIZE, PlatformVerifier
from asylo.identity.sim import SimEvidenceVerifier
from asylo.identity.tpm.verifier import TPM_KIND, TpmQuoteVerifier
from asylo.status import AttestationError, InvalidArgumentError

_log = logging.getLogger(__name__)


class EvidenceVerifier:
    """Verifies evidence against the platforms this host trusts and an identity expectation."""

    __slots__ = ("_verifiers", "trusted_platforms")

    def __init__(
        self, trusted_platforms: Iterable[str], *, platform_verifiers: Iterable[PlatformVerifier] = ()
    ) -> None:
        """`trusted_platforms`: fingerprints (64 hex digits, any case) of sim platform keys and of enrolled TPM
        attestation keys (`asylo platform show`, `asylo platform enroll`).

        `platform_verifiers` add (or replace, by kind) verifiers for other platforms.
        """
        if isinstance(trusted_platforms, str | bytes):
            # A lone string would iterate as characters; say what is wrong instead of "not a fingerprint: 'a'".
            raise InvalidArgumentError("trusted_platforms must be a collection of fingerprints, not one string")
        self.trusted_platforms: frozenset[str] = frozenset(parse_fingerprint(fp) for fp in trusted_platforms)
        self._verifiers: dict[str, PlatformVerifier] = {
            SimEvidenceVerifier.kind: SimEvidenceVerifier(self.trusted_platforms),
            **{verifier.kind: verifier for verifier in _default_hardware_verifiers()},
            # A TPM's AK is trusted by fingerprint, like a sim platform key: the same list serves both.
            TPM_KIND: HardwareEvidenceVerifier(TpmQuoteVerifier(self.trusted_platforms)),
        }
        for verifier in platform_verifiers:
            if not isinstance(verifier, PlatformVerifier):
                raise InvalidArgumentError(f"not a PlatformVerifier: {type(verifier).__name__}")
            self._verifiers[verifier.kind] = verifier

    def verify(
        self,
        evidence: bytes | bytearray | memoryview,
        *,
        report_data: bytes,
        expectation: IdentityExpectation,
    ) -> EnclaveIdentity:
        """The attested identity, if `evidence` passes every check; `AttestationError` saying which failed."""
        if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
            raise InvalidArgumentError(f"expected report data must be exactly {REPORT_DATA_SIZE} bytes")
        if not isinstance(expectation, IdentityExpectation):
            raise InvalidArgumentError(f"expectation must be an IdentityExpectation, got {type(expectation).__name__}")
        message = decode_evidence(evidence)
        verifier = self._verifiers.get(message.platform)
        if verifier is None:
            known = ", ".join(sorted(self._verifiers))
            raise AttestationError(f"no verifier for platform {message.platform!r} (this host verifies: {known})")
        identity = verifier.authenticate(message)
        if identity.platform != message.platform:
            raise AttestationError(
                f"evidence from platform {message.platform!r} attests an identity on platform {identity.platform!r}"
            )
        if not hmac.compare_digest(message.report_data, report_data):
            raise AttestationError(
                "evidence report data does not match this handshake: the evidence is stale or replayed from "
                "another session"
            )
        if identity.platform in HARDWARE_KINDS and identity.launch is None:
            # A replaced verifier that forgot the launch must not turn the launch check below into a no-op.
            raise AttestationError(f"the {identity.platform} verifier returned an identity without its verified launch")
        if (identity.launch is not None and identity.platform not in FINGERPRINT_TRUSTED_KINDS
                and not expectation.constrains_launch(identity.platform)):
            raise AttestationError(
                f"the enclave runs on platform {identity.platform!r} ({identity.launch.describe()}) but the "
                f"expectation ({expectation.describe()}) sets no reference values for that launch: the runtime's "
                f"word about its image is only as good as the launch that runs it. Combine it with "
                f"{LAUNCH_EXPECTATIONS.get(identity.platform, 'a launch expectation')}(...) in AllOf"
            )
        expectation.check(identity)
        if identity.platform in FINGERPRINT_TRUSTED_KINDS and not expectation.constrains_launch(identity.platform):
            _log.warning("accepted %s without checking its boot state: the expectation names no PCRs (PcrsAre), so "
                         "whatever the enrolled machine booted is trusted", identity.describe())
        _log.info("attested %s", identity.describe())
        return identity


#: The expectation that sets a hardware platform's reference values, by kind (for messages).
LAUNCH_EXPECTATIONS = {"snp": "SnpLaunch", "tdx": "TdxLaunch", "sgx": "SgxEnclave", "nitro": "NitroPcrs",
                       "tpm": "PcrsAre"}
#: Hardware platforms trusted by the fingerprint of a key the operator enrolled (a TPM's AK), as the sim platform is:
#: the enrolled machine vouches for what it runs, and reference values for its boot state (PcrsAre) are optional.
FINGERPRINT_TRUSTED_KINDS = ("tpm",)
#: The hardware platform kinds a host verifies out of the box.
HARDWARE_KINDS = tuple(LAUNCH_EXPECTATIONS)
#: The reference values `expect_launch` takes, by kind (the first is the one `KIND=HEX` names), and what of them
#: pins the launch's code (LaunchExpectation.constrains_launch decides; this is its explanation).
LAUNCH_VALUES = {
    "snp": (("measurement",), "the launch measurement"),
    "tdx": (("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"), "mrtd, rtmr1 (kernel, initrd) and rtmr2 (command line)"),
    "sgx": (("mrenclave", "mrsigner"), "mrenclave or mrsigner"),
    "nitro": (tuple(f"pcr{index}" for index in range(32)), "pcr0 (or pcr8, or pcr1 and pcr2)"),
    "tpm": (tuple(f"pcr{index}" for index in range(24)), "the PCRs to check (sha256 bank)"),
}


def expect_launch(kind: str, values: Mapping[str, bytes], *, allow_debug: bool = False) -> IdentityExpectation:
    """The launch expectation with these reference values (names per LAUNCH_VALUES) and the platform's default
    policy (debug refused; TDX and SGX: TCB status UpToDate): what `--expect-launch` builds. InvalidArgumentError
    for an unknown name, or values that do not pin the launch's code."""
    if kind not in LAUNCH_VALUES:
        raise InvalidArgumentError(f"no launch expectation for platform {kind!r} (one of: {', '.join(HARDWARE_KINDS)})")
    names, needed = LAUNCH_VALUES[kind]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise InvalidArgumentError(f"{kind} has no reference value {', '.join(unknown)} (it takes: "
                                   f"{', '.join(names) if kind != 'nitro' else 'pcr0 .. pcr31'})")
    expectation: LaunchExpectation
    if kind == "snp":
        from asylo.identity.snp import SnpLaunch  # noqa: PLC0415

        expectation = SnpLaunch(values.get("measurement"), allow_debug=allow_debug)
    elif kind == "tdx":
        from asylo.identity.tdx import TdxLaunch  # noqa: PLC0415

        rtmrs = {int(name[4:]): value for name, value in values.items() if name.startswith("rtmr")}
        expectation = TdxLaunch(values.get("mrtd"), rtmrs=rtmrs or None, allow_debug=allow_debug)
    elif kind == "sgx":
        from asylo.identity.tdx import SgxEnclave  # noqa: PLC0415

        expectation = SgxEnclave(values.get("mrenclave"), mrsigner=values.get("mrsigner"), allow_debug=allow_debug)
    elif kind == "nitro":
        from asylo.identity.nitro import NitroPcrs  # noqa: PLC0415

        expectation = NitroPcrs({int(name[3:]): value for name, value in values.items()}, allow_debug=allow_debug)
    else:
        from asylo.identity.tpm import PcrsAre  # noqa: PLC0415

        expectation = PcrsAre({int(name[3:]): value for name, value in values.items()})
    if not expectation.constrains_launch(kind):
        raise InvalidArgumentError(f"these {kind} reference values do not pin the code the launch runs: give "
                                   f"{needed}")
    return expectation


def quote_verifiers() -> dict[str, QuoteVerifier]:
    """The hardware platforms' quote verifiers by kind, with their vendors' roots pinned in the code: SEV-SNP
    (AMD's ARKs), TDX and SGX (Intel's SGX root CA, through dcap-qvl), Nitro (the AWS Nitro root). The TPM's is
    not among them: it trusts enrolled AKs by fingerprint (`TpmQuoteVerifier(fingerprints)`)."""
    from asylo.identity.nitro import NitroQuoteVerifier  # noqa: PLC0415 - each platform's code when first used
    from asylo.identity.snp import SnpQuoteVerifier  # noqa: PLC0415
    from asylo.identity.tdx import SgxQuoteVerifier, TdxQuoteVerifier  # noqa: PLC0415

    verifiers: tuple[QuoteVerifier, ...] = (
        SnpQuoteVerifier(), TdxQuoteVerifier(), SgxQuoteVerifier(), NitroQuoteVerifier())
    return {verifier.kind: verifier for verifier in verifiers}


def hardware_verifiers(clock: Callable[[], datetime.datetime] | None = None) -> tuple[HardwareEvidenceVerifier, ...]:
    """`quote_verifiers()`, each as the session's `PlatformVerifier`. `clock`: the time to verify at (default:
    now)."""
    return tuple(HardwareEvidenceVerifier(verifier, clock=clock) for verifier in quote_verifiers().values())


@functools.cache
def _default_hardware_verifiers() -> tuple[HardwareEvidenceVerifier, ...]:
    # Stateless once made (the pinned roots and bundled chains are read at construction): one set per process.
    return hardware_verifiers()
