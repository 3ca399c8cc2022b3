"""Verifying evidence on the host: is this the enclave we expect, on a platform we trust, in this handshake?

    verifier = EvidenceVerifier(trusted_platforms=[fingerprint])
    identity = verifier.verify(evidence, report_data=transcript_binding, expectation=expectation)

The checks, in order, each failing with an `AttestationError` that names it: size and encoding; the evidence
version; a verifier for the platform kind (the seam where real TEEs plug in: pass more `PlatformVerifier`s);
that verifier's authentication (for `sim`: the platform key is trusted and its signature verifies); the attested
identity's platform kind agrees with the evidence's; the report data equals the caller's (the evidence was made
for this handshake, not replayed from another); and the identity meets the expectation.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from asylo.identity.evidence import decode_evidence
from asylo.identity.expectations import IdentityExpectation
from asylo.identity.fingerprints import parse_fingerprint
from asylo.identity.identity import EnclaveIdentity
from asylo.identity.platforms import REPORT_DATA_SIZE, PlatformVerifier
from asylo.identity.sim import SimEvidenceVerifier
from asylo.status import AttestationError, InvalidArgumentError

_log = logging.getLogger(__name__)


class EvidenceVerifier:
    """Verifies evidence against the platforms this host trusts and an identity expectation."""

    __slots__ = ("_verifiers", "trusted_platforms")

    def __init__(
        self, trusted_platforms: Iterable[str], *, platform_verifiers: Iterable[PlatformVerifier] = ()
    ) -> None:
        """`trusted_platforms`: sim platform key fingerprints (64 hex digits, any case).

        `platform_verifiers` add (or replace, by kind) verifiers for other platforms.
        """
        if isinstance(trusted_platforms, str | bytes):
            # A lone string would iterate as characters; say what is wrong instead of "not a fingerprint: 'a'".
            raise InvalidArgumentError("trusted_platforms must be a collection of fingerprints, not one string")
        self.trusted_platforms: frozenset[str] = frozenset(parse_fingerprint(fp) for fp in trusted_platforms)
        self._verifiers: dict[str, PlatformVerifier] = {
            SimEvidenceVerifier.kind: SimEvidenceVerifier(self.trusted_platforms)
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
        expectation.check(identity)
        _log.info("attested %s", identity.describe())
        return identity
