"""The simulated platform: attestation and sealing in software, for development and tests.

It runs the same code path as a hardware platform (signed, versioned evidence bound to the handshake; sealing keys
derived from a platform secret and the enclave's identity), but its root secrets sit in a file that the machine's
owner can read. It proves that the evidence came from a machine holding that file; it does not protect the
enclave from that machine. It says SIMULATED wherever it is shown.

Nor is it a boundary between enclaves in one process. `SimPlatform`, the object enclave code gets, offers only its
enclave's identity, evidence and own sealing keys: it has no public way to the `SimPlatformKey` behind it, or to a
platform for another identity. But Python cannot isolate objects from code in the same process (private slots,
the key file and the interpreter's memory are all within reach of code that looks for them), so this is an API
that does not offer the root, not a protection from hostile enclave code. That takes hardware; the sim platform is
for development.

The signature covers a domain-separated, length-prefixed encoding of every other field of the evidence (never
the protobuf bytes, which are not canonical across writers), so a signature made here can mean nothing else.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asylo.identity.evidence import EVIDENCE_VERSION, encode_evidence
from asylo.identity.fingerprints import platform_fingerprint
from asylo.identity.identity import SIM_PLATFORM, EnclaveIdentity, check_u32
from asylo.identity.platforms import REPORT_DATA_SIZE, SEALING_KEY_SIZE, Platform, PlatformVerifier, SealPolicy
from asylo.identity.sim_state import SEALING_ROOT_SIZE, default_sim_state_dir, load_or_create_secrets
from asylo.proto import identity_pb2
from asylo.status import AttestationError, InvalidArgumentError, PermissionDeniedError

EVIDENCE_DOMAIN = b"asylo-sim-evidence-v1\0"
SEALING_DOMAIN = b"asylo-sim-sealing-v2\0"  # v2: SIGNER keys bind the SVN
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


class SimPlatformKey:
    """A machine's simulated platform root: an Ed25519 attestation key and a sealing root secret."""

    __slots__ = ("_sealing_root", "_signing_key", "fingerprint", "path", "public_key")

    kind = SIM_PLATFORM
    description = "sim (SIMULATED: a software key, for development and tests only)"

    def __init__(self, signing_key: Ed25519PrivateKey, sealing_root: bytes, path: Path | None = None) -> None:
        if len(sealing_root) != SEALING_ROOT_SIZE:
            raise InvalidArgumentError(f"sealing root must be {SEALING_ROOT_SIZE} bytes")
        self._signing_key = signing_key
        self._sealing_root = bytes(sealing_root)
        self.path = path  # the key file, or None for a key that lives in memory only
        self.public_key: bytes = signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.fingerprint: str = platform_fingerprint(self.public_key)

    @classmethod
    def load_or_create(cls, state_dir: Path | None = None) -> SimPlatformKey:
        """This machine's key from `state_dir` (default: `default_sim_state_dir()`), created on first use."""
        signing_key, sealing_root, path = load_or_create_secrets(
            Path(state_dir) if state_dir is not None else default_sim_state_dir()
        )
        return cls(signing_key, sealing_root, path)

    @classmethod
    def generate(cls) -> SimPlatformKey:
        """A fresh key kept in memory only: for tests, where nothing should outlive the process."""
        return cls(Ed25519PrivateKey.generate(), secrets.token_bytes(SEALING_ROOT_SIZE))

    def platform(self, identity: EnclaveIdentity) -> SimPlatform:
        """The platform as seen by the enclave with `identity` (which must be a `sim` identity)."""
        return SimPlatform(self, identity)

    def _sign(self, payload: bytes) -> bytes:
        return self._signing_key.sign(payload)

    def _derive(self, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=SEALING_KEY_SIZE, salt=None, info=info).derive(
            self._sealing_root
        )

    def __repr__(self) -> str:
        return f"SimPlatformKey(SIMULATED, fingerprint={self.fingerprint}, path={self.path})"


class SimPlatform(Platform):
    """One enclave on a simulated platform: its identity, its evidence and its own sealing keys.

    This is what the trusted runtime hands to enclave code, so it holds the platform key in a private slot and
    offers no attribute that leads to it (see the module doc for what that does and does not protect).
    """

    __slots__ = ("_identity", "_key")

    kind = SIM_PLATFORM

    def __init__(self, key: SimPlatformKey, identity: EnclaveIdentity) -> None:
        if not isinstance(key, SimPlatformKey):
            raise InvalidArgumentError(f"a sim platform needs a SimPlatformKey, got {type(key).__name__}")
        if not isinstance(identity, EnclaveIdentity) or identity.platform != SIM_PLATFORM:
            raise InvalidArgumentError(f"a sim platform runs enclaves with platform {SIM_PLATFORM!r} identities")
        self._key = key
        self._identity = identity

    @property
    def identity(self) -> EnclaveIdentity:
        return self._identity

    def evidence(self, report_data: bytes) -> bytes:
        if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
            raise InvalidArgumentError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")
        evidence = identity_pb2.Evidence(
            version=EVIDENCE_VERSION,
            platform=SIM_PLATFORM,
            simulated=True,
            identity=self._identity.to_proto(),
            report_data=report_data,
            platform_public_key=self._key.public_key,
        )
        evidence.signature = self._key._sign(signed_payload(evidence))
        return encode_evidence(evidence)

    def sealing_key(self, policy: SealPolicy, identity: EnclaveIdentity, *, svn: int | None = None) -> bytes:
        # As with hardware (SGX's EGETKEY), an enclave gets its own keys only: deriving another enclave's key
        # here would let any enclave on the platform unseal every other's data.
        if identity != self._identity:
            raise PermissionDeniedError(
                f"sealing keys are only for the enclave this platform runs ({self._identity.describe()}), "
                f"not for {identity.describe() if isinstance(identity, EnclaveIdentity) else identity!r}"
            )
        if policy is SealPolicy.MEASUREMENT:
            # The measurement covers the manifest, so product id, SVN and the debug flag are bound as well.
            binding = identity.measurement
        elif policy is SealPolicy.SIGNER:
            key_svn = check_u32(identity.svn if svn is None else svn, "sealing key svn")
            if key_svn > identity.svn:
                # The rollback protection is here, in the key: an old version, perhaps with a known flaw, cannot
                # derive the key of what a newer version sealed, whatever its own code checks or skips.
                raise PermissionDeniedError(
                    f"a SIGNER sealing key for SVN {key_svn} is not available to this enclave (SVN {identity.svn}): "
                    f"an enclave gets the keys of its own SVN and lower ones only (rollback refused)"
                )
            # The SVN, so that each version's key is its own. The debug flag, always (as SGX does): a debug build,
            # whose memory its host can read, must never unseal production data.
            binding = (identity.signer + identity.product_id.to_bytes(4, "big") + bytes([identity.debug])
                       + key_svn.to_bytes(4, "big"))
        else:
            raise InvalidArgumentError(f"unknown seal policy {policy!r}")
        return self._key._derive(SEALING_DOMAIN + policy.value.encode("ascii") + b"\0" + binding)

    def __repr__(self) -> str:
        return f"SimPlatform(SIMULATED, fingerprint={self._key.fingerprint}, {self._identity.describe()})"


class SimEvidenceVerifier(PlatformVerifier):
    """Checks `sim` evidence: marked simulated, signed by a platform key the host trusts."""

    kind = SIM_PLATFORM

    def __init__(self, trusted_fingerprints: frozenset[str]) -> None:
        self._trusted = trusted_fingerprints

    def authenticate(self, evidence: identity_pb2.Evidence) -> EnclaveIdentity:
        if not evidence.simulated:
            raise AttestationError("evidence from platform 'sim' is not marked simulated: it was altered")
        if evidence.quote or evidence.certificates or evidence.collateral:
            # The signature does not cover them; unsigned bytes riding along are refused, not ignored.
            raise AttestationError("sim evidence carries hardware evidence (a quote, certificates or collateral) "
                                   "that its signature does not cover: it was altered")
        public_key = evidence.platform_public_key
        if len(public_key) != PUBLIC_KEY_SIZE:
            raise AttestationError(f"sim evidence platform key must be {PUBLIC_KEY_SIZE} bytes, got {len(public_key)}")
        fingerprint = platform_fingerprint(public_key)
        if fingerprint not in self._trusted:
            raise AttestationError(
                f"simulated platform key {fingerprint} is not trusted by this host. If you operate that machine "
                f"and accept a SIMULATED platform (no hardware protection), trust it with "
                f"--trust-platform {fingerprint} (`asylo platform show` on that machine prints its fingerprint)"
            )
        if len(evidence.signature) != SIGNATURE_SIZE:
            raise AttestationError(f"sim evidence signature must be {SIGNATURE_SIZE} bytes")
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(evidence.signature, signed_payload(evidence))
        except (InvalidSignature, ValueError) as exc:
            raise AttestationError(
                f"sim evidence signature does not verify under platform key {fingerprint}: the evidence was altered"
            ) from exc
        if not evidence.HasField("identity"):
            raise AttestationError("sim evidence carries no enclave identity")
        return EnclaveIdentity.from_proto(evidence.identity)


def signed_payload(evidence: identity_pb2.Evidence) -> bytes:
    """What the sim platform signs: the domain, then every field but the signature, each length-prefixed."""
    identity = evidence.identity
    fields = (
        evidence.version.to_bytes(4, "big"),
        evidence.platform.encode("utf-8"),
        bytes([evidence.simulated]),
        identity.measurement,
        identity.signer,
        identity.product_id.to_bytes(4, "big"),
        identity.svn.to_bytes(4, "big"),
        bytes([identity.debug]),
        identity.platform.encode("utf-8"),
        evidence.report_data,
        evidence.platform_public_key,
    )
    return EVIDENCE_DOMAIN + b"".join(len(field).to_bytes(4, "big") + field for field in fields)
