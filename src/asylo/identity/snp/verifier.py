"""Verifying an SEV-SNP attestation report offline, and what a host may require of the launch it attests.

`SnpQuoteVerifier.verify` establishes authenticity and nothing more: the report parses; its VCEK chains through an
ASK to an ARK pinned in the code, every certificate valid at the given time; the VCEK is the one for this chip
(its hwID is the report's CHIP_ID) at this TCB (its SPL extensions are the report's REPORTED_TCB), so a VCEK of
another machine, or of this one before a firmware update, does not verify it; and its P-384 key signed the
report. What the launch must be (measurement, debug policy, VMPL, TCB floor) is `SnpLaunch`'s to decide.

A report whose KEY_INFO SIGNING_KEY is 1 was signed by a VLEK (Versioned Loaded Endorsement Key: a cloud
provider's, loaded into its chips; what AWS EC2's shared-tenancy SEV-SNP instances use). Its chain is VLEK ->
ASVK -> ARK, the ARK the same pinned root as the VCEK's; the VLEK's SPL extensions must be the REPORTED_TCB as a
VCEK's must, but it names no chip (it has a CSP id where a VCEK has a hwID), so the CHIP_ID is not held to it and
may be masked. The identity's `csp_id` is the VLEK's CSP id. The report's key selection decides which kind of
certificate is expected: a VLEK-signed report with a VCEK certificate is refused, and the reverse.

The VLEK path is tested against a test double of AMD's chain only: no genuine VLEK-signed report is among the
test vectors (AMD's ASVK and ARK certificates are genuine, and bundled).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from asylo.identity.identity import check_u32
from asylo.identity.launch import (
    Endorsements,
    LaunchExpectation,
    LaunchIdentity,
    QuoteVerifier,
    expected_bytes,
    hex_fields,
    verification_time,
)
from asylo.identity.snp.certs import (
    AMD_ARK_ROOTS,
    CHAIN_NAMES,
    ENDORSEMENT_KEYS,
    TURIN_HWID_SIZE,
    bundled_ark_for,
    bundled_chain_for,
    certificate_signing_key,
    intermediate_common_name,
    read_vek_extensions,
    root_product,
)
from asylo.identity.snp.report import (
    AUTHOR_KEY_DIGEST,
    CHIP_ID,
    FAMILY_ID,
    HOST_DATA,
    ID_KEY_DIGEST,
    IMAGE_ID,
    MEASUREMENT,
    REPORT_DATA,
    SIGNATURE_ALGO_ECDSA_P384_SHA384,
    SnpTcb,
    parse_report,
    policy_debug,
)
from asylo.identity.x509chain import check_chain, load_der_certificate
from asylo.status import AttestationError, InvalidArgumentError

#: Endorsements carry at most the VCEK, the ASK and the ARK (or the VLEK, the ASVK and the ARK).
MAX_ENDORSEMENT_CERTIFICATES = 3
#: A VMPL is 0 (the most privileged) to 3.
MAX_VMPL = 3
#: SHA-256 digests pin the roots (as `check_chain` computes them).
_ROOT_DIGEST_SIZE = 32

_BYTE_FIELDS = {
    "measurement": MEASUREMENT.size,
    "report_data": REPORT_DATA.size,
    "chip_id": CHIP_ID.size,
    "host_data": HOST_DATA.size,
    "family_id": FAMILY_ID.size,
    "image_id": IMAGE_ID.size,
    "id_key_digest": ID_KEY_DIGEST.size,
    "author_key_digest": AUTHOR_KEY_DIGEST.size,
}


@dataclass(frozen=True)
class SnpLaunchIdentity(LaunchIdentity):
    """An SEV-SNP launch as a verified report attests it (every field covered by the VCEK's or VLEK's signature).

    `product` is the product line of the ARK that verified the VCEK or VLEK ("Milan", "Genoa", "Turin");
    `signing_key` which key signed ("vcek" or "vlek"); `csp_id` the VLEK certificate's cloud service provider id
    (None for a VCEK); `debug` the policy's DEBUG bit. The TCBs are the report's: `reported_tcb` is the one the
    VCEK or VLEK certifies (the host may report a TCB below the current one, never above), so it is the one a TCB
    floor is held to. `chip_id` is the report's: a VCEK's hwID was checked against it; under a VLEK it is only
    what the firmware signed (all zero if the host masked it).
    """

    kind: ClassVar[str] = "snp"

    product: str
    version: int
    measurement: bytes
    report_data: bytes
    policy: int
    debug: bool
    vmpl: int
    guest_svn: int
    reported_tcb: SnpTcb
    committed_tcb: SnpTcb
    current_tcb: SnpTcb
    launch_tcb: SnpTcb
    chip_id: bytes
    host_data: bytes
    family_id: bytes
    image_id: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    platform_info: int
    signing_key: str
    csp_id: str | None = None

    def __post_init__(self) -> None:
        for name, size in _BYTE_FIELDS.items():
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
                raise InvalidArgumentError(f"SNP launch {name} must be {size} bytes, got {got}")
        for name in ("reported_tcb", "committed_tcb", "current_tcb", "launch_tcb"):
            if not isinstance(getattr(self, name), SnpTcb):
                raise InvalidArgumentError(f"SNP launch {name} must be an SnpTcb")
        if self.debug != policy_debug(self.policy):
            raise InvalidArgumentError(f"SNP launch debug={self.debug} contradicts policy {self.policy:#x}")
        if self.signing_key not in ENDORSEMENT_KEYS:
            raise InvalidArgumentError(f"SNP launch signing_key must be one of {', '.join(ENDORSEMENT_KEYS)}, got "
                                       f"{self.signing_key!r}")
        if self.signing_key == "vlek" and not (isinstance(self.csp_id, str) and self.csp_id):
            raise InvalidArgumentError(f"a VLEK-signed SNP launch names its CSP id, got {self.csp_id!r}")
        if self.signing_key == "vcek" and self.csp_id is not None:
            raise InvalidArgumentError(f"a VCEK-signed SNP launch has no CSP id, got {self.csp_id!r}")

    def describe(self) -> str:
        debug = ", DEBUG policy" if self.debug else ""
        vlek = f", VLEK of CSP {self.csp_id!r}" if self.signing_key == "vlek" else ""
        return (f"SEV-SNP {self.product} launch measurement {self.measurement.hex()} (VMPL {self.vmpl}, TCB "
                f"{self.reported_tcb.describe()}, policy {self.policy:#x}{debug}{vlek})")

    def to_json(self) -> dict[str, object]:
        return hex_fields({
            "kind": self.kind,
            "product": self.product,
            "measurement": self.measurement,
            "report_data": self.report_data,
            "policy": self.policy,
            "debug": self.debug,
            "vmpl": self.vmpl,
            "guest_svn": self.guest_svn,
            "reported_tcb": self.reported_tcb.to_json(),
            "committed_tcb": self.committed_tcb.to_json(),
            "current_tcb": self.current_tcb.to_json(),
            "launch_tcb": self.launch_tcb.to_json(),
            "chip_id": self.chip_id,
            "host_data": self.host_data,
            "family_id": self.family_id,
            "image_id": self.image_id,
            "id_key_digest": self.id_key_digest,
            "author_key_digest": self.author_key_digest,
            "platform_info": self.platform_info,
            "signing_key": self.signing_key,
            "csp_id": self.csp_id,
            "version": self.version,
        })


def _check_roots(roots: Mapping[bytes, str]) -> Mapping[bytes, str]:
    if not isinstance(roots, Mapping) or not roots:
        raise InvalidArgumentError("pinned_roots must be a non-empty mapping of ARK DER SHA-256 digests to names")
    for digest, name in roots.items():
        if not isinstance(digest, bytes) or len(digest) != _ROOT_DIGEST_SIZE:
            raise InvalidArgumentError(f"a pinned root digest must be {_ROOT_DIGEST_SIZE} bytes (SHA-256 of the DER), "
                                       f"got {digest!r}")
        if root_product(name) is None:
            raise InvalidArgumentError(f"a pinned root's name must be 'ARK-Milan', 'ARK-Genoa' or 'ARK-Turin', "
                                       f"optionally followed by a space and a note; got {name!r}")
    return MappingProxyType(dict(roots))


class SnpQuoteVerifier(QuoteVerifier):
    """The host side of SEV-SNP: an attestation report and its VCEK (or VLEK) in, a verified `SnpLaunchIdentity`
    out.

    `pinned_roots` maps ARK DER SHA-256 digests to names of the form "ARK-<product>" (default: AMD's Milan,
    Genoa and Turin ARKs); the product line of the root that verifies is the identity's `product`, and decides how
    the TCB fields are read. The endorsements are the VCEK, ASK and ARK for a VCEK-signed report and the VLEK, ASVK
    and ARK for a VLEK-signed one. `bundled_chains`: when the endorsements carry only the leaf (or the leaf and its
    intermediate), complete the chain with the ASK/ARK or ASVK/ARK pyasylo ships whose subject issued it; the
    bundled ARKs are AMD's, so this helps only with the default roots.
    """

    kind: ClassVar[str] = "snp"

    __slots__ = ("_bundled_chains", "_pinned_roots")

    def __init__(self, *, pinned_roots: Mapping[bytes, str] | None = None, bundled_chains: bool = True) -> None:
        self._pinned_roots = _check_roots(AMD_ARK_ROOTS if pinned_roots is None else pinned_roots)
        self._bundled_chains = bool(bundled_chains)

    @property
    def pinned_roots(self) -> Mapping[bytes, str]:
        return self._pinned_roots

    def verify(self, evidence: bytes, endorsements: Endorsements, *,
               at: datetime.datetime | None = None) -> SnpLaunchIdentity:
        """The verified launch; AttestationError naming the first check that failed (see the module doc)."""
        when = verification_time(at)
        if not isinstance(endorsements, Endorsements):
            raise InvalidArgumentError(f"endorsements must be Endorsements, got {type(endorsements).__name__}")
        report = parse_report(evidence)
        if report.signing_key == "none":
            raise AttestationError("the SNP report is not signed (KEY_INFO SIGNING_KEY is 'none')")
        if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
            raise AttestationError(f"the SNP report's SIGNATURE_ALGO is {report.signature_algo}, expected "
                                   f"{SIGNATURE_ALGO_ECDSA_P384_SHA384} (ECDSA P-384 with SHA-384)")
        # The report's key selection (KEY_INFO SIGNING_KEY: 0 the VCEK, 1 the VLEK) decides which kind of
        # certificate, and so which chain and which checks, are expected; never the certificate presented.
        signing_key = report.signing_key
        names = CHAIN_NAMES[signing_key]
        leaf_name = names[0]
        chain = self._chain(endorsements, signing_key)
        root_name = check_chain(chain, names, at=when, pinned_roots=self._pinned_roots)
        product = root_product(root_name)
        if product is None:  # the constructor checked every pinned name
            raise AttestationError(f"the pinned root {root_name!r} names no product line")
        leaf = chain[0]
        turin = product == "Turin"
        if report.turin_tcb_layout != turin:
            stated = "Turin's" if report.turin_tcb_layout else "Milan's/Genoa's"
            raise AttestationError(f"the SNP report's TCB fields are in {stated} layout, but its {leaf_name} chains "
                                   f"to {root_name}")
        try:
            key = leaf.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise AttestationError(f"the {leaf_name}'s public key does not parse: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
            raise AttestationError(f"the {leaf_name}'s key is not an EC P-384 key ({type(key).__name__})")
        self._check_intermediate(chain[1], signing_key, product)
        extensions = read_vek_extensions(leaf, turin=turin, what=leaf_name)
        self._check_kind(extensions.signing_key, signing_key)
        if extensions.product_line != product:
            raise AttestationError(f"the {leaf_name} is for product {extensions.product_name!r} but chains to "
                                   f"{root_name}")
        if signing_key == "vcek":
            self._check_chip(report.chip_id, report.chip_id_masked, extensions.hwid, turin=turin)
        # No chip id check for a VLEK: AMD issues one VLEK per cloud provider, product line and TCB, and the
        # provider loads that same key into each of its chips, so the VLEK certificate names no chip (it carries
        # a CSP id, not a hwID) and the report's CHIP_ID, masked or not, has nothing to be held to.
        if extensions.tcb != report.reported_tcb:
            raise AttestationError(
                f"the {leaf_name} certifies TCB {extensions.tcb.describe()}, the report's REPORTED_TCB is "
                f"{report.reported_tcb.describe()} (the {leaf_name} is for another TCB"
                f"{' of this chip' if signing_key == 'vcek' else ''})"
            )
        signature = encode_dss_signature(report.signature_r, report.signature_s)
        try:
            key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError):
            other = "another chip" if signing_key == "vcek" else "another key"
            raise AttestationError(f"the SNP report's signature does not verify with the {leaf_name}'s key (the "
                                   f"report was altered, or {other} signed it)") from None
        return SnpLaunchIdentity(
            product=product,
            version=report.version,
            measurement=report.measurement,
            report_data=report.report_data,
            policy=report.policy,
            debug=report.debug,
            vmpl=report.vmpl,
            guest_svn=report.guest_svn,
            reported_tcb=report.reported_tcb,
            committed_tcb=report.committed_tcb,
            current_tcb=report.current_tcb,
            launch_tcb=report.launch_tcb,
            chip_id=report.chip_id,
            host_data=report.host_data,
            family_id=report.family_id,
            image_id=report.image_id,
            id_key_digest=report.id_key_digest,
            author_key_digest=report.author_key_digest,
            platform_info=report.platform_info,
            signing_key=signing_key,
            csp_id=extensions.csp_id if signing_key == "vlek" else None,
        )

    def _chain(self, endorsements: Endorsements,
               signing_key: str) -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
        """The leaf, intermediate and ARK (VCEK, ASK, ARK or VLEK, ASVK, ARK, as `signing_key` says): from the
        endorsements, completed from the bundled chains of that kind if allowed."""
        leaf_name, intermediate_name, _ = CHAIN_NAMES[signing_key]
        certificates = endorsements.certificates
        if not certificates:
            raise AttestationError(f"the endorsements carry no {leaf_name} certificate")
        if len(certificates) > MAX_ENDORSEMENT_CERTIFICATES:
            raise AttestationError(f"the endorsements carry {len(certificates)} certificates, at most "
                                   f"{MAX_ENDORSEMENT_CERTIFICATES} ({', '.join(CHAIN_NAMES[signing_key])})")
        for index, der in enumerate(certificates):
            if not isinstance(der, bytes):
                raise InvalidArgumentError(f"endorsement certificate {index} must be DER bytes, "
                                           f"got {type(der).__name__}")
        leaf = _load(certificates[0], leaf_name)
        # Refuse a certificate of the other kind at once, with a message that says so (the checks after the chain
        # would refuse it too, less plainly): these extensions are not trusted yet, but refusing on them is safe.
        self._check_kind(certificate_signing_key(leaf, leaf_name), signing_key, leaf_only=True)
        if len(certificates) == MAX_ENDORSEMENT_CERTIFICATES:
            return leaf, _load(certificates[1], intermediate_name), _load(certificates[2], "ARK")
        if len(certificates) == 2:
            intermediate = _load(certificates[1], intermediate_name)
            ark = bundled_ark_for(intermediate) if self._bundled_chains else None
            if ark is None:
                raise AttestationError(
                    f"the endorsements carry the {leaf_name} and {intermediate_name} but no ARK, and no bundled AMD "
                    f"ARK issued the {intermediate_name} (issuer {intermediate.issuer.rfc4514_string()})")
            return leaf, intermediate, ark
        chain = bundled_chain_for(leaf, signing_key) if self._bundled_chains else None
        if chain is None:
            raise AttestationError(
                f"the endorsements carry only the {leaf_name}, and no bundled AMD chain issued it (issuer "
                f"{leaf.issuer.rfc4514_string()}, looked for among the bundled {intermediate_name}s"
                f"{'' if self._bundled_chains else '; bundled chains are off'}); send the {intermediate_name} and "
                "ARK with it"
            )
        return leaf, chain.ask, chain.ark

    @staticmethod
    def _check_kind(found: str | None, expected: str, *, leaf_only: bool = False) -> None:
        """The leaf certificate is of the kind the report's key selection names. A VCEK and a VLEK are told apart
        by their AMD extensions (AMD's KDS specification and VLEK certificate definition): a VCEK carries the
        chip's hwID (1.3.6.1.4.1.3704.1.4) and no CSP id, a VLEK the provider's CSP id (1.3.6.1.4.1.3704.1.5) and
        no hwID. (Their issuers differ too, by subject: `_check_intermediate`.) `found` None (neither, or both) is
        left to the checks that say what is missing (`leaf_only`) or refused here."""
        if found == expected:
            return
        stated = "VCEK (signing key 0)" if expected == "vcek" else "VLEK (signing key 1)"
        if found is not None:
            what = ("a VLEK (it has a CSP id, 1.3.6.1.4.1.3704.1.5, and no hwID)" if found == "vlek"
                    else "a VCEK (it has a hwID, 1.3.6.1.4.1.3704.1.4, and no CSP id)")
            raise AttestationError(f"the SNP report's KEY_INFO selects the {stated}, but the endorsements' leaf "
                                   f"certificate is {what}")
        if leaf_only:
            return
        if expected == "vcek":
            raise AttestationError("the VCEK has no hwID extension (1.3.6.1.4.1.3704.1.4), so it names no chip")
        raise AttestationError("the VLEK has no CSP id extension (1.3.6.1.4.1.3704.1.5), so it names no cloud "
                               "provider")

    @staticmethod
    def _check_intermediate(intermediate: x509.Certificate, signing_key: str, product: str) -> None:
        """The intermediate is the one that issues this kind of leaf: AMD names its ASK "SEV-<product>" and its
        ASVK "SEV-VLEK-<product>", and the pinned ARK signed that name, so a VLEK issued by an ASK (or a VCEK by
        an ASVK) is refused."""
        name = CHAIN_NAMES[signing_key][1]
        expected = intermediate_common_name(signing_key, product)
        try:
            common_names = [attribute.value for attribute in
                            intermediate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        except ValueError as exc:
            raise AttestationError(f"the {name} certificate's subject does not parse: {exc}") from None
        if common_names != [expected]:
            raise AttestationError(f"the {name} certificate's common name is {common_names!r}, expected "
                                   f"{[expected]!r} (the {name} of {product} that issues "
                                   f"{CHAIN_NAMES[signing_key][0]}s)")

    @staticmethod
    def _check_chip(chip_id: bytes, masked: bool, hwid: bytes | None, *, turin: bool) -> None:
        if hwid is None:
            raise AttestationError("the VCEK has no hwID extension (1.3.6.1.4.1.3704.1.4), so it names no chip")
        if masked:
            raise AttestationError("the SNP report's CHIP_ID is masked (MASK_CHIP_KEY or all zero), so it cannot be "
                                   "tied to the VCEK's chip")
        reported = chip_id
        if turin:
            reported = chip_id[:TURIN_HWID_SIZE]
            if any(chip_id[TURIN_HWID_SIZE:]):
                raise AttestationError(f"the Turin report's CHIP_ID has nonzero bytes after its first "
                                       f"{TURIN_HWID_SIZE} ({chip_id.hex()})")
        if hwid != reported:
            raise AttestationError(f"the VCEK's hwID {hwid.hex()} is not the report's CHIP_ID {reported.hex()} (the "
                                   "VCEK is another chip's)")


def _load(der: bytes, what: str) -> x509.Certificate:
    """A certificate from the endorsements, every part parsed: AttestationError for anything malformed."""
    return load_der_certificate(der, what)


def _hex_argument(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"expected SNP {name} must be hex, got {value!r}") from None


class SnpLaunch(LaunchExpectation):
    """What a host requires of an SEV-SNP launch: its measurement, and the policy, VMPL and TCB it ran with.

    `measurement` (48 bytes) is the launch digest of the guest's initial memory and VMSAs; None accepts any
    measurement (then `id_key_digest` should pin who signed the ID block, or nothing pins the guest). `min_tcb` is
    a floor on the REPORTED_TCB, component by component. Debug guests (policy bit 19) are refused unless
    `allow_debug`: their memory is open to the hypervisor. `vmpl` is the VMPL the report must have been requested
    at (default 0, the guest kernel's own; None accepts any). `host_data`, `family_id`, `image_id` and
    `id_key_digest` must equal the report's when given; `min_guest_svn` is a floor on GUEST_SVN.
    """

    kind: ClassVar[str] = "snp"

    __slots__ = ("allow_debug", "family_id", "host_data", "id_key_digest", "image_id", "measurement",
                 "min_guest_svn", "min_tcb", "vmpl")

    def __init__(self, measurement: bytes | None = None, *, min_tcb: SnpTcb | None = None, allow_debug: bool = False,
                 vmpl: int | None = 0, host_data: bytes | None = None, min_guest_svn: int | None = None,
                 family_id: bytes | None = None, image_id: bytes | None = None,
                 id_key_digest: bytes | None = None) -> None:
        self.measurement = expected_bytes(measurement, "SNP measurement", MEASUREMENT.size)
        if min_tcb is not None and not isinstance(min_tcb, SnpTcb):
            raise InvalidArgumentError(f"min_tcb must be an SnpTcb, got {type(min_tcb).__name__}")
        self.min_tcb = min_tcb
        if not isinstance(allow_debug, bool):
            raise InvalidArgumentError(f"allow_debug must be a bool, got {allow_debug!r}")
        self.allow_debug = allow_debug
        if vmpl is not None and (not isinstance(vmpl, int) or isinstance(vmpl, bool) or not 0 <= vmpl <= MAX_VMPL):
            raise InvalidArgumentError(f"vmpl must be None or an integer in 0..{MAX_VMPL}, got {vmpl!r}")
        self.vmpl = vmpl
        self.host_data = expected_bytes(host_data, "SNP host_data", HOST_DATA.size)
        self.min_guest_svn = None if min_guest_svn is None else check_u32(min_guest_svn, "min_guest_svn")
        self.family_id = expected_bytes(family_id, "SNP family_id", FAMILY_ID.size)
        self.image_id = expected_bytes(image_id, "SNP image_id", IMAGE_ID.size)
        self.id_key_digest = expected_bytes(id_key_digest, "SNP id_key_digest", ID_KEY_DIGEST.size)

    @classmethod
    def from_hex(cls, measurement: str | None = None, *, min_tcb: SnpTcb | None = None, allow_debug: bool = False,
                 vmpl: int | None = 0, host_data: str | None = None, min_guest_svn: int | None = None,
                 family_id: str | None = None, image_id: str | None = None,
                 id_key_digest: str | None = None) -> SnpLaunch:
        """The same, with the byte values as hex text (as `asylo evidence verify` prints them)."""
        return cls(_hex_argument(measurement, "measurement"), min_tcb=min_tcb, allow_debug=allow_debug, vmpl=vmpl,
                   host_data=_hex_argument(host_data, "host_data"), min_guest_svn=min_guest_svn,
                   family_id=_hex_argument(family_id, "family_id"), image_id=_hex_argument(image_id, "image_id"),
                   id_key_digest=_hex_argument(id_key_digest, "id_key_digest"))

    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        if not isinstance(launch, SnpLaunchIdentity):
            return f"expected an SEV-SNP launch, got {type(launch).__name__}"
        problems = []
        if self.measurement is not None and launch.measurement != self.measurement:
            problems.append(f"SNP measurement is {launch.measurement.hex()}, expected {self.measurement.hex()}")
        if launch.debug and not self.allow_debug:
            problems.append(f"the SNP guest policy {launch.policy:#x} allows debugging (bit 19: the hypervisor can "
                            "read its memory) and debug guests are not allowed (allow_debug=True accepts them)")
        if self.vmpl is not None and launch.vmpl != self.vmpl:
            problems.append(f"SNP VMPL is {launch.vmpl}, expected {self.vmpl}")
        if self.min_tcb is not None:
            below = launch.reported_tcb.below(self.min_tcb)
            if below:
                problems.append(f"SNP reported TCB {launch.reported_tcb.describe()} is below the minimum "
                                f"{self.min_tcb.describe()} ({', '.join(below)})")
        if self.min_guest_svn is not None and launch.guest_svn < self.min_guest_svn:
            problems.append(f"SNP guest SVN is {launch.guest_svn}, below the minimum {self.min_guest_svn}")
        for name in ("host_data", "family_id", "image_id", "id_key_digest"):
            expected: bytes | None = getattr(self, name)
            actual: bytes = getattr(launch, name)
            if expected is not None and actual != expected:
                problems.append(f"SNP {name} is {actual.hex()}, expected {expected.hex()}")
        return "; ".join(problems) or None

    def describe(self) -> str:
        parts = [f"SNP launch measurement {self.measurement.hex()}" if self.measurement is not None
                 else "SNP launch of any measurement"]
        if self.id_key_digest is not None:
            parts.append(f"ID key {self.id_key_digest.hex()}")
        parts.append("any VMPL" if self.vmpl is None else f"VMPL {self.vmpl}")
        if self.min_tcb is not None:
            parts.append(f"TCB >= {self.min_tcb.describe()}")
        if self.min_guest_svn is not None:
            parts.append(f"guest SVN >= {self.min_guest_svn}")
        for name in ("host_data", "family_id", "image_id"):
            value: bytes | None = getattr(self, name)
            if value is not None:
                parts.append(f"{name} {value.hex()}")
        parts.append("debug allowed" if self.allow_debug else "no debug")
        return ", ".join(parts)

    def constrains_launch(self, kind: str) -> bool:
        # Another kind it refuses outright. Its own it pins only with a measurement or an ID key: policy, VMPL and
        # TCB alone accept whatever guest image the host chooses to launch, and that guest reports what it likes.
        # An all-zero ID key digest is what a guest launched without an ID block reports: it pins nothing.
        id_key = self.id_key_digest is not None and any(self.id_key_digest)
        return kind != self.kind or self.measurement is not None or id_key
