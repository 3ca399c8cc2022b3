"""The TPM platform's proxy side against a real TPM 2.0 in software (swtpm; see tests/swtpm_helpers.py): quotes by the
AK, the AK shared across processes, enrollment by credential activation, and quotes following the PCRs.

The structures are parsed here by a few lines of the test's own (just what the checks need), so these tests do not
lean on the host-side parser they will later be checked against. swtpm is software: none of this ran on a hardware TPM.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from asylo.identity.tpm import attester as attester_module
from asylo.identity.tpm.attester import (
    DEFAULT_AK_HANDLE,
    MAX_QUOTE_ATTEMPTS,
    PcrSelection,
    TpmAttester,
    ak_fingerprint,
)
from asylo.identity.tpm.enrollment import enroll, trim_der
from asylo.proto import identity_pb2
from asylo.status import AbortedError, AttestationError, FailedPreconditionError, InvalidArgumentError
from tests.swtpm_helpers import Swtpm, extend_pcr, extend_pcr_in, running_swtpm, skip_unless_tss

SHA256 = 0x000B
ECC_AK_HANDLE = DEFAULT_AK_HANDLE + 1


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swtpm]:
    """One swtpm for the module: manufacturing one (EK certificates and all) takes about a second."""
    with running_swtpm(tmp_path_factory.mktemp("swtpm")) as running:
        yield running


@pytest.fixture(scope="module")
def attester(tpm: Swtpm) -> TpmAttester:
    """The default attester: it creates the RSA AK at the default handle on this fresh TPM."""
    return TpmAttester(tpm.tcti)


# -- just enough TPM 2.0 marshalling to check a quote (TPM 2.0 Part 2; big-endian throughout) -----------------------

class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.offset = data, 0

    def take(self, size: int) -> bytes:
        assert self.offset + size <= len(self.data), "truncated structure"
        part = self.data[self.offset:self.offset + size]
        self.offset += size
        return part

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def tpm2b(self) -> bytes:
        return self.take(self.u16())

    def done(self) -> bool:
        return self.offset == len(self.data)


@dataclass
class Attest:
    magic: int
    type: int
    extra_data: bytes
    selection: list[tuple[int, list[int]]]
    pcr_digest: bytes


def parse_attest(data: bytes) -> Attest:
    reader = Reader(data)
    magic, kind = reader.u32(), reader.u16()
    reader.tpm2b()  # qualifiedSigner
    extra = reader.tpm2b()
    reader.take(17 + 8)  # clockInfo, firmwareVersion
    selection = []
    for _ in range(reader.u32()):
        alg, size = reader.u16(), reader.u8()
        bitmap = reader.take(size)
        selection.append((alg, [i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1]))
    digest = reader.tpm2b()
    assert reader.done()
    return Attest(magic, kind, extra, selection, digest)


def ak_key(public: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    reader = Reader(public)
    kind, _name_alg, _attributes = reader.u16(), reader.u16(), reader.u32()
    reader.tpm2b()  # authPolicy
    if reader.u16() != 0x0010:  # symmetric: an AK has TPM_ALG_NULL
        raise AssertionError("an AK with a symmetric algorithm")
    if reader.u16() != 0x0010:  # scheme, and its hash
        reader.u16()
    if kind == 0x0001:  # TPM_ALG_RSA
        reader.u16()  # keyBits
        exponent = reader.u32() or 65537
        return rsa.RSAPublicNumbers(exponent, int.from_bytes(reader.tpm2b(), "big")).public_key()
    assert kind == 0x0023 and reader.u16() == 0x0003  # TPM_ALG_ECC, NIST P-256
    assert reader.u16() == 0x0010  # kdf: NULL
    x, y = reader.tpm2b(), reader.tpm2b()
    return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                         ec.SECP256R1()).public_key()


def verify_quote_signature(quote: identity_pb2.TpmQuote) -> None:
    """Raises InvalidSignature unless `quote.signature` (a TPMT_SIGNATURE) signs `quote.attest` under the AK."""
    key = ak_key(quote.ak_public)
    reader = Reader(quote.signature)
    algorithm, hash_alg = reader.u16(), reader.u16()
    assert hash_alg == SHA256
    if algorithm == 0x0014:  # TPM_ALG_RSASSA
        assert isinstance(key, rsa.RSAPublicKey)
        key.verify(reader.tpm2b(), quote.attest, padding.PKCS1v15(), hashes.SHA256())
    else:
        assert algorithm == 0x0018 and isinstance(key, ec.EllipticCurvePublicKey)  # TPM_ALG_ECDSA
        r, s = int.from_bytes(reader.tpm2b(), "big"), int.from_bytes(reader.tpm2b(), "big")
        key.verify(encode_dss_signature(r, s), quote.attest, ec.ECDSA(hashes.SHA256()))
    assert reader.done()


def check_quote(raw: bytes, report_data: bytes, pcrs: str = "sha256:0-7") -> identity_pb2.TpmQuote:
    """The quote in `raw`, once checked as the host will: bound to the report data, signed by its AK, its PCR values
    those the TPM signed a digest of."""
    quote = identity_pb2.TpmQuote.FromString(raw)
    assert quote.SerializeToString(deterministic=True) == raw
    attest = parse_attest(quote.attest)
    assert attest.magic == 0xFF544347 and attest.type == 0x8018  # TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE
    assert attest.extra_data == hashlib.sha256(report_data).digest()
    selection = PcrSelection.parse(pcrs)
    assert [(alg, index) for alg, indices in attest.selection for index in indices] == selection.pairs()
    assert [(value.hash_alg, value.index) for value in quote.pcrs] == selection.pairs()
    assert all(len(value.value) == 32 for value in quote.pcrs)
    assert hashlib.sha256(b"".join(value.value for value in quote.pcrs)).digest() == attest.pcr_digest
    verify_quote_signature(quote)
    return quote


# -- quotes ---------------------------------------------------------------------------------------------------------

def test_quote_carries_the_report_data_digest_and_verifies_under_the_ak(attester: TpmAttester) -> None:
    report_data = os.urandom(64)
    raw, endorsements = attester.attest(report_data)
    quote = check_quote(raw, report_data)
    assert endorsements.certificates == () and endorsements.collateral == b""
    assert quote.ak_public == attester.ak_public
    assert ak_fingerprint(quote.ak_public) == attester.fingerprint == hashlib.sha256(quote.ak_public).hexdigest()
    assert attester.kind == "tpm" and "0x81010002" in attester.describe()
    # The check above is a real one: one flipped bit in the body or in the signature, and it fails.
    tampered = identity_pb2.TpmQuote.FromString(raw)
    tampered.attest = tampered.attest[:-1] + bytes([tampered.attest[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        verify_quote_signature(tampered)
    tampered = identity_pb2.TpmQuote.FromString(raw)
    tampered.signature = tampered.signature[:-1] + bytes([tampered.signature[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        verify_quote_signature(tampered)
    # Each quote is fresh: another report data, another extraData.
    other = os.urandom(64)
    assert parse_attest(check_quote(attester.attest(other)[0], other).attest).extra_data != \
        parse_attest(quote.attest).extra_data


def test_report_data_must_be_64_bytes(attester: TpmAttester) -> None:
    for bad in (b"", b"x" * 63, b"x" * 65):
        with pytest.raises(InvalidArgumentError, match="64 bytes"):
            attester.attest(bad)


def test_an_ecc_ak_and_another_pcr_selection(tpm: Swtpm) -> None:
    ecc = TpmAttester(tpm.tcti, ak_handle=ECC_AK_HANDLE, ak_algorithm="ecc", pcrs="sha256:0,2,4-7,10-23")
    report_data = os.urandom(64)
    quote = check_quote(ecc.attest(report_data)[0], report_data, "sha256:0,2,4-7,10-23")
    assert isinstance(ak_key(quote.ak_public), ec.EllipticCurvePublicKey)
    assert len(quote.pcrs) == 20  # more than one TPM2_PCR_Read returns (8): read in rounds


def test_the_ak_survives_into_another_process_and_instance(tpm: Swtpm, attester: TpmAttester) -> None:
    """What a proxy restart looks like: a new process finds the AK at its handle, and quotes with it."""
    script = textwrap.dedent(f"""
        from asylo.identity.tpm.attester import TpmAttester
        attester = TpmAttester({tpm.tcti!r}, create_ak=False)
        print(attester.fingerprint)
        print(attester.attest(bytes(range(64)))[0].hex())
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    fingerprint, raw = result.stdout.split()
    assert fingerprint == attester.fingerprint
    assert check_quote(bytes.fromhex(raw), bytes(range(64))).ak_public == attester.ak_public
    again = TpmAttester(tpm.tcti)
    assert again.ak_public == attester.ak_public
    check_quote(again.attest(b"\1" * 64)[0], b"\1" * 64)


def test_refusals_at_the_ak_handle(tpm: Swtpm, attester: TpmAttester) -> None:
    with pytest.raises(FailedPreconditionError, match=r"no AK at persistent handle 0x81010010.*enroll"):
        TpmAttester(tpm.tcti, ak_handle=0x81010010, create_ak=False)
    with pytest.raises(FailedPreconditionError, match="is an RSA AK, but an ECC AK was asked for"):
        TpmAttester(tpm.tcti, ak_algorithm="ecc")
    with pytest.raises(InvalidArgumentError, match="not a persistent handle"):
        TpmAttester(tpm.tcti, ak_handle=0x81800000)
    with pytest.raises(FailedPreconditionError, match="sha1:0"):  # swtpm_setup activated the SHA-256 bank only
        TpmAttester(tpm.tcti, pcrs="sha1:0")


def test_an_unreachable_tpm_is_a_failed_precondition(tmp_path: Path) -> None:
    skip_unless_tss()
    with pytest.raises(FailedPreconditionError, match="cannot open the TPM through TCTI"):
        TpmAttester(f"device:{tmp_path / 'no-tpm'}")


def test_quoted_pcr_values_follow_an_extend(tpm: Swtpm, attester: TpmAttester) -> None:
    before = check_quote(attester.attest(b"\2" * 64)[0], b"\2" * 64)
    digest = extend_pcr(tpm.tcti, 7, b"a measurement the host did not expect")
    after = check_quote(attester.attest(b"\3" * 64)[0], b"\3" * 64)
    old = {value.index: value.value for value in before.pcrs}
    new = {value.index: value.value for value in after.pcrs}
    assert new[7] == hashlib.sha256(old[7] + digest).digest() != old[7]
    assert {index: value for index, value in new.items() if index != 7} == \
        {index: value for index, value in old.items() if index != 7}
    assert parse_attest(after.attest).pcr_digest != parse_attest(before.attest).pcr_digest


def test_a_pcr_extended_between_quote_and_read_is_quoted_again(tpm: Swtpm, attester: TpmAttester,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the attester closes: values read after the quote must hash to the digest it signed, or it quotes
    again; values it never manages to match are not sent at all."""
    real_read = attester_module.read_pcrs
    reads: list[int] = []

    def extend_then_read(esapi: Any, selection: PcrSelection) -> list[tuple[int, int, bytes]]:
        reads.append(1)
        if len(reads) == 1:  # between the first quote and its read, as another process's measurement might
            extend_pcr_in(esapi, 4, b"extended while the proxy was quoting")
        return real_read(esapi, selection)

    monkeypatch.setattr(attester_module, "read_pcrs", extend_then_read)
    check_quote(attester.attest(b"\4" * 64)[0], b"\4" * 64)
    assert len(reads) == 2

    def never_what_was_quoted(esapi: Any, selection: PcrSelection) -> list[tuple[int, int, bytes]]:
        return [(alg, index, b"\xee" * len(value)) for alg, index, value in real_read(esapi, selection)]

    monkeypatch.setattr(attester_module, "read_pcrs", never_what_was_quoted)
    with pytest.raises(AbortedError, match=f"changed between quote and read {MAX_QUOTE_ATTEMPTS} times"):
        attester.attest(b"\5" * 64)


# -- enrollment -----------------------------------------------------------------------------------------------------

def test_enrollment_with_the_manufacturer_ca(tpm: Swtpm, attester: TpmAttester, tmp_path: Path) -> None:
    enrollment = enroll(tcti=tpm.tcti, manufacturer_ca=tpm.ca_certificate,
                        intermediates=[tpm.intermediate_certificate])
    assert enrollment.ak_fingerprint == attester.fingerprint and enrollment.ak_public == attester.ak_public
    assert enrollment.manufacturer_ca == "CN=swtpm-localca-rootca" and enrollment.ek_type == "rsa"
    assert attester.fingerprint in enrollment.describe()
    certificate = x509.load_der_x509_certificate(enrollment.ek_certificate)
    assert isinstance(certificate.public_key(), rsa.RSAPublicKey)
    # The same AK, proved against the other EK (ECC P-384: KDFe and an ephemeral ECDH key on the operator's side),
    # with the root and its intermediate in one bundle file.
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(tpm.ca_certificate.read_bytes() + tpm.intermediate_certificate.read_bytes())
    by_ecc = enroll(tcti=tpm.tcti, manufacturer_ca=bundle, ek="ecc-p384")
    assert by_ecc.ak_fingerprint == attester.fingerprint
    assert isinstance(x509.load_der_x509_certificate(by_ecc.ek_certificate).public_key(), ec.EllipticCurvePublicKey)
    # The ECC AK at its own handle enrolls too.
    ecc_ak = TpmAttester(tpm.tcti, ak_handle=ECC_AK_HANDLE, ak_algorithm="ecc")
    assert enroll(tcti=tpm.tcti, manufacturer_ca=bundle, ak_handle=ECC_AK_HANDLE).ak_fingerprint == \
        ecc_ak.fingerprint


def _make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return key, certificate


def _issue_ca(name: str, issuer_key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def test_enrollment_refuses_an_ek_certificate_from_another_ca(tpm: Swtpm, tmp_path: Path) -> None:
    _, other = _make_ca("Another TPM Manufacturer Root CA")
    other_file = tmp_path / "other-ca.pem"
    other_file.write_bytes(other.public_bytes(Encoding.PEM))
    with pytest.raises(AttestationError, match=r"does not chain to the manufacturer CA.*Another TPM Manufacturer"):
        enroll(tcti=tpm.tcti, manufacturer_ca=other_file)
    # A look-alike: a root and an intermediate with swtpm's CA names but other keys. Names match; signatures do not.
    fake_key, fake_root = _make_ca("swtpm-localca-rootca")
    fake_intermediate = _issue_ca("swtpm-localca", fake_key, fake_root)
    lookalike = tmp_path / "lookalike.pem"
    lookalike.write_bytes(fake_root.public_bytes(Encoding.PEM) + fake_intermediate.public_bytes(Encoding.PEM))
    with pytest.raises(AttestationError, match="does not chain to the manufacturer CA"):
        enroll(tcti=tpm.tcti, manufacturer_ca=lookalike)
    # swtpm's real intermediate, but someone else's root: the chain stops short of the CA the operator named.
    with pytest.raises(AttestationError, match="does not chain"):
        enroll(tcti=tpm.tcti, manufacturer_ca=other_file, intermediates=[tpm.intermediate_certificate])
    # The intermediate alone is not a root to trust.
    with pytest.raises(FailedPreconditionError, match="no self-signed root"):
        enroll(tcti=tpm.tcti, manufacturer_ca=tpm.intermediate_certificate)
    # Without the intermediate, the chain cannot be built: refused, saying an intermediate may be missing.
    with pytest.raises(AttestationError, match="intermediate certificate is missing"):
        enroll(tcti=tpm.tcti, manufacturer_ca=tpm.ca_certificate)


def test_enrollment_of_an_ek_type_this_tpm_has_no_certificate_for(tpm: Swtpm) -> None:
    with pytest.raises(FailedPreconditionError, match="no EK certificate at NV 0x01c0000a"):
        enroll(tcti=tpm.tcti, manufacturer_ca=tpm.ca_certificate, ek="ecc")


# -- pure parts (no TPM) --------------------------------------------------------------------------------------------

def test_pcr_selection_notation() -> None:
    assert str(PcrSelection.parse("sha256:0-7")) == "sha256:0-7"
    assert PcrSelection.parse("sha256:7,0-3+sha1:1").pairs() == [(SHA256, 0), (SHA256, 1), (SHA256, 2),
                                                                  (SHA256, 3), (SHA256, 7), (0x0004, 1)]
    assert str(PcrSelection.parse(" SHA256:0,2,3,4,9 ")) == "sha256:0,2-4,9"
    for bad in ("", "sha256", "sha256:", "md5:0", "sha256:24", "sha256:3-1", "sha256:0+sha256:1", "sha256:0;1",
                "sha256:-1", "sha256:001"):
        with pytest.raises(InvalidArgumentError):
            PcrSelection.parse(bad)


def test_der_padding_is_trimmed_and_nothing_else() -> None:
    _, certificate = _make_ca("padding")
    der = certificate.public_bytes(Encoding.DER)
    assert trim_der(der + bytes(200)) == der
    assert trim_der(der + b"\xff" * 7) == der
    assert trim_der(der + b"\x01") == der + b"\x01"  # not padding: left for the parser to refuse
    assert trim_der(b"\x30") == b"\x30"


def test_without_tpm2_pytss_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tpm2_pytss", None)  # an import of it now raises ImportError
    with pytest.raises(FailedPreconditionError, match=r"pip install 'pyasylo\[tpm\]'.*libtss2-dev"):
        TpmAttester("swtpm:host=127.0.0.1,port=1")
