"""Verifying an AWS Nitro Enclaves attestation document offline, and what a host may require of its PCRs.

`NitroQuoteVerifier` follows AWS's "Verifying the root of trust" (aws-nitro-enclaves-nsm-api,
docs/attestation_process.md): the document's certificate, then its CA bundle from the last entry back to the first,
must chain up to the AWS Nitro Enclaves root pinned here by its SHA-256; every certificate must be valid when the
NSM made the document and none may have expired by the verification time; the leaf must be a P-384 key for digital
signatures and every issuer a CA allowed to sign certificates; and the ES384 signature over the COSE Sig_structure
must verify with the leaf's key. The document must also be fresh: a Nitro document has no TCB or revocation to check,
so its age is what limits the replay of a captured one.

The launch it returns (`NitroLaunchIdentity`) carries the PCRs: PCR0 the enclave image, PCR1 the kernel and boot
ramdisk, PCR2 the user application, PCR3 the parent's IAM role, PCR4 the parent instance, PCR8 the image's signing
certificate (AWS, "Where to get an enclave's measurements"). An enclave started in debug mode has PCR0, PCR1 and
PCR2 all zero, which is how `debug` is told.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from asylo.identity.launch import (
    Endorsements,
    LaunchExpectation,
    LaunchIdentity,
    QuoteVerifier,
    hex_fields,
    verification_time,
)
from asylo.identity.nitro.document import (
    ES384_SIGNATURE_SIZE,
    PCR_INDEX_LIMIT,
    PCR_SIZE,
    AttestationDocument,
    parse_document,
)
from asylo.identity.x509chain import check_chain, load_der_certificate
from asylo.status import AttestationError, InvalidArgumentError

NITRO_KIND = "nitro"
#: The DER SHA-256 of the AWS Nitro Enclaves root for AWS's commercial partitions, CN=aws.nitro-enclaves, valid
#: 2019-10-28 to 2049-10-28; AWS distributes it in AWS_NitroEnclaves_Root-G1.zip (zip SHA-256 8cf60e2b...faff7c, as
#: AWS publishes it) and every genuine document's cabundle[0] is this certificate.
AWS_NITRO_ROOT_G1_SHA256 = bytes.fromhex("641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b")
AWS_NITRO_ROOTS: Mapping[bytes, str] = MappingProxyType({AWS_NITRO_ROOT_G1_SHA256: "AWS Nitro Enclaves Root-G1"})
#: How old a document may be when it is verified. An enclave asks its NSM for a document for each handshake, so a
#: fresh one is seconds old; five minutes covers transit, a busy host and modest clock drift while keeping short the
#: window in which a captured document (without a nonce binding it to one exchange) could be replayed.
DEFAULT_MAX_AGE = datetime.timedelta(minutes=5)
#: How far in the future of the verifier's clock a document's timestamp may be: EC2 clocks follow the Amazon Time
#: Sync Service, so one minute is generous for a verifier whose clock is a little behind; more is a wrong clock or a
#: forged time.
MAX_CLOCK_SKEW = datetime.timedelta(minutes=1)
#: SHA-256 digests, as `pinned_roots` keys are.
_ROOT_DIGEST_SIZE = 32
#: PCR0 (enclave image), PCR1 (kernel and bootstrap) and PCR2 (application) are all zero in debug mode (AWS).
DEBUG_PCRS = (0, 1, 2)
_ZERO_PCR = bytes(PCR_SIZE)
_HALF_SIGNATURE = ES384_SIGNATURE_SIZE // 2
#: What reading an untrusted certificate can raise besides AttestationError (cryptography's own x509 exceptions
#: derive from Exception, not ValueError).

@dataclass(frozen=True, slots=True)
class NitroLaunchIdentity(LaunchIdentity):
    """A Nitro Enclave's launch as its verified attestation document states it.

    `pcrs`: (index, 48-byte value) pairs sorted by index, every PCR the document carried. `report_data` is the
    document's user_data (empty when it had none); `nonce` and `public_key` are None when absent. `timestamp` is when
    the NSM made the document (aware, UTC). `root` names the pinned root the chain ended in.
    """

    kind: ClassVar[str] = NITRO_KIND

    module_id: str
    digest: str
    timestamp: datetime.datetime
    pcrs: tuple[tuple[int, bytes], ...]
    report_data: bytes
    nonce: bytes | None
    public_key: bytes | None
    debug: bool
    root: str

    def pcr(self, index: int) -> bytes | None:
        """PCR `index`'s value, or None if the document did not carry it."""
        for pcr_index, value in self.pcrs:
            if pcr_index == index:
                return value
        return None

    @property
    def pcr_map(self) -> Mapping[int, bytes]:
        """The PCRs as a read-only mapping of index to value."""
        return MappingProxyType(dict(self.pcrs))

    def describe(self) -> str:
        pcr0 = self.pcr(0)
        return (f"nitro enclave PCR0 {pcr0.hex() if pcr0 is not None else 'absent'} (module {self.module_id}"
                f"{', debug' if self.debug else ''})")

    def to_json(self) -> dict[str, object]:
        return hex_fields({
            "kind": self.kind,
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": self.timestamp.isoformat(timespec="milliseconds"),
            "pcrs": {str(index): value for index, value in self.pcrs},
            "debug": self.debug,
            "report_data": self.report_data,
            "nonce": self.nonce,
            "public_key": self.public_key,
            "root": self.root,
        })


class NitroQuoteVerifier(QuoteVerifier):
    """Nitro attestation documents in, `NitroLaunchIdentity` out; see the module doc for the checks.

    `pinned_roots` maps the DER SHA-256 of each trusted root to its name (default: the AWS Nitro Enclaves root);
    `max_age` is how old a document may be at the verification time. Nitro documents carry their certificates, so
    `Endorsements` must be empty.
    """

    kind: ClassVar[str] = NITRO_KIND

    def __init__(self, *, pinned_roots: Mapping[bytes, str] | None = None,
                 max_age: datetime.timedelta = DEFAULT_MAX_AGE) -> None:
        roots = AWS_NITRO_ROOTS if pinned_roots is None else pinned_roots
        if not isinstance(roots, Mapping) or not roots:
            raise InvalidArgumentError("pinned_roots must map at least one root's DER SHA-256 to its name")
        for digest, name in roots.items():
            if not isinstance(digest, bytes) or len(digest) != _ROOT_DIGEST_SIZE or not isinstance(name, str):
                raise InvalidArgumentError(f"pinned_roots must map {_ROOT_DIGEST_SIZE}-byte SHA-256 digests to "
                                           f"names, got {type(digest).__name__} -> {type(name).__name__}")
        if not isinstance(max_age, datetime.timedelta) or not datetime.timedelta(0) < max_age <= MAX_MAX_AGE:
            raise InvalidArgumentError(f"max_age must be a positive timedelta of at most {MAX_MAX_AGE}, got "
                                       f"{max_age!r}")
        self._pinned_roots: Mapping[bytes, str] = MappingProxyType(dict(roots))
        self._max_age = max_age

    @property
    def max_age(self) -> datetime.timedelta:
        return self._max_age

    def verify(self, evidence: bytes, endorsements: Endorsements, *,
               at: datetime.datetime | None = None) -> NitroLaunchIdentity:
        now = verification_time(at)
        if not isinstance(endorsements, Endorsements):
            raise InvalidArgumentError(f"endorsements must be Endorsements, got {type(endorsements).__name__}")
        if endorsements.certificates or endorsements.collateral:
            raise AttestationError("a Nitro attestation document carries its own certificates; endorsements beside "
                                   "it are not used and must be empty")
        document = parse_document(evidence)
        timestamp = document.timestamp
        _check_fresh(timestamp, now, self._max_age)
        chain, names = _load_chain(document)
        root = check_chain(chain, names, at=timestamp, pinned_roots=self._pinned_roots)
        for certificate, name in zip(chain, names, strict=True):
            if now > certificate.not_valid_after_utc:
                raise AttestationError(f"the {name} certificate expired at "
                                       f"{certificate.not_valid_after_utc.isoformat()}, before the verification time "
                                       f"{now.isoformat()}")
        _check_key_usage(chain, names)
        _check_signature(chain[0], document)
        pcrs = dict(document.pcrs)
        missing = [index for index in DEBUG_PCRS if index not in pcrs]
        if missing:
            raise AttestationError(f"the document has no PCR{missing[0]}, so whether the enclave runs in debug mode "
                                   f"cannot be told")
        return NitroLaunchIdentity(
            module_id=document.module_id,
            digest=document.digest,
            timestamp=timestamp,
            pcrs=document.pcrs,
            report_data=document.user_data or b"",
            nonce=document.nonce,
            public_key=document.public_key,
            debug=all(pcrs[index] == _ZERO_PCR for index in DEBUG_PCRS),
            root=root,
        )


class NitroPcrs(LaunchExpectation):
    """A Nitro launch whose PCRs have these values (each 48 bytes, indices 0..31), and not a debug enclave (PCR0-2
    all zero) unless `allow_debug`. PCRs not named here may have any value."""

    __slots__ = ("allow_debug", "pcrs")

    kind: ClassVar[str] = NITRO_KIND

    def __init__(self, pcrs: Mapping[int, bytes], *, allow_debug: bool = False) -> None:
        if not isinstance(pcrs, Mapping) or not pcrs:
            # An empty one would accept every Nitro enclave while claiming to check reference values.
            raise InvalidArgumentError("NitroPcrs needs at least one expected PCR")
        checked = {}
        for index, value in pcrs.items():
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < PCR_INDEX_LIMIT:
                raise InvalidArgumentError(f"a PCR index must be an integer in 0..{PCR_INDEX_LIMIT - 1}, got {index!r}")
            if not isinstance(value, bytes) or len(value) != PCR_SIZE:
                raise InvalidArgumentError(f"expected PCR{index} must be {PCR_SIZE} bytes (SHA-384)")
            checked[index] = value
        self.pcrs: Mapping[int, bytes] = MappingProxyType(dict(sorted(checked.items())))
        self.allow_debug = bool(allow_debug)

    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        if not isinstance(launch, NitroLaunchIdentity):
            return f"expected a verified nitro launch, got a {launch.kind} launch"
        problems = []
        for index, expected in self.pcrs.items():
            actual = launch.pcr(index)
            if actual is None:
                problems.append(f"PCR{index} is absent from the document, expected {expected.hex()}")
            elif actual != expected:
                problems.append(f"PCR{index} is {actual.hex()}, expected {expected.hex()}")
        if launch.debug and not self.allow_debug:
            problems.append("it is a debug enclave (PCR0, PCR1 and PCR2 all zero) and debug enclaves are not allowed "
                            "(allow_debug=True accepts them)")
        return "; ".join(problems) or None

    def describe(self) -> str:
        values = ", ".join(f"PCR{index} {value.hex()}" for index, value in self.pcrs.items())
        return f"nitro launch with {values}{', debug allowed' if self.allow_debug else ''}"

    def constrains_launch(self, kind: str) -> bool:
        # Only some PCRs pin the enclave's code: PCR0 (the whole image file), PCR8 (the certificate that signed
        # it), or PCR1 and PCR2 together (kernel and application). PCR1 alone is the same for every image built by
        # one nitro-cli, and PCR3/PCR4 name the parent's role and instance, which its owner can launch anything on.
        return kind != self.kind or 0 in self.pcrs or 8 in self.pcrs or {1, 2} <= set(self.pcrs)


#: The longest max_age a verifier takes: a leaf certificate lives 3 hours, so an older document cannot verify anyway.
MAX_MAX_AGE = datetime.timedelta(days=1)


def _check_fresh(timestamp: datetime.datetime, now: datetime.datetime, max_age: datetime.timedelta) -> None:
    # Compared as differences, not as now + skew: a verification time near datetime.max must not overflow.
    if timestamp - now > MAX_CLOCK_SKEW:
        raise AttestationError(f"the document's timestamp {timestamp.isoformat()} is in the future of the "
                               f"verification time {now.isoformat()} (more than {MAX_CLOCK_SKEW} ahead)")
    if now - timestamp > max_age:
        raise AttestationError(f"the document's timestamp {timestamp.isoformat()} is {now - timestamp} old at "
                               f"{now.isoformat()}, older than the allowed {max_age}")


def _load_chain(document: AttestationDocument) -> tuple[list[x509.Certificate], list[str]]:
    """Leaf first, then the CA bundle from its last entry back to cabundle[0], the root (AWS's order)."""
    last = len(document.cabundle) - 1
    names = ["Nitro leaf", *(f"cabundle[{index}]" for index in range(last, -1, -1))]
    ders = [document.certificate, *reversed(document.cabundle)]
    chain = []
    for der, name in zip(ders, names, strict=True):
        chain.append(load_der_certificate(der, f"the {name} certificate"))
    return chain, names


def _check_key_usage(chain: list[x509.Certificate], names: list[str]) -> None:
    """AWS's rules: the leaf is not a CA and may sign (digitalSignature); each issuer may sign certificates."""
    if not _key_usage(chain[0], names[0]).digital_signature:
        raise AttestationError(f"the {names[0]} certificate's key usage does not include digitalSignature")
    try:
        leaf_constraints = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        leaf_constraints = None
    if leaf_constraints is not None and leaf_constraints.ca:
        raise AttestationError(f"the {names[0]} certificate is a CA certificate, not an end-entity one")
    for certificate, name in zip(chain[1:], names[1:], strict=True):
        if not _key_usage(certificate, name).key_cert_sign:
            raise AttestationError(f"the {name} certificate's key usage does not include keyCertSign")


def _key_usage(certificate: x509.Certificate, name: str) -> x509.KeyUsage:
    try:
        return certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise AttestationError(f"the {name} certificate has no key usage extension") from None


def _check_signature(leaf: x509.Certificate, document: AttestationDocument) -> None:
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise AttestationError(f"the Nitro leaf certificate's key is {type(key).__name__}, not an EC P-384 key as "
                               f"ES384 needs")
    r = int.from_bytes(document.signature[:_HALF_SIGNATURE], "big")
    s = int.from_bytes(document.signature[_HALF_SIGNATURE:], "big")
    try:
        key.verify(encode_dss_signature(r, s), document.sig_structure(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise AttestationError("the document's ES384 signature does not verify with the Nitro leaf certificate's "
                               "key") from None
