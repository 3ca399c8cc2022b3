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

Hardware platforms: a host expects a launch's reference values besides the image,

    expectation = AllOf(SnpLaunch(launch_measurement), MeasurementIs(image.measurement))   # asylo.identity.snp

and the proxy attests with `open_platform(PlatformOptions(kind="snp"))`. Each TEE is a subpackage with its parser,
verifier, expectation and attester: `asylo.identity.snp` (AMD SEV-SNP), `asylo.identity.tdx` (Intel TDX and SGX
DCAP quotes), `asylo.identity.nitro` (AWS Nitro Enclaves); imported when used, not by `import asylo`.

One concept per module: `identity`, `expectations`, `platforms` (the interfaces), `evidence` (the container),
`fingerprints`, `sim` and `sim_state` (the simulated platform), `launch` (what hardware attests, and expectations
on it), `hardware` (hardware evidence in a session), `x509chain`, `configfs_tsm` (the SNP/TDX attester's kernel
interface), `machine` (which platform this machine runs), `verify`. This package sits low in the layers: it imports
`asylo.status`, `asylo.proto` and `asylo._files`, and nothing that uses it.
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
from asylo.identity.hardware import HardwareEvidenceVerifier, HardwarePlatform, HardwareProvider, runtime_binding
from asylo.identity.identity import MEASUREMENT_SIZE, SIGNER_SIZE, SIM_PLATFORM, EnclaveIdentity
from asylo.identity.launch import Endorsements, LaunchExpectation, LaunchIdentity, QuoteVerifier
from asylo.identity.machine import PLATFORM_CHOICES, PlatformOptions, open_platform
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
from asylo.identity.verify import (
    HARDWARE_KINDS,
    EvidenceVerifier,
    expect_launch,
    hardware_verifiers,
    quote_verifiers,
)
from asylo.status import AttestationError

__all__ = [
    "DEFAULT_SIM_STATE_ENV",
    "HARDWARE_KINDS",
    "PLATFORM_CHOICES",
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
    "Endorsements",
    "EvidenceVerifier",
    "HardwareEvidenceVerifier",
    "HardwarePlatform",
    "HardwareProvider",
    "IdentityExpectation",
    "LaunchExpectation",
    "LaunchIdentity",
    "MeasurementIs",
    "Not",
    "Platform",
    "PlatformOptions",
    "PlatformProvider",
    "PlatformVerifier",
    "QuoteVerifier",
    "SealPolicy",
    "SignerIs",
    "SimEvidenceVerifier",
    "SimPlatform",
    "SimPlatformKey",
    "decode_evidence",
    "default_sim_state_dir",
    "expect_launch",
    "expectation_for_image",
    "hardware_verifiers",
    "open_platform",
    "parse_fingerprint",
    "platform_fingerprint",
    "quote_verifiers",
    "runtime_binding",
]
