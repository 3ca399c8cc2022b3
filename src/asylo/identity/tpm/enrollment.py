"""Enrolling a machine's TPM: prove its AK lives in a TPM whose EK a manufacturer certified, then print the AK's
fingerprint for hosts to trust (`asylo platform enroll`, run once per machine by its operator).

A quote proves only that *some* restricted signing key signed it; the AK's fingerprint is worth trusting once the
operator knows that key cannot leave a genuine TPM. Credential activation (TPM 2.0 Part 1 §24, "Credential
Protection") shows it: the operator's side encrypts a random secret to the EK, bound to the AK's name (the digest of
its public area, attributes included), and the TPM releases it (TPM2_ActivateCredential) only if it holds both the
EK's private key and an object with exactly that name. So a recovered secret proves the AK, with fixedTPM and
restricted among the attributes its name commits to, is in the TPM whose EK certificate chains to the manufacturer
CA the operator named.

The two sides, and who trusts what:

    operator's side (software only, `cryptography`)    the TPM (through tpm2-pytss)
    ---------------------------------------------    --------------------------------------------------------
                                                      read the EK certificate from NV (0x01c00002 for RSA,
                                                      0x01c0000a for ECC P-256), recreate the EK, read the AK
    check the certificate chains to the CA file,
    and certifies exactly this EK's public key;
    check the AK's attributes; its name = nameAlg ||
    H(TPMT_PUBLIC), computed here, not asked for
    MakeCredential: a random secret, a seed encrypted
    to the certified key, KDFa keys, the credential
                                                      ActivateCredential(AK, EK) under the EK's policy
    compare the secret (constant time); print the
    fingerprint

The operator's side is written against `cryptography` alone (`make_credential`, `check_ek_certificate`), from the
specification (TPM 2.0 Part 1 §24 and Part 3 TPM2_MakeCredential, KDFa and KDFe in Part 1 §11.4.10), rather than
through the TSS, so it trusts no code of the machine being enrolled beyond the TPM's answer; a credential made wrongly
fails activation, so the test against a real TPM checks it.

The CA file holds the manufacturer's root (self-signed) and, optionally, its intermediates; more intermediates may
come from other files. The EK certificate must chain to one of that file's roots. EK certificates name no subject and
carry TCG-specific extensions; only the chain, the validity dates and the CA constraints are checked.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from asylo._files import read_bounded
from asylo.identity.tpm.attester import (
    AK_ALGORITHMS,
    DEFAULT_AK_HANDLE,
    DEFAULT_TCTI,
    MAX_AK_PUBLIC_SIZE,
    Ek,
    ak_fingerprint,
    authorization_problem,
    create_ek,
    ek_authorization,
    ek_type,
    flush,
    load_tss,
    open_ak,
    open_tpm,
    tpm_failure,
)
from asylo.identity.x509chain import MAX_CERTIFICATE_SIZE, MAX_CHAIN_LENGTH, check_chain, load_der_certificate
from asylo.status import AttestationError, FailedPreconditionError, InvalidArgumentError

#: A manufacturer's CA bundle: a few roots and intermediates, each under 2 KiB of PEM.
MAX_CA_FILE_SIZE = 256 * 1024
MAX_CA_FILE_CERTIFICATES = 64
#: The secret activated: 32 bytes, no more than the digest of any EK's name algorithm (Part 3 TPM2_MakeCredential
#: refuses a credential larger than that digest with TPM_RC_SIZE).
CREDENTIAL_SIZE = 32
#: Part 1 §24.4: the label the seed is encrypted (RSA-OAEP) or derived (ECDH, KDFe) with, its NUL included.
IDENTITY_LABEL = b"IDENTITY\0"

#: TPM_ALG_ID of the hashes an EK or AK may name itself with, and the digest `cryptography` computes for each.
_NAME_ALGORITHMS: dict[int, type[hashes.HashAlgorithm]] = {0x000B: hashes.SHA256, 0x000C: hashes.SHA384,
                                                           0x000D: hashes.SHA512}
#: TPM_ECC_CURVE of the NIST curves the EK templates use.
_CURVES: dict[int, type[ec.EllipticCurve]] = {0x0003: ec.SECP256R1, 0x0004: ec.SECP384R1, 0x0005: ec.SECP521R1}
_TPM_ALG_AES = 0x0006
_TPM_ALG_CFB = 0x0043
_RSA_DEFAULT_EXPONENT = 65537  # TPMS_RSA_PARMS.exponent 0 means this (Part 2)


@dataclass(frozen=True)
class Enrollment:
    """What enrolling proved: the AK at `ak_handle` (TPMT_PUBLIC `ak_public`) is in the same TPM as the EK that
    `ek_certificate` (DER) certifies, which chains to `manufacturer_ca` (the root's subject, from `ca_file`)."""

    ak_fingerprint: str
    ak_public: bytes
    ak_handle: int
    ek_type: str
    ek_certificate: bytes
    manufacturer_ca: str
    ca_file: Path

    def describe(self) -> str:
        """What `asylo platform enroll` prints: what was checked, and the fingerprint to trust."""
        return (f"TPM enrolled: the AK at 0x{self.ak_handle:08x} is in the same TPM as the {self.ek_type.upper()} "
                f"EK certified under {self.manufacturer_ca} ({self.ca_file}); credential activation succeeded.\n"
                f"platform fingerprint (trust it with --trust-platform): {self.ak_fingerprint}")


def enroll(*, manufacturer_ca: str | os.PathLike[str], tcti: str = DEFAULT_TCTI,
           intermediates: Sequence[str | os.PathLike[str]] = (), ek: str = "rsa",
           ak_handle: int = DEFAULT_AK_HANDLE, ak_algorithm: str | None = None, create_ak: bool = True,
           at: datetime.datetime | None = None) -> Enrollment:
    """Enroll the TPM on `tcti` (see the module doc): its AK at `ak_handle` (created there first if the handle is
    empty and `create_ak`), its EK of type `ek` ("rsa", "ecc", "ecc-p384") certified by a root in `manufacturer_ca`,
    with `intermediates` for the path. `at`: the time to check certificates at (default now). Refusals are
    AttestationError; a TPM or file that is not there, FailedPreconditionError."""
    kind = ek_type(ek)
    if ak_algorithm is not None and ak_algorithm not in AK_ALGORITHMS:
        raise InvalidArgumentError(f"unknown AK algorithm {ak_algorithm!r} (one of: {', '.join(AK_ALGORITHMS)})")
    ca_path = Path(manufacturer_ca)
    roots, bundled = _split_roots(load_certificates(ca_path, "manufacturer CA"), ca_path)
    pool = bundled + [cert for path in intermediates for cert in load_certificates(Path(path), "intermediate CA")]
    when = at if at is not None else datetime.datetime.now(datetime.UTC)
    tss = load_tss()
    with open_tpm(tcti) as esapi:
        ak = open_ak(esapi, ak_handle, ak_algorithm, create=create_ak, parent=kind)
        try:
            tpm_ek = create_ek(esapi, kind)
            try:
                if tpm_ek.certificate is None:
                    raise FailedPreconditionError(
                        f"TPM: no EK certificate at NV 0x{kind.certificate_index:08x} ({kind.description}): this "
                        f"TPM's manufacturer provisioned none there (some firmware TPMs publish theirs online "
                        f"instead); try another EK type")
                certified_key = ek_public_key(tss, tpm_ek.public)
                certificate, anchor = check_ek_certificate(tpm_ek.certificate, certified_key, roots=roots,
                                                           intermediates=pool, at=when, ca_file=ca_path)
                check_ek_attributes(tss, tpm_ek.public)
                secret = secrets.token_bytes(CREDENTIAL_SIZE)
                name_alg, symmetric_bits = ek_credential_parameters(tss, tpm_ek.public)
                blob, encrypted_seed = make_credential(
                    certificate.public_key(), name_alg=name_alg, symmetric_key_bits=symmetric_bits,
                    credential=secret, object_name=object_name(ak.public))
                recovered = _activate(esapi, tss, ak.esys, tpm_ek, blob, encrypted_seed)
            finally:
                flush(esapi, tpm_ek.handle)
        finally:
            esapi.tr_close(ak.esys)
    if not hmac.compare_digest(recovered, secret):
        raise AttestationError("the TPM activated the credential but returned another secret: it is not the TPM "
                               "that holds the certified EK's private key")
    return Enrollment(ak_fingerprint(ak.public), ak.public, ak_handle, kind.name,
                      certificate.public_bytes(Encoding.DER), anchor, ca_path)


def _activate(esapi: Any, tss: Any, ak: Any, tpm_ek: Ek, blob: bytes, encrypted_seed: bytes) -> bytes:
    """TPM2_ActivateCredential: the AK (admin role, its empty authValue) and the EK (its policy)."""
    try:
        with ek_authorization(esapi, tpm_ek) as ek_session:
            recovered = esapi.activate_credential(
                ak, tpm_ek.handle, tss.TPM2B_ID_OBJECT(credential=blob),
                tss.TPM2B_ENCRYPTED_SECRET(secret=encrypted_seed), session1=tss.ESYS_TR.PASSWORD,
                session2=ek_session)
    except tss.TSS2_Exception as exc:
        if authorization_problem(exc) is not None:
            raise tpm_failure(exc, "TPM2_ActivateCredential") from None
        raise AttestationError(
            f"the TPM refused to activate the credential ({exc}): the AK is not in the TPM that holds the "
            f"certified EK") from None
    data = bytes(recovered)
    if len(data) > CREDENTIAL_SIZE:
        raise AttestationError(f"TPM2_ActivateCredential returned {len(data)} bytes for a {CREDENTIAL_SIZE}-byte "
                               f"credential")
    return data


# -- the operator's side: certificates ------------------------------------------------------------------------------

def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """The certificates in a file the operator named: PEM (one or more) or a single DER certificate."""
    resolved, data = read_bounded(path, MAX_CA_FILE_SIZE, what, FailedPreconditionError)
    try:
        if b"-----BEGIN" in data:
            certificates = x509.load_pem_x509_certificates(data)
        else:
            certificates = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise FailedPreconditionError(f"{resolved}: not a {what} certificate file (PEM or DER): {exc}") from None
    if len(certificates) > MAX_CA_FILE_CERTIFICATES:
        raise FailedPreconditionError(f"{resolved}: {len(certificates)} certificates (at most "
                                      f"{MAX_CA_FILE_CERTIFICATES})")
    return certificates


def _split_roots(certificates: list[x509.Certificate],
                 path: Path) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The file's self-signed roots, and the rest (intermediates bundled with them)."""
    roots = [cert for cert in certificates if _is_self_signed(cert)]
    if not roots:
        raise FailedPreconditionError(
            f"{path}: holds no self-signed root certificate: name the TPM manufacturer's root CA (intermediates may "
            f"be in the same file or given separately)")
    return roots, [cert for cert in certificates if cert not in roots]


def _is_self_signed(certificate: x509.Certificate) -> bool:
    return certificate.issuer == certificate.subject and _issued_by(certificate, certificate)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    if certificate.issuer != issuer.subject:
        return False
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def trim_der(data: bytes) -> bytes:
    """`data` up to the end of its outer DER SEQUENCE: EK certificates in NV are often padded to the index's size
    (with zeros or 0xFF), which a DER parser rightly refuses. Anything but padding after the SEQUENCE is kept, and
    refused by the parser."""
    if len(data) < 2 or data[0] != 0x30:
        return data
    if data[1] < 0x80:
        end = 2 + data[1]
    else:
        count = data[1] & 0x7F
        if not 1 <= count <= 2 or len(data) < 2 + count:  # 2 length octets: up to 64 KiB, beyond any certificate
            return data
        end = 2 + count + int.from_bytes(data[2:2 + count], "big")
    if end < len(data) and set(data[end:]) <= {0x00, 0xFF}:
        return data[:end]
    return data


def check_ek_certificate(certificate_der: bytes, ek_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, *,
                         roots: Sequence[x509.Certificate], intermediates: Sequence[x509.Certificate] = (),
                         at: datetime.datetime, ca_file: Path | None = None) -> tuple[x509.Certificate, str]:
    """The EK certificate, and the subject of the root it chains to, once it is checked to certify `ek_key` (the
    public key of the EK in the TPM) and to chain through `intermediates` to one of `roots`, valid at `at`.
    AttestationError saying what failed otherwise (another CA's certificate, above all)."""
    der = trim_der(certificate_der)
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise AttestationError(f"the EK certificate is {len(der)} bytes (at most {MAX_CERTIFICATE_SIZE})")
    certificate = load_der_certificate(der, "the EK certificate")
    try:
        certified = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AttestationError(f"the EK certificate's public key cannot be read: {exc}") from None
    if certified != ek_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo):
        raise AttestationError("the EK certificate certifies another key than this TPM's EK: it was not issued for "
                               "this TPM")
    chain, names = [certificate], ["EK"]
    where = f" in {ca_file}" if ca_file is not None else ""
    current = certificate
    while True:
        root = next((candidate for candidate in roots if _issued_by(current, candidate)), None)
        if root is not None:
            chain.append(root)
            names.append(f"manufacturer CA {_subject(root)}")
            break
        issuer = next((candidate for candidate in intermediates
                       if candidate not in chain and _issued_by(current, candidate)), None)
        if issuer is None:
            trusted = "; ".join(_subject(root) for root in roots)
            raise AttestationError(
                f"the EK certificate does not chain to the manufacturer CA{where} ({trusted}): "
                f"{'it' if current is certificate else _subject(current)} was issued by "
                f"{current.issuer.rfc4514_string() or '(an empty name)'}, which is another CA, or an intermediate "
                f"certificate is missing")
        if len(chain) + 1 >= MAX_CHAIN_LENGTH:
            raise AttestationError(f"the EK certificate's chain is longer than {MAX_CHAIN_LENGTH} certificates")
        chain.append(issuer)
        names.append(f"intermediate CA {_subject(issuer)}")
        current = issuer
    anchor = _subject(chain[-1])
    check_chain(chain, names, at=at, pinned_roots={hashlib.sha256(chain[-1].public_bytes(Encoding.DER)).digest():
                                                   anchor})
    return certificate, anchor


# -- the operator's side: keys, names, MakeCredential ---------------------------------------------------------------

def ek_public_key(tss: Any, public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The `cryptography` public key of an EK's TPMT_PUBLIC (tpm2-pytss' structure)."""
    if int(public.type) == int(tss.TPM2_ALG.RSA):
        modulus = bytes(public.unique.rsa)
        exponent = int(public.parameters.rsaDetail.exponent) or _RSA_DEFAULT_EXPONENT
        if not 128 <= len(modulus) <= 512:  # RSA-1024 to RSA-4096
            raise AttestationError(f"the EK's RSA modulus is {len(modulus)} bytes")
        return rsa.RSAPublicNumbers(exponent, int.from_bytes(modulus, "big")).public_key()
    if int(public.type) == int(tss.TPM2_ALG.ECC):
        curve_type = _CURVES.get(int(public.parameters.eccDetail.curveID))
        if curve_type is None:
            raise AttestationError(f"the EK is on curve {public.parameters.eccDetail.curveID}, not a NIST curve")
        curve = curve_type()
        x, y = bytes(public.unique.ecc.x), bytes(public.unique.ecc.y)
        size = (curve.key_size + 7) // 8
        if len(x) > size or len(y) > size:
            raise AttestationError(f"the EK's ECC point has coordinates of {len(x)} and {len(y)} bytes")
        try:
            return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                 curve).public_key()
        except ValueError as exc:
            raise AttestationError(f"the EK's ECC point is not on its curve: {exc}") from None
    raise AttestationError(f"the EK is of type {public.type}, neither RSA nor ECC")


def check_ek_attributes(tss: Any, public: Any) -> None:
    """An EK's private key cannot leave its TPM (fixedTPM, fixedParent) and it only decrypts inside (restricted
    decrypt): what credential activation relies on. The certified templates all have these."""
    attr = tss.TPMA_OBJECT
    required = int(attr.FIXEDTPM | attr.FIXEDPARENT | attr.SENSITIVEDATAORIGIN | attr.RESTRICTED | attr.DECRYPT)
    attributes = int(public.objectAttributes)
    if attributes & required != required or attributes & int(attr.SIGN_ENCRYPT):
        raise AttestationError(f"the TPM's EK has attributes {public.objectAttributes}: not a restricted decryption "
                               f"key fixed to its TPM")


def ek_credential_parameters(tss: Any, public: Any) -> tuple[hashes.HashAlgorithm, int]:
    """The EK's name algorithm and its AES-CFB key size: what MakeCredential derives its keys with."""
    name_alg = _NAME_ALGORITHMS.get(int(public.nameAlg))
    if name_alg is None:
        raise AttestationError(f"the EK's name algorithm {public.nameAlg} is not SHA-256, SHA-384 or SHA-512")
    detail = public.parameters.rsaDetail if int(public.type) == int(tss.TPM2_ALG.RSA) else \
        public.parameters.eccDetail
    symmetric = detail.symmetric
    bits = int(symmetric.keyBits.sym)
    if int(symmetric.algorithm) != _TPM_ALG_AES or int(symmetric.mode.sym) != _TPM_ALG_CFB \
            or bits not in (128, 192, 256):
        raise AttestationError("the EK's symmetric algorithm is not AES in CFB mode (every EK template's)")
    return name_alg(), bits


def object_name(public: bytes) -> bytes:
    """The TPM name of an object from its marshalled TPMT_PUBLIC: nameAlg (the 2 bytes after the type) followed by
    that hash of the whole structure (Part 1 §16, "Names")."""
    if not 4 <= len(public) <= MAX_AK_PUBLIC_SIZE:
        raise AttestationError(f"a TPMT_PUBLIC of {len(public)} bytes")
    algorithm = _NAME_ALGORITHMS.get(int.from_bytes(public[2:4], "big"))
    if algorithm is None:
        raise AttestationError(f"the object's name algorithm 0x{public[2:4].hex()} is not SHA-256, -384 or -512")
    digest = hashes.Hash(algorithm())
    digest.update(public)
    return public[2:4] + digest.finalize()


def kdfa(algorithm: hashes.HashAlgorithm, key: bytes, label: bytes, context_u: bytes, context_v: bytes,
         bits: int) -> bytes:
    """KDFa (Part 1 §11.4.10.2): SP 800-108 counter-mode HMAC, K(i) = HMAC(key, [i]32 || label || 00 ||
    contextU || contextV || [bits]32), truncated to `bits`."""
    if bits <= 0 or bits % 8:
        raise InvalidArgumentError(f"KDFa of {bits} bits")
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        mac = hmac.new(key, digestmod=algorithm.name)
        mac.update(counter.to_bytes(4, "big") + label + b"\0" + context_u + context_v + bits.to_bytes(4, "big"))
        out += mac.digest()
    return bytes(out[:bits // 8])


def kdfe(algorithm: hashes.HashAlgorithm, z: bytes, use: bytes, party_u: bytes, party_v: bytes, bits: int) -> bytes:
    """KDFe (Part 1 §11.4.10.3): SP 800-56A concatenation KDF, H([i]32 || Z || use || partyUInfo || partyVInfo),
    truncated to `bits`; `use` includes its terminating NUL."""
    out = bytearray()
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hashlib.new(algorithm.name, counter.to_bytes(4, "big") + z + use + party_u + party_v).digest()
    return bytes(out[:bits // 8])


def make_credential(ek_key: Any, *, name_alg: hashes.HashAlgorithm, symmetric_key_bits: int, credential: bytes,
                    object_name: bytes) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (credentialBlob, the encrypted seed), the contents of the TPM2B_ID_OBJECT
    and TPM2B_ENCRYPTED_SECRET that TPM2_ActivateCredential takes.

    The seed is random, encrypted to the EK (RSA: OAEP with `name_alg` and the label "IDENTITY\\0"; ECC: an
    ephemeral ECDH key, the seed derived with KDFe, and the ephemeral point sent). From the seed, KDFa derives
    the AES-CFB key that encrypts the credential (as a TPM2B_DIGEST, zero IV), labelled "STORAGE" with the
    object's name, and the HMAC key, labelled "INTEGRITY", that binds the encrypted credential to that name
    (Part 1 §24.4-24.5). Only a TPM holding the EK's private key and a loaded object of that name can open it.
    """
    digest_size = name_alg.digest_size
    if not 0 < len(credential) <= digest_size:
        raise InvalidArgumentError(f"a credential of {len(credential)} bytes (1 to {digest_size} for this EK)")
    if isinstance(ek_key, rsa.RSAPublicKey):
        seed = secrets.token_bytes(digest_size)
        encrypted_seed = ek_key.encrypt(seed, padding.OAEP(mgf=padding.MGF1(type(name_alg)()),
                                                           algorithm=type(name_alg)(), label=IDENTITY_LABEL))
    elif isinstance(ek_key, ec.EllipticCurvePublicKey):
        ephemeral = ec.generate_private_key(ek_key.curve)
        size = (ek_key.curve.key_size + 7) // 8
        point = ephemeral.public_key().public_numbers()
        ephemeral_x, ephemeral_y = point.x.to_bytes(size, "big"), point.y.to_bytes(size, "big")
        z = ephemeral.exchange(ec.ECDH(), ek_key)  # the shared point's x coordinate
        seed = kdfe(name_alg, z, IDENTITY_LABEL, ephemeral_x, ek_key.public_numbers().x.to_bytes(size, "big"),
                    digest_size * 8)
        encrypted_seed = (len(ephemeral_x).to_bytes(2, "big") + ephemeral_x
                          + len(ephemeral_y).to_bytes(2, "big") + ephemeral_y)  # TPMS_ECC_POINT
    else:
        raise InvalidArgumentError(f"an EK key of type {type(ek_key).__name__}")
    symmetric_key = kdfa(name_alg, seed, b"STORAGE", object_name, b"", symmetric_key_bits)
    encrypted_identity = aes_cfb_encrypt(symmetric_key, len(credential).to_bytes(2, "big") + credential)
    hmac_key = kdfa(name_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer_hmac = hmac.new(hmac_key, encrypted_identity + object_name, digestmod=name_alg.name).digest()
    return len(outer_hmac).to_bytes(2, "big") + outer_hmac + encrypted_identity, encrypted_seed


def aes_cfb_encrypt(key: bytes, data: bytes) -> bytes:
    """AES in full-block CFB mode with a zero IV, as the TPM uses it for credentials (Part 1 §11.4.6.3).

    Written out over the AES block function because `cryptography` moved its CFB mode to its "decrepit" module
    (deprecated in the primitives since 47) and this package supports versions on both sides of the move: each
    ciphertext block is the plaintext XOR AES(key, previous ciphertext block), the first "previous" being the IV.
    """
    block_cipher = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - one block at a time: CFB
    out = bytearray()
    feedback = bytes(16)
    for offset in range(0, len(data), 16):
        block = data[offset:offset + 16]
        keystream = block_cipher.update(feedback)
        cipher_block = bytes(a ^ b for a, b in zip(block, keystream, strict=False))  # the last block may be short
        out += cipher_block
        feedback = cipher_block
    return bytes(out)
