"""AMD's SEV-SNP certificates: the pinned ARK roots, the bundled ASK/ARK and ASVK/ARK chains, the VCEK's and
VLEK's extensions, and the certificate table a hypervisor hands its guest.

AMD's chain is ARK (AMD Root Key, self-signed, RSA-4096) -> ASK (AMD SEV Key) -> VCEK (Versioned Chip Endorsement
Key, EC P-384, one per chip and TCB), all RSA-PSS/SHA-384, one chain per product line. A cloud provider's machines
may sign with a VLEK instead (Versioned Loaded Endorsement Key: one per cloud provider, product line and TCB, loaded
into each of the provider's chips; AWS EC2's shared-tenancy SEV-SNP instances use it), which chains ARK -> ASVK (AMD
SEV VLEK Key) -> VLEK, under the same ARK. The ARKs are pinned here by the SHA-256 of their DER; the ASK, ASVK and
ARK certificates are bundled (package data in `amd/`, see its PROVENANCE.md) so that evidence carrying only the
VCEK or VLEK can be verified offline. The extensions of the VCEK and VLEK (AMD's Key Distribution Service
specification and its VLEK certificate definition, OIDs under 1.3.6.1.4.1.3704.1) state which TCB they certify,
and which chip (the VCEK's hwID) or which cloud provider (the VLEK's CSP id); the verifier holds the report to them.

The certificate table is what the hypervisor supplies beside an extended report (Linux configfs-tsm's `auxblob`
for sev_guest; the GHCB specification, publication 56421, section 4.1.8.1, "struct cert_table"): entries of a
16-byte GUID, a u32 offset and a u32 length (little-endian), ended by an all-zero entry, then the certificates.
"""

from __future__ import annotations

import functools
import itertools
import re
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from cryptography import x509
from cryptography.x509.oid import NameOID

from asylo.identity.launch import Endorsements
from asylo.identity.snp.report import SnpTcb
from asylo.identity.x509chain import certificate_sha256
from asylo.status import AttestationError, InternalError, InvalidArgumentError

# --- The pinned roots and the bundled chains -------------------------------------------------------------------

#: AMD's ARK for each product line, by the SHA-256 of its DER (the certificates AMD's KDS serves at
#: /vcek/v1/<product>/cert_chain; values checked against the bundled copies, see amd/PROVENANCE.md).
ARK_MILAN_SHA256 = bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd")
ARK_GENOA_SHA256 = bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1")
ARK_TURIN_SHA256 = bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a")

#: The product lines this verifier knows, and so the root names it accepts: "ARK-<product>", optionally followed
#: by a space and anything (a test's own root: "ARK-Milan (test double)").
PRODUCTS = ("Milan", "Genoa", "Turin")
_ROOT_NAME = re.compile(r"ARK-(Milan|Genoa|Turin)(?: .*)?", re.DOTALL)

#: The default trust: AMD's three ARKs.
AMD_ARK_ROOTS: Mapping[bytes, str] = MappingProxyType({
    ARK_MILAN_SHA256: "ARK-Milan",
    ARK_GENOA_SHA256: "ARK-Genoa",
    ARK_TURIN_SHA256: "ARK-Turin",
})

#: The bundled ASK-then-ARK PEM files (package data in `amd/`), by product line: the VCEK's chains, as AMD's KDS
#: serves them at /vcek/v1/<product>/cert_chain.
BUNDLED_CHAIN_FILES: Mapping[str, str] = MappingProxyType({
    "Milan": "ask_ark_milan.pem",
    "Genoa": "ask_ark_genoa.pem",
    "Turin": "ask_ark_turin_vcek.pem",
})
#: The bundled ASVK-then-ARK PEM files, by product line: the VLEK's chains, as AMD's KDS serves them at
#: /vlek/v1/<product>/cert_chain. Each ARK is the VCEK chain's ARK of the same product (the same pinned digest).
BUNDLED_VLEK_CHAIN_FILES: Mapping[str, str] = MappingProxyType({
    "Milan": "ask_ark_milan_vlek.pem",
    "Genoa": "ask_ark_genoa_vlek.pem",
    "Turin": "ask_ark_turin_vlek.pem",
})
#: The endorsement key kinds (the report's KEY_INFO SIGNING_KEY 0 and 1), and what each chain's certificates are
#: called, leaf first.
ENDORSEMENT_KEYS = ("vcek", "vlek")
CHAIN_NAMES: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "vcek": ("VCEK", "ASK", "ARK"),
    "vlek": ("VLEK", "ASVK", "ARK"),
})
_BUNDLED_FILES = {"vcek": BUNDLED_CHAIN_FILES, "vlek": BUNDLED_VLEK_CHAIN_FILES}
_BUNDLED_ARKS = {"Milan": ARK_MILAN_SHA256, "Genoa": ARK_GENOA_SHA256, "Turin": ARK_TURIN_SHA256}
#: A bundled PEM file holds two certificates of about 2 KiB each as PEM.
_MAX_BUNDLED_FILE_SIZE = 64 * 1024


def root_product(name: str) -> str | None:
    """The product line a pinned root's name names ("ARK-Milan" -> "Milan"), or None if it names none."""
    match = _ROOT_NAME.fullmatch(name) if isinstance(name, str) else None
    return match.group(1) if match else None


def intermediate_common_name(signing_key: str, product: str) -> str:
    """The common name AMD gives the intermediate that issues `signing_key`'s certificates for `product`: the ASK
    is "SEV-Milan", the ASVK "SEV-VLEK-Milan" (as AMD's KDS serves them, and go-sev-guest checks them)."""
    return f"SEV-VLEK-{product}" if signing_key == "vlek" else f"SEV-{product}"


def _check_signing_key(signing_key: str) -> str:
    if signing_key not in ENDORSEMENT_KEYS:
        raise InvalidArgumentError(f"the signing key is one of {', '.join(ENDORSEMENT_KEYS)}, got {signing_key!r}")
    return signing_key


@dataclass(frozen=True)
class AmdChain:
    """One product line's intermediate and ARK, as bundled: for `signing_key` "vcek" the ASK, for "vlek" the
    ASVK (the field keeps the name `ask`: it is the intermediate either way)."""

    product: str
    ask: x509.Certificate
    ark: x509.Certificate
    signing_key: str = "vcek"


@functools.cache
def bundled_chains(signing_key: str = "vcek") -> tuple[AmdChain, ...]:
    """AMD's ASK/ARK chains (or, for "vlek", ASVK/ARK chains) shipped with pyasylo, loaded once. InternalError if
    the package data is missing or is not what is pinned (a broken installation, not a peer's doing)."""
    _check_signing_key(signing_key)
    chains = []
    folder = resources.files("asylo.identity.snp").joinpath("amd")
    intermediate = CHAIN_NAMES[signing_key][1]
    for product, filename in _BUNDLED_FILES[signing_key].items():
        try:
            pem = folder.joinpath(filename).read_bytes()
        except OSError as exc:
            raise InternalError(f"the bundled AMD chain {filename} is missing from this installation: {exc}") from None
        if len(pem) > _MAX_BUNDLED_FILE_SIZE:
            raise InternalError(f"the bundled AMD chain {filename} is {len(pem)} bytes, not AMD's")
        try:
            certificates = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise InternalError(f"the bundled AMD chain {filename} does not parse: {exc}") from None
        if len(certificates) != 2 or certificate_sha256(certificates[1]) != _BUNDLED_ARKS[product]:
            raise InternalError(f"the bundled AMD chain {filename} is not the {intermediate} and the pinned "
                                f"ARK-{product}")
        names = certificates[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if [name.value for name in names] != [intermediate_common_name(signing_key, product)]:
            raise InternalError(f"the bundled AMD chain {filename} does not start with the {intermediate} of "
                                f"{product}")
        chains.append(AmdChain(product, certificates[0], certificates[1], signing_key))
    return tuple(chains)


def bundled_chain_for(leaf: x509.Certificate, signing_key: str = "vcek") -> AmdChain | None:
    """The bundled chain whose ASK (for "vlek": whose ASVK) issued `leaf` (by name; the signature is check_chain's
    to verify), or None."""
    for chain in bundled_chains(signing_key):
        if leaf.issuer == chain.ask.subject:
            return chain
    return None


def bundled_ark_for(intermediate: x509.Certificate) -> x509.Certificate | None:
    """The bundled ARK that issued `intermediate` (an ASK or an ASVK: one ARK per product issues both), by name,
    or None."""
    for chain in bundled_chains():
        if intermediate.issuer == chain.ark.subject:
            return chain.ark
    return None


# --- The VCEK's (and VLEK's) extensions --------------------------------------------------------------------------

_AMD_OID = "1.3.6.1.4.1.3704.1"
#: AMD KDS specification, "VCEK Certificate Extensions".
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{_AMD_OID}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD_OID}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{_AMD_OID}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{_AMD_OID}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{_AMD_OID}.3.3")
#: SPL_4..SPL_7: reserved components of the TCB (always zero so far); they must be absent or zero.
OID_RESERVED_SPLS = tuple(x509.ObjectIdentifier(f"{_AMD_OID}.3.{index}") for index in (4, 5, 6, 7))
OID_UCODE_SPL = x509.ObjectIdentifier(f"{_AMD_OID}.3.8")
#: Turin only.
OID_FMC_SPL = x509.ObjectIdentifier(f"{_AMD_OID}.3.9")
#: The chip's hwID, which equals the report's CHIP_ID: 64 bytes (Milan, Genoa) or 8 (Turin). VCEKs only.
OID_HWID = x509.ObjectIdentifier(f"{_AMD_OID}.4")
#: A VLEK's cloud service provider (an IA5String naming it), instead of a hwID. VLEKs only.
OID_CSP_ID = x509.ObjectIdentifier(f"{_AMD_OID}.5")

HWID_SIZE = 64
TURIN_HWID_SIZE = 8
#: The largest of these extension values is the hwID with a DER header (66 bytes); product names ("Milan-B0") and
#: CSP ids are short strings. A longer value is not AMD's.
MAX_EXTENSION_VALUE_SIZE = 128
_DER_INTEGER = 0x02
_DER_OCTET_STRING = 0x04
_DER_IA5_STRING = 0x16
#: Short-form DER lengths only: every value here is under 128 bytes.
_DER_SHORT_LENGTH_LIMIT = 0x80


@dataclass(frozen=True)
class VekExtensions:
    """What a VCEK or VLEK certificate certifies: its product ("Milan-B0"), the TCB it was issued for, and the chip
    (hwID, VCEK) or the cloud provider (CSP id, VLEK)."""

    product_name: str
    tcb: SnpTcb
    hwid: bytes | None
    csp_id: str | None

    @property
    def product_line(self) -> str:
        """"Milan" of "Milan-B0" (a VCEK's product name has the stepping, a VLEK's has not: "Milan")."""
        return self.product_name.split("-", 1)[0]

    @property
    def signing_key(self) -> str | None:
        """Which kind of endorsement key these extensions certify: "vcek" (a hwID), "vlek" (a CSP id), or None
        (neither; `read_vek_extensions` refuses both)."""
        if self.hwid is not None:
            return "vcek"
        return "vlek" if self.csp_id is not None else None


#: What `cryptography` raises for a certificate whose extensions do not parse (it parses them on first access).
_EXTENSION_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def _der_content(value: bytes, tag: int, what: str) -> bytes:
    """The content of the single DER element of type `tag` that is all of `value`."""
    if len(value) < 2 or value[0] != tag:
        raise AttestationError(f"{what} is not a DER element of type {tag:#04x}")
    length = value[1]
    if length >= _DER_SHORT_LENGTH_LIMIT or length != len(value) - 2:
        raise AttestationError(f"{what} has a DER length {length} that is not the {len(value) - 2} bytes it holds")
    return value[2:]


def _der_spl(value: bytes, what: str) -> int:
    """A DER INTEGER in 0..255 (an SPL), minimally encoded as DER requires."""
    content = _der_content(value, _DER_INTEGER, what)
    if len(content) == 1 and content[0] < 0x80:
        return content[0]
    if len(content) == 2 and content[0] == 0 and content[1] >= 0x80:
        return content[1]
    raise AttestationError(f"{what} is not a DER integer in 0..255 (content {content.hex()})")


def _extension_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None
    except _EXTENSION_ERRORS as exc:
        raise AttestationError(f"the {what} certificate's extensions do not parse: {exc}") from None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise AttestationError(f"the {what} certificate's extension {oid.dotted_string} is not AMD's")
    if len(value.value) > MAX_EXTENSION_VALUE_SIZE:
        raise AttestationError(f"the {what} certificate's extension {oid.dotted_string} is {len(value.value)} bytes,"
                               f" over the limit of {MAX_EXTENSION_VALUE_SIZE}")
    return value.value


def _required(certificate: x509.Certificate, oid: x509.ObjectIdentifier, what: str, field: str) -> bytes:
    value = _extension_value(certificate, oid, what)
    if value is None:
        raise AttestationError(f"the {what} certificate has no {field} extension ({oid.dotted_string})")
    return value


def _spl(certificate: x509.Certificate, oid: x509.ObjectIdentifier, what: str, field: str) -> int:
    return _der_spl(_required(certificate, oid, what, field), f"the {what} certificate's {field}")


def _ia5(value: bytes, what: str) -> str:
    content = _der_content(value, _DER_IA5_STRING, what)
    if not content or any(byte < 0x20 or byte > 0x7E for byte in content):
        raise AttestationError(f"{what} is not a printable IA5String")
    return content.decode("ascii")


def _hwid(value: bytes, size: int, what: str) -> bytes:
    # AMD's KDS puts the hwID's bytes in the extension without a DER tag; a tagged OCTET STRING is accepted too,
    # in case AMD adds the tag (as go-sev-guest does).
    if len(value) == size:
        return value
    content = _der_content(value, _DER_OCTET_STRING, what)
    if len(content) != size:
        raise AttestationError(f"{what} is {len(content)} bytes, expected {size}")
    return content


def certificate_signing_key(certificate: x509.Certificate, what: str = "leaf") -> str | None:
    """Which endorsement key `certificate` is by its AMD extensions, before anything else of it is read: "vcek"
    if it has a hwID and no CSP id, "vlek" if it has a CSP id and no hwID, else None (`read_vek_extensions` then
    says what is wrong). The values are bounded but not decoded here."""
    hwid = _extension_value(certificate, OID_HWID, what) is not None
    csp_id = _extension_value(certificate, OID_CSP_ID, what) is not None
    if hwid != csp_id:
        return "vcek" if hwid else "vlek"
    return None


def read_vek_extensions(certificate: x509.Certificate, *, turin: bool, what: str = "VCEK") -> VekExtensions:
    """AMD's extensions of a VCEK or VLEK certificate, read with bounds; `turin` selects Turin's TCB (with FMC)
    and hwID size. AttestationError naming what is missing or malformed, or if it has both a hwID and a CSP id.
    Whether it has the one its report's signing key needs is the caller's to check (`VekExtensions.signing_key`)."""
    product_name = _ia5(_required(certificate, OID_PRODUCT_NAME, what, "product name"),
                        f"the {what} certificate's product name")
    for oid in OID_RESERVED_SPLS:
        value = _extension_value(certificate, oid, what)
        if value is not None and _der_spl(value, f"the {what} certificate's {oid.dotted_string}") != 0:
            raise AttestationError(f"the {what} certificate has a nonzero reserved SPL {oid.dotted_string} "
                                   "(a TCB component this verifier does not know)")
    tcb = SnpTcb(
        bootloader=_spl(certificate, OID_BL_SPL, what, "bootloader SPL"),
        tee=_spl(certificate, OID_TEE_SPL, what, "TEE SPL"),
        snp=_spl(certificate, OID_SNP_SPL, what, "SNP SPL"),
        microcode=_spl(certificate, OID_UCODE_SPL, what, "microcode SPL"),
        fmc=_spl(certificate, OID_FMC_SPL, what, "FMC SPL") if turin else None,
    )
    hwid_value = _extension_value(certificate, OID_HWID, what)
    csp_value = _extension_value(certificate, OID_CSP_ID, what)
    if hwid_value is not None and csp_value is not None:
        raise AttestationError(f"the {what} certificate has both a hwID and a CSP id")
    hwid = None if hwid_value is None else _hwid(hwid_value, TURIN_HWID_SIZE if turin else HWID_SIZE,
                                                 f"the {what} certificate's hwID")
    csp_id = None if csp_value is None else _ia5(csp_value, f"the {what} certificate's CSP id")
    return VekExtensions(product_name=product_name, tcb=tcb, hwid=hwid, csp_id=csp_id)


# --- The certificate table ---------------------------------------------------------------------------------------

#: The GHCB specification's GUIDs for the certificates (section 4.1.8.1), as go-sev-guest's abi and virtee/sev's
#: CertType spell them. On the wire a GUID is its 16 bytes in the order the text writes them (RFC 4122 order, what
#: uuid_parse and Python's `UUID.bytes` give), as both those implementations and AMD's sev-guest tools write it.
#: There is no GUID of the ASVK's: a host that supplies a VLEK puts its ASVK under the ASK's GUID (go-sev-guest's
#: abi says its AskGUID is "used for the ASVK as well", and its AsvkGUID is an all-zero placeholder, "may not be
#: defined"; virtee/sev builds the VLEK's chain from the ASK entry).
CERT_TABLE_GUIDS: Mapping[str, uuid.UUID] = MappingProxyType({
    "ark": uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"),
    "ask": uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    "vcek": uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"),
    "vlek": uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
})
_NAMES_BY_GUID = {guid.bytes: name for name, guid in CERT_TABLE_GUIDS.items()}
_GUID_SIZE = 16
#: An entry: GUID, u32 offset, u32 length, little-endian (GHCB spec, "struct cert_table").
_ENTRY = struct.Struct("<16sII")
CERT_TABLE_ENTRY_SIZE = _ENTRY.size
#: The kernel's bound on configfs-tsm's auxblob (TSM_OUTBLOB_MAX, 32 KiB; the sev-guest driver's own certificate
#: buffer, SEV_FW_BLOB_MAX_SIZE, is 16 KiB). AMD's three certificates take about 4.6 KiB.
MAX_CERT_TABLE_SIZE = 32 * 1024
#: The GHCB spec defines four GUIDs; hosts add a few of their own (a CRL, a cloud's endorsement). A table with
#: more entries than this is not a host's.
MAX_CERT_TABLE_ENTRIES = 32


def parse_cert_table(data: bytes) -> dict[str, bytes]:
    """The certificates in a hypervisor's certificate table, by name ("ark", "ask", "vcek", "vlek").

    Empty input (no table: the host supplied no certificates) gives an empty dict. Entries with other GUIDs are
    bounds-checked like the rest and then left out. AttestationError for a table that is too large, has too many
    entries or no terminator, an entry whose data is empty, lies in the header or past the end, overlaps another's,
    or repeats a GUID.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"a certificate table is bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        return {}
    if len(data) > MAX_CERT_TABLE_SIZE:
        raise AttestationError(f"the certificate table is {len(data)} bytes, over the limit of {MAX_CERT_TABLE_SIZE}")
    entries: list[tuple[bytes, int, int]] = []
    position = 0
    while True:
        if position + CERT_TABLE_ENTRY_SIZE > len(data):
            raise AttestationError(f"the certificate table ({len(data)} bytes) ends before its all-zero terminator "
                                   f"(entry {len(entries)} at {position})")
        guid, offset, length = _ENTRY.unpack_from(data, position)
        position += CERT_TABLE_ENTRY_SIZE
        if guid == bytes(_GUID_SIZE):
            if offset or length:
                raise AttestationError(f"certificate table entry {len(entries)} has a zero GUID but offset {offset} "
                                       f"and length {length} (a terminator is all zero)")
            break
        if len(entries) == MAX_CERT_TABLE_ENTRIES:
            raise AttestationError(f"the certificate table has more than {MAX_CERT_TABLE_ENTRIES} entries")
        entries.append((guid, offset, length))
    header_end = position
    certificates: dict[str, bytes] = {}
    seen: set[bytes] = set()
    spans = []
    for index, (guid, offset, length) in enumerate(entries):
        label = _NAMES_BY_GUID.get(guid, str(uuid.UUID(bytes=guid)))
        if guid in seen:
            raise AttestationError(f"the certificate table has two entries for {label}")
        seen.add(guid)
        if length == 0:
            raise AttestationError(f"certificate table entry {index} ({label}) is empty")
        if offset < header_end or offset + length > len(data):
            raise AttestationError(
                f"certificate table entry {index} ({label}) spans {offset}..{offset + length}, outside the data "
                f"area {header_end}..{len(data)}"
            )
        spans.append((offset, offset + length, label))
        name = _NAMES_BY_GUID.get(guid)
        if name is not None:
            certificates[name] = data[offset:offset + length]
    spans.sort()
    for (_, first_end, first), (second_start, _, second) in itertools.pairwise(spans):
        if second_start < first_end:
            raise AttestationError(f"the certificate table's entries for {first} and {second} overlap")
    return certificates


def build_cert_table(entries: Mapping[str, bytes]) -> bytes:
    """A certificate table holding `entries` (name -> DER, names as `parse_cert_table` gives them), in their order.

    For the host side (a hypervisor or proxy that supplies the table) and tests. InvalidArgumentError for an
    unknown name, an empty certificate or a table over `MAX_CERT_TABLE_SIZE`.
    """
    for name, der in entries.items():
        if name not in CERT_TABLE_GUIDS:
            raise InvalidArgumentError(f"unknown certificate table name {name!r} "
                                       f"(known: {', '.join(CERT_TABLE_GUIDS)})")
        if not isinstance(der, bytes) or not der:
            raise InvalidArgumentError(f"the {name} certificate must be non-empty bytes")
    offset = CERT_TABLE_ENTRY_SIZE * (len(entries) + 1)
    header = bytearray()
    body = bytearray()
    for name, der in entries.items():
        header += _ENTRY.pack(CERT_TABLE_GUIDS[name].bytes, offset + len(body), len(der))
        body += der
    header += bytes(CERT_TABLE_ENTRY_SIZE)
    table = bytes(header + body)
    if len(table) > MAX_CERT_TABLE_SIZE:
        raise InvalidArgumentError(f"the certificate table would be {len(table)} bytes, over {MAX_CERT_TABLE_SIZE}")
    return table


def cert_table_endorsements(data: bytes, *, signing_key: str | None = None) -> Endorsements:
    """The endorsements in a certificate table, as `SnpQuoteVerifier` takes them: the leaf first, then the ASK
    entry (the ASK, or for a VLEK its ASVK), then the ARK, each only if all before it are there.

    The leaf is the VCEK or the VLEK as `signing_key` (the report's KEY_INFO SIGNING_KEY, "vcek" or "vlek") asks;
    with None, the VCEK or, failing that, the VLEK. AttestationError if the table is malformed or lacks the leaf.
    """
    table = parse_cert_table(data)
    if signing_key is None:
        leaf = table.get("vcek", table.get("vlek"))
    else:
        leaf = table.get(_check_signing_key(signing_key))
    if leaf is None:
        wanted = "VCEK or VLEK" if signing_key is None else signing_key.upper()
        raise AttestationError(f"the certificate table has no {wanted} (it has: {', '.join(table) or 'nothing'})")
    certificates = [leaf]
    if "ask" in table:
        certificates.append(table["ask"])
        if "ark" in table:
            certificates.append(table["ark"])
    return Endorsements(certificates=tuple(certificates))
