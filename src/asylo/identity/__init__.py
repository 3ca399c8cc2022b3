"""Enclave identities, identity expectations (ACLs), platforms, and the verification of platform evidence.

Enclave side (the trusted runtime):

    key = SimPlatformKey.load_or_create()                 # this machine's SIMULATED platform root
    platform = key.platform(EnclaveIdentity.from_image(image))
    evidence = platform.evidence(report_data)              # 64 bytes binding the handshake
    seal_key = platform.sealing_key(SealPolicy.SIGNER, platform.identity)

Host side:

    verifier = EvidenceVerifier([key.fingerprint])
    identity = verifier.verify(evidence, report_data=report_data,
                               expectation=expectation_for_image(image, allow_debug=False))

One concept per module: `identity`, `expectations`, `platforms` (the interfaces), `evidence` (the container),
`fingerprints`, `sim` and `sim_state` (the simulated platform), `verify`. This package sits low in the layers:
it imports `asylo.status`, `asylo.proto` and `asylo._files`, and nothing that uses it.
"""

from __future__ import annotations

from asylo.identity.evidence import EVIDENCE_VERSION, MAX_EVIDENCE_SIZE, decode_evidence
from asylo.identity.expectations import (
    AllOf,
    AnyOf,
    IdentityExpectation,
    MeasurementIs,
    Not,
    SignerIs,
    expectation_for_image,
)
from asylo.identity.fingerprints import parse_fingerprint, platform_fingerprint
from asylo.identity.identity import MEASUREMENT_SIZE, SIGNER_SIZE, SIM_PLATFORM, EnclaveIdentity
from asylo.identity.platforms import (
    REPORT_DATA_SIZE,
    SEALING_KEY_SIZE,
    Platform,
    PlatformProvider,
    PlatformVerifier,
    SealPolicy,
)
from asylo.identity.sim import SimEvidenceVerifier, SimPlatform, SimPlatformKey
from asylo.identity.sim_state import DEFAULT_SIM_STATE_ENV, default_sim_state_dir
from asylo.identity.verify import EvidenceVerifier
from asylo.status import AttestationError

__all__ = [
    "DEFAULT_SIM_STATE_ENV",
    "EVIDENCE_VERSION",
    "MAX_EVIDENCE_SIZE",
    "MEASUREMENT_SIZE",
    "REPORT_DATA_SIZE",
    "SEALING_KEY_SIZE",
    "SIGNER_SIZE",
    "SIM_PLATFORM",
    "AllOf",
    "AnyOf",
    "AttestationError",
    "EnclaveIdentity",
    "EvidenceVerifier",
    "IdentityExpectation",
    "MeasurementIs",
    "Not",
    "Platform",
    "PlatformProvider",
    "PlatformVerifier",
    "SealPolicy",
    "SignerIs",
    "SimEvidenceVerifier",
    "SimPlatform",
    "SimPlatformKey",
    "decode_evidence",
    "default_sim_state_dir",
    "expectation_for_image",
    "parse_fingerprint",
    "platform_fingerprint",
]
