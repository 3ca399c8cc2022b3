"""A TEST DOUBLE of AMD's SEV-SNP key hierarchy: an ARK, an ASK and a VCEK made at test time, and reports they sign;
or an ARK, an ASVK and a VLEK, and VLEK-signed reports (`SnpTestChain.generate_vlek`).

Nothing here is AMD's and nothing here ran on hardware. The chain has the shape of AMD's (ARK -> ASK -> VCEK,
RSA-PSS/SHA-384 signatures, a P-384 VCEK carrying AMD's KDS extensions in the encoding of a genuine VCEK: SPLs as
DER INTEGERs, the product name as an IA5String, the hwID as raw bytes), and `make_report` lays reports out as the
SEV-SNP ABI's ATTESTATION_REPORT table does, with the offsets written out here independently of
`asylo.identity.snp.report`, so that a test of the parser against these reports is not the parser agreeing with
itself. The genuine vectors in tests/vectors/sev-snp are what tie both to real hardware.

The VLEK chain has the shape AMD's VLEK certificate definition gives it, as go-sev-guest reads and fakes it: ARK ->
ASVK ("SEV-VLEK-<product>") -> VLEK ("SEV-VLEK"), the VLEK carrying the same SPL extensions as a VCEK, a product
name without the stepping ("Milan"), no hwID and a CSP id (1.3.6.1.4.1.3704.1.5, an IA5String); its reports have
KEY_INFO SIGNING_KEY 1. No genuine VLEK certificate or VLEK-signed report is among the vectors (AMD's ASVK and ARK
certificates are, bundled), so this double is all that exercises the VLEK path, and its encoding of the CSP id is
go-sev-guest's reading of AMD's definition, not a genuine certificate's.

The RSA keys are 2048 bits (AMD's are 4096) to keep generation fast; nothing in the verifier depends on the size.
A verifier trusts this chain only when given `pinned_roots`, whose name says it is a test double.

`save` and `load` write and read the keys and certificates as PEM, so that another process (a FUSE filesystem
posing as configfs-tsm) can sign reports with the same chain the test verifies against.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from asylo.identity.snp import SnpTcb, build_cert_table

#: Inside every certificate's validity window below: the time tests verify test-chain reports at.
VALID_AT = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOT_AFTER = datetime.datetime(2031, 1, 1, tzinfo=datetime.UTC)
RSA_BITS = 2048
#: Policy with SMT allowed and the must-be-one bit 17 set: a non-debug guest.
DEFAULT_POLICY = 0x30000
DEBUG_POLICY = DEFAULT_POLICY | 1 << 19
DEFAULT_TCB = SnpTcb(bootloader=4, tee=0, snp=22, microcode=213)
DEFAULT_TURIN_TCB = SnpTcb(bootloader=1, tee=1, snp=3, microcode=72, fmc=1)
#: CPUID family/model/stepping written into v3+ reports, per product line.
CPUID = {"Milan": (0x19, 0x01, 0x01), "Genoa": (0x19, 0x11, 0x01), "Turin": (0x1A, 0x02, 0x00)}

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_AMD_OID = "1.3.6.1.4.1.3704.1"
_SIGNED_END = 0x2A0
_REPORT_SIZE = 0x4A0


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyasylo test double (not AMD)"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def der_spl(value: int) -> bytes:
    """An SPL as AMD's KDS encodes it in a VCEK: a DER INTEGER."""
    content = bytes([value]) if value < 0x80 else bytes([0, value])
    return bytes([0x02, len(content)]) + content


def der_ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode("ascii")


def vcek_extensions(product: str, tcb: SnpTcb, hwid: bytes) -> list[x509.UnrecognizedExtension]:
    """AMD's VCEK extensions, in the order and encoding a genuine VCEK has them."""
    return _amd_extensions(f"{product}-B0", tcb, ("4", hwid))


#: The CSP id the double's VLEKs carry unless told otherwise.
DEFAULT_CSP_ID = "pyasylo test cloud (not a CSP)"


def vlek_extensions(product: str, tcb: SnpTcb, csp_id: str) -> list[x509.UnrecognizedExtension]:
    """AMD's VLEK extensions: a VCEK's TCB extensions, the product name without stepping, and the CSP id (an
    IA5String) where a VCEK has its hwID."""
    return _amd_extensions(product, tcb, ("5", der_ia5(csp_id)))


def _amd_extensions(product_name: str, tcb: SnpTcb, last: tuple[str, bytes]) -> list[x509.UnrecognizedExtension]:
    values: list[tuple[str, bytes]] = [
        ("1", der_spl(0)),
        ("2", der_ia5(product_name)),
        ("3.1", der_spl(tcb.bootloader)),
        ("3.2", der_spl(tcb.tee)),
        ("3.4", der_spl(0)),
        ("3.5", der_spl(0)),
        ("3.6", der_spl(0)),
        ("3.7", der_spl(0)),
        ("3.3", der_spl(tcb.snp)),
        ("3.8", der_spl(tcb.microcode)),
    ]
    if tcb.fmc is not None:
        values.append(("3.9", der_spl(tcb.fmc)))
    values.append(last)
    return [x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_AMD_OID}.{suffix}"), value)
            for suffix, value in values]


def tcb_u64(tcb: SnpTcb) -> int:
    """TCB_VERSION, laid out here from the ABI's TCB_VERSION table (not with SnpTcb.to_u64)."""
    if tcb.fmc is not None:  # Turin: FMC, BOOT_LOADER, TEE, SNP, 3 reserved, MICROCODE
        raw = bytes([tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, 0, 0, 0, tcb.microcode])
    else:  # Milan, Genoa: BOOT_LOADER, TEE, 4 reserved, SNP, MICROCODE
        raw = bytes([tcb.bootloader, tcb.tee, 0, 0, 0, 0, tcb.snp, tcb.microcode])
    return int.from_bytes(raw, "little")


@dataclass(frozen=True)
class SnpTestChain:
    """A test-made ARK, ASK and VCEK for one product line, and the chip id and TCB the VCEK certifies.

    With `signing_key` "vlek" it is a VLEK chain instead: `ask`/`ask_key` are the ASVK and `vcek`/`vcek_key` the
    VLEK (also reachable as `asvk` and `vlek`), the VLEK certifies `csp_id` and no chip, and reports are signed with
    KEY_INFO SIGNING_KEY 1. `chip_id` is then only what the reports carry.
    """

    product: str
    chip_id: bytes
    tcb: SnpTcb
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    signing_key: str = "vcek"
    csp_id: str | None = None

    @classmethod
    def generate(cls, *, product: str = "Milan", chip_id: bytes | None = None, tcb: SnpTcb | None = None,
                 not_before: datetime.datetime = NOT_BEFORE, not_after: datetime.datetime = NOT_AFTER,
                 vcek_hwid: bytes | None = None, signing_key: str = "vcek", csp_id: str | None = None,
                 intermediate_name: x509.Name | None = None) -> SnpTestChain:
        """A fresh chain. `chip_id` (64 bytes; Turin: 8 bytes then zeros) defaults to random; `vcek_hwid` (what the
        VCEK's hwID extension says) defaults to the chip id's meaningful bytes. `signing_key` "vlek" makes a VLEK
        chain whose VLEK certifies `csp_id` (default `DEFAULT_CSP_ID`). `intermediate_name` replaces the ASK's
        (or ASVK's) subject, for tests of how the verifier tells the intermediates apart."""
        if signing_key not in ("vcek", "vlek"):
            raise ValueError(f"signing_key is 'vcek' or 'vlek', got {signing_key!r}")
        vlek = signing_key == "vlek"
        turin = product == "Turin"
        if chip_id is None:
            chip_id = secrets.token_bytes(8) + bytes(56) if turin else secrets.token_bytes(64)
        if tcb is None:
            tcb = DEFAULT_TURIN_TCB if turin else DEFAULT_TCB
        if vcek_hwid is None:
            vcek_hwid = chip_id[:8] if turin else chip_id
        if vlek and csp_id is None:
            csp_id = DEFAULT_CSP_ID
        if not vlek and csp_id is not None:
            raise ValueError("a VCEK chain has no CSP id")
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        ark_name = _name(f"ARK-{product}")
        if intermediate_name is not None:
            ask_name = intermediate_name
        else:
            ask_name = _name(f"SEV-VLEK-{product}" if vlek else f"SEV-{product}")
        ark = (x509.CertificateBuilder().subject_name(ark_name).issuer_name(ark_name)
               .public_key(ark_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS))
        ask = (x509.CertificateBuilder().subject_name(ask_name).issuer_name(ark_name)
               .public_key(ask_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS))
        builder = (x509.CertificateBuilder().subject_name(_name("SEV-VLEK" if vlek else "SEV-VCEK"))
                   .issuer_name(ask_name).public_key(vcek_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after))
        extensions = vlek_extensions(product, tcb, csp_id) if csp_id is not None else vcek_extensions(
            product, tcb, vcek_hwid)
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        vcek = builder.sign(ask_key, hashes.SHA384(), rsa_padding=_PSS)
        return cls(product, chip_id, tcb, ark_key, ask_key, vcek_key, ark, ask, vcek, signing_key, csp_id)

    @classmethod
    def generate_vlek(cls, *, product: str = "Milan", csp_id: str = DEFAULT_CSP_ID, chip_id: bytes | None = None,
                      tcb: SnpTcb | None = None, intermediate_name: x509.Name | None = None) -> SnpTestChain:
        """A fresh VLEK chain: ARK -> ASVK -> VLEK, the VLEK certifying `tcb` for the cloud provider `csp_id`."""
        return cls.generate(product=product, chip_id=chip_id, tcb=tcb, signing_key="vlek", csp_id=csp_id,
                            intermediate_name=intermediate_name)

    @property
    def asvk(self) -> x509.Certificate:
        """A VLEK chain's ASVK (the certificate in `ask`)."""
        return self.ask

    @property
    def vlek(self) -> x509.Certificate:
        """A VLEK chain's VLEK (the certificate in `vcek`)."""
        return self.vcek

    def with_vcek_extensions(self, extensions: list[x509.UnrecognizedExtension]) -> SnpTestChain:
        """This chain with its VCEK (or VLEK) reissued (same key, same ASK or ASVK) carrying exactly `extensions`:
        for tests of how the verifier reads malformed or mismatched AMD extensions."""
        builder = (x509.CertificateBuilder().subject_name(self.vcek.subject).issuer_name(self.vcek.issuer)
                   .public_key(self.vcek_key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(self.vcek.not_valid_before_utc).not_valid_after(self.vcek.not_valid_after_utc))
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return dataclasses.replace(self, vcek=builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=_PSS))

    @property
    def root_name(self) -> str:
        return f"ARK-{self.product} (test double)"

    @property
    def pinned_roots(self) -> dict[bytes, str]:
        """What to give `SnpQuoteVerifier(pinned_roots=...)` to trust this chain's ARK."""
        return {hashlib.sha256(self.ark.public_bytes(serialization.Encoding.DER)).digest(): self.root_name}

    def certificates(self) -> tuple[bytes, bytes, bytes]:
        """The VCEK, ASK and ARK (or VLEK, ASVK and ARK) as DER, in the order `Endorsements.certificates` takes
        them."""
        der = serialization.Encoding.DER
        return self.vcek.public_bytes(der), self.ask.public_bytes(der), self.ark.public_bytes(der)

    def cert_table(self) -> bytes:
        """The certificate table a hypervisor would supply (configfs-tsm's auxblob). A VLEK goes under the VLEK's
        GUID and its ASVK under the ASK's (the GHCB specification defines no ASVK GUID)."""
        leaf, ask, ark = self.certificates()
        return build_cert_table({self.signing_key: leaf, "ask": ask, "ark": ark})

    def make_report(self, report_data: bytes, *, measurement: bytes, policy: int = DEFAULT_POLICY, vmpl: int = 0,
                    reported_tcb: SnpTcb | None = None, chip_id: bytes | None = None, version: int = 2,
                    guest_svn: int = 0, signature_algo: int = 1, key_info: int | None = None,
                    family_id: bytes = bytes(16),
                    image_id: bytes = bytes(16), host_data: bytes = bytes(32), id_key_digest: bytes = bytes(48),
                    author_key_digest: bytes = bytes(48), platform_info: int = 1,
                    cpuid: tuple[int, int, int] | None = None) -> bytes:
        """A 1184-byte ATTESTATION_REPORT in the ABI's layout, signed by this chain's VCEK (or VLEK).

        TCB fields default to the chain's TCB, the chip id to the chain's; `cpuid` (family, model, stepping) is
        written for version 3 and later, defaulting to the product line's. `key_info` defaults to SIGNING_KEY 0
        (the VCEK) for a VCEK chain and 1 (the VLEK, bits 4:2) for a VLEK chain.
        """
        if len(report_data) != 64 or len(measurement) != 48:
            raise ValueError("report_data is 64 bytes and measurement 48")
        tcb = tcb_u64(reported_tcb if reported_tcb is not None else self.tcb)
        chip = self.chip_id if chip_id is None else chip_id
        if key_info is None:
            key_info = (1 if self.signing_key == "vlek" else 0) << 2
        report = bytearray(_REPORT_SIZE)
        struct.pack_into("<IIQ16s16sIIQQI", report, 0x000, version, guest_svn, policy, family_id, image_id, vmpl,
                         signature_algo, tcb, platform_info, key_info)
        struct.pack_into("<64s48s32s48s48s32s32sQ", report, 0x050, report_data, measurement, host_data,
                         id_key_digest, author_key_digest, secrets.token_bytes(32), b"\xff" * 32, tcb)
        if version >= 3:
            report[0x188:0x18B] = bytes(cpuid if cpuid is not None else CPUID[self.product])
        struct.pack_into("<64sQBBBxBBBxQ", report, 0x1A0, chip, tcb, 22, 55, 1, 22, 55, 1, tcb)
        return self.sign_report(bytes(report))

    def sign_report(self, report: bytes) -> bytes:
        """`report` with its bytes 0h..29Fh signed anew by the VCEK or VLEK (R and S little-endian, 72 bytes
        each)."""
        der = self.vcek_key.sign(report[:_SIGNED_END], ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(72, "little") + s.to_bytes(72, "little")
        return report[:_SIGNED_END] + signature + report[_SIGNED_END + len(signature):]

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the keys (PKCS#8 PEM, unencrypted: a test double's), certificates (PEM) and chain facts."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        for name, key in (("ark", self.ark_key), ("ask", self.ask_key), ("vcek", self.vcek_key)):
            path = folder / f"{name}-key.pem"
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
        for name, certificate in (("ark", self.ark), ("ask", self.ask), ("vcek", self.vcek)):
            (folder / f"{name}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        facts = {"product": self.product, "chip_id": self.chip_id.hex(), "tcb": self.tcb.to_json(),
                 "signing_key": self.signing_key, "csp_id": self.csp_id}
        (folder / "chain.json").write_text(json.dumps(facts, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SnpTestChain:
        """The chain `save` wrote to `directory`."""
        folder = Path(directory)
        keys = {}
        for name in ("ark", "ask", "vcek"):
            keys[name] = serialization.load_pem_private_key((folder / f"{name}-key.pem").read_bytes(), password=None)
        certificates = {name: x509.load_pem_x509_certificate((folder / f"{name}.pem").read_bytes())
                        for name in ("ark", "ask", "vcek")}
        facts = json.loads((folder / "chain.json").read_text())
        ark_key, ask_key, vcek_key = keys["ark"], keys["ask"], keys["vcek"]
        if not (isinstance(ark_key, rsa.RSAPrivateKey) and isinstance(ask_key, rsa.RSAPrivateKey)
                and isinstance(vcek_key, ec.EllipticCurvePrivateKey)):
            raise ValueError(f"{folder} does not hold an SNP test chain's keys")
        return cls(product=facts["product"], chip_id=bytes.fromhex(facts["chip_id"]), tcb=SnpTcb(**facts["tcb"]),
                   ark_key=ark_key, ask_key=ask_key, vcek_key=vcek_key, ark=certificates["ark"],
                   ask=certificates["ask"], vcek=certificates["vcek"],
                   signing_key=facts.get("signing_key", "vcek"), csp_id=facts.get("csp_id"))
