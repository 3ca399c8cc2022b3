"""TEST DOUBLE: TPM 2.0 quotes made and signed here, by attestation keys generated at test time. No TPM is involved.

This is not evidence and nothing here ran on a TPM. It writes TPMT_PUBLIC, TPMS_ATTEST and TPMT_SIGNATURE byte for
byte in the marshalled format of the TPM 2.0 Library, Part 2 (big-endian, TPM2B sizes; the layouts were checked
against what swtpm and tpm2-tools produce), signs with `cryptography` keys, and wraps the parts in a TpmQuote, so the
verifier's tests need no TPM and can reach every check: wrong magic or type still signed, an AK without the
restricted attribute, a signature in another scheme. It marshals on its own (it does not call the parser it tests)
and computes PCR digests with hashlib directly.

The AKs have the attributes tpm2_createak gives (fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
restricted, sign) unless a test says otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from asylo.identity.fingerprints import platform_fingerprint
from asylo.proto import identity_pb2

ALG_RSA, ALG_ECC = 0x0001, 0x0023
ALG_SHA1, ALG_SHA256, ALG_SHA384, ALG_SHA512 = 0x0004, 0x000B, 0x000C, 0x000D
ALG_NULL = 0x0010
ALG_RSASSA, ALG_RSAPSS, ALG_ECDSA = 0x0014, 0x0016, 0x0018
ECC_NIST_P256, ECC_NIST_P384 = 0x0003, 0x0004
TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ST_ATTEST_CERTIFY = 0x8017

FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN, USER_WITH_AUTH = 1 << 1, 1 << 4, 1 << 5, 1 << 6
RESTRICTED, DECRYPT, SIGN = 1 << 16, 1 << 17, 1 << 18
#: tpm2_createak's attributes (0x00050072), as swtpm reported them.
AK_ATTRIBUTES = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | USER_WITH_AUTH | RESTRICTED | SIGN

_HASHES: Mapping[int, tuple[str, type[hashes.HashAlgorithm]]] = {
    ALG_SHA1: ("sha1", hashes.SHA1), ALG_SHA256: ("sha256", hashes.SHA256),
    ALG_SHA384: ("sha384", hashes.SHA384), ALG_SHA512: ("sha512", hashes.SHA512),
}
_CURVES = {ECC_NIST_P256: (ec.SECP256R1, 32), ECC_NIST_P384: (ec.SECP384R1, 48)}
#: The PCRs a quote selects by default: the SHA-256 bank, PCRs 0-7 (pyasylo's default selection).
DEFAULT_SELECTION: tuple[tuple[int, tuple[int, ...]], ...] = ((ALG_SHA256, tuple(range(8))),)


def made_up_pcr(label: str, hash_alg: int = ALG_SHA256) -> bytes:
    """A PCR value that is obviously made up (the digest of `label` in the bank's hash)."""
    return hashlib.new(_HASHES[hash_alg][0], label.encode()).digest()


def default_pcr_values(selection: Sequence[tuple[int, Sequence[int]]] = DEFAULT_SELECTION,
                       ) -> dict[tuple[int, int], bytes]:
    return {(bank, index): made_up_pcr(f"PCR{index}", bank) for bank, indices in selection for index in indices}


def tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def select_bitmap(indices: Sequence[int], size: int = 3) -> bytes:
    bitmap = bytearray(size)
    for index in indices:
        bitmap[index // 8] |= 1 << (index % 8)
    return bytes(bitmap)


@dataclass
class TestAk:
    """An attestation key: a `cryptography` private key and the TPMT_PUBLIC a TPM would report for it."""

    __test__ = False  # not a pytest class

    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    scheme: int
    scheme_hash: int
    attributes: int = AK_ATTRIBUTES
    name_alg: int = ALG_SHA256
    curve: int = 0

    @classmethod
    def rsa(cls, scheme: int = ALG_RSASSA, *, bits: int = 2048, scheme_hash: int = ALG_SHA256,
            attributes: int = AK_ATTRIBUTES) -> TestAk:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(key, scheme, scheme_hash, attributes)

    @classmethod
    def ecc(cls, curve: int = ECC_NIST_P256, *, scheme_hash: int = ALG_SHA256,
            attributes: int = AK_ATTRIBUTES) -> TestAk:
        key = ec.generate_private_key(_CURVES[curve][0]())
        return cls(key, ALG_ECDSA, scheme_hash, attributes, curve=curve)

    def with_attributes(self, attributes: int) -> TestAk:
        """The same key material with other attributes (another TPMT_PUBLIC, so another fingerprint)."""
        return dataclasses.replace(self, attributes=attributes)

    def public_area(self) -> bytes:
        """TPMT_PUBLIC (Part 2, 12.2.4): type, nameAlg, objectAttributes, authPolicy, parameters, unique."""
        head = struct.pack(">HHI", ALG_RSA if self.is_rsa else ALG_ECC, self.name_alg, self.attributes) + tpm2b(b"")
        scheme = struct.pack(">HH", self.scheme, self.scheme_hash) if self.scheme != ALG_NULL else struct.pack(
            ">H", ALG_NULL)
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            numbers = self.private_key.public_key().public_numbers()
            size = self.private_key.key_size // 8
            # symmetric NULL, scheme, keyBits, exponent 0 (the default 65537), unique = the modulus.
            parameters = struct.pack(">H", ALG_NULL) + scheme + struct.pack(">HI", self.private_key.key_size, 0)
            return head + parameters + tpm2b(numbers.n.to_bytes(size, "big"))
        point = self.private_key.public_key().public_numbers()
        size = _CURVES[self.curve][1]
        # symmetric NULL, scheme, curveID, kdf NULL, unique = x, y padded to the curve's size.
        parameters = struct.pack(">H", ALG_NULL) + scheme + struct.pack(">HH", self.curve, ALG_NULL)
        return head + parameters + tpm2b(point.x.to_bytes(size, "big")) + tpm2b(point.y.to_bytes(size, "big"))

    @property
    def is_rsa(self) -> bool:
        return isinstance(self.private_key, rsa.RSAPrivateKey)

    @property
    def fingerprint(self) -> str:
        return platform_fingerprint(self.public_area())

    @property
    def name(self) -> bytes:
        return struct.pack(">H", self.name_alg) + hashlib.new(_HASHES[self.name_alg][0], self.public_area()).digest()

    def sign(self, message: bytes, *, sig_alg: int | None = None, hash_alg: int | None = None) -> bytes:
        """TPMT_SIGNATURE (Part 2, 11.3.4) over `message`, in the key's scheme unless told otherwise."""
        sig_alg = self.scheme if sig_alg is None else sig_alg
        hash_alg = self.scheme_hash if hash_alg is None else hash_alg
        digest = _HASHES[hash_alg][1]()
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            if sig_alg == ALG_RSAPSS:
                # Salt as long as the digest, as libtpms salts.
                pad: padding.AsymmetricPadding = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            else:
                pad = padding.PKCS1v15()
            signature = self.private_key.sign(message, pad, digest)
            return struct.pack(">HH", sig_alg, hash_alg) + tpm2b(signature)
        r, s = decode_dss_signature(self.private_key.sign(message, ec.ECDSA(digest)))
        size = _CURVES[self.curve][1]
        return struct.pack(">HH", sig_alg, hash_alg) + tpm2b(r.to_bytes(size, "big")) + tpm2b(s.to_bytes(size, "big"))


def attest_body(*, extra_data: bytes, selection: Sequence[tuple[int, bytes]], pcr_digest: bytes,
                qualified_signer: bytes, magic: int = TPM_GENERATED_VALUE, attest_type: int = TPM_ST_ATTEST_QUOTE,
                clock: int = 6522, reset_count: int = 2, restart_count: int = 0, safe: int = 1,
                firmware_version: int = 0x2019102300163636) -> bytes:
    """TPMS_ATTEST (Part 2, 10.12.12) with a TPMS_QUOTE_INFO: `selection` is (bank, bitmap) pairs as marshalled."""
    body = struct.pack(">IH", magic, attest_type) + tpm2b(qualified_signer) + tpm2b(extra_data)
    body += struct.pack(">QIIBQ", clock, reset_count, restart_count, safe, firmware_version)
    body += struct.pack(">I", len(selection))
    for bank, bitmap in selection:
        body += struct.pack(">HB", bank, len(bitmap)) + bitmap
    return body + tpm2b(pcr_digest)


@dataclass
class QuoteParts:
    """The four fields of a TpmQuote, for tests to alter one and serialize again."""

    attest: bytes
    signature: bytes
    ak_public: bytes
    pcrs: list[tuple[int, int, bytes]]

    def serialize(self) -> bytes:
        quote = identity_pb2.TpmQuote(
            attest=self.attest, signature=self.signature, ak_public=self.ak_public,
            pcrs=[identity_pb2.TpmPcrValue(hash_alg=bank, index=index, value=value)
                  for bank, index, value in self.pcrs],
        )
        return quote.SerializeToString(deterministic=True)


def make_quote(ak: TestAk, extra_data: bytes, *,
               selection: Sequence[tuple[int, Sequence[int]]] = DEFAULT_SELECTION,
               values: Mapping[tuple[int, int], bytes] | None = None, digest_values: Mapping[tuple[int, int], bytes]
               | None = None, sign_with: TestAk | None = None, **attest_fields: object) -> QuoteParts:
    """A signed quote by `ak` over `selection` with the given PCR values (made-up ones by default).

    `digest_values` are the values the pcrDigest is computed over (default: `values`), so a test can sign a digest
    that the carried values do not recompute to. The digest uses the AK's scheme hash, as TPM2_Quote does.
    `sign_with` signs with another key (the TPMT_PUBLIC still says `ak`). `attest_fields` go to `attest_body`.
    """
    carried = dict(default_pcr_values(selection) if values is None else values)
    digested = carried if digest_values is None else dict(digest_values)
    ordered = [(bank, index) for bank, indices in selection for index in sorted(indices)]
    digest = hashlib.new(_HASHES[ak.scheme_hash][0], b"".join(digested[key] for key in ordered)).digest()
    body = attest_body(extra_data=extra_data, selection=[(bank, select_bitmap(indices)) for bank, indices in selection],
                       pcr_digest=digest, qualified_signer=ak.name, **attest_fields)  # type: ignore[arg-type]
    signer = ak if sign_with is None else sign_with
    return QuoteParts(attest=body, signature=signer.sign(body), ak_public=ak.public_area(),
                      pcrs=[(bank, index, carried[(bank, index)]) for bank, index in ordered])
