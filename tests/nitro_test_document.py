"""TEST DOUBLE: Nitro attestation documents made and signed here, by a certificate chain generated at test time.

This is not evidence and nothing here ran on Nitro hardware. It makes a test root, intermediate and leaf (EC P-384,
the extensions AWS's chain has: basic constraints, key usage, no authority key identifier on the leaf) and COSE_Sign1
documents in AWS's format (the payload fields in the NSM's order, ES384 over the Sig_structure by the leaf) with the
PCRs, user data, nonce, public key and timestamp a test chooses, so tests can reach every check of the verifier:
the genuine vectors in tests/vectors/nitro cannot be re-signed. `NitroTestPki.pinned_roots` is the mapping a
`NitroQuoteVerifier` must be given to trust the test root; the default verifier refuses it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

#: What a test passes in `fields` to leave a payload field out altogether.
ABSENT = object()
TEST_MODULE_ID = "i-0123456789abcdef0-enc0123456789abcdef"
TEST_ROOT_NAME = "pyasylo test Nitro root (test double)"
ES384_ALG = -35


def made_up_pcr(label: str) -> bytes:
    """A 48-byte PCR value that is obviously made up (the SHA-384 of `label`)."""
    return hashlib.sha384(label.encode()).digest()


#: PCR0-2 set (a production enclave), PCR3-15 zero, as a real enclave without an IAM role or signing cert has.
DEFAULT_PCRS: Mapping[int, bytes] = {
    index: made_up_pcr(f"PCR{index}") if index < 3 else bytes(48) for index in range(16)
}


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyasylo tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _key_usage(*, digital_signature: bool, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=not cert_sign,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
                 issuer_key: ec.EllipticCurvePrivateKey, *, not_before: datetime.datetime,
                 not_after: datetime.datetime, ca: bool, path_length: int | None,
                 digital_signature: bool) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(subject) if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(_key_usage(digital_signature=digital_signature, cert_sign=ca), critical=ca)
    )
    return builder.sign(issuer_key, hashes.SHA384())


@dataclass(frozen=True)
class NitroTestPki:
    """A test root, intermediate and leaf; the leaf key signs the documents."""

    root: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, valid_at: datetime.datetime, *, leaf_not_before: datetime.datetime | None = None,
               leaf_not_after: datetime.datetime | None = None, leaf_curve: ec.EllipticCurve | None = None,
               leaf_ca: bool = False, leaf_digital_signature: bool = True) -> NitroTestPki:
        """A chain valid around `valid_at`: the root for a year either side, the intermediate a day, the leaf from
        3 seconds before to 3 hours after (as AWS's leaf lives), unless the test says otherwise."""
        root_key = ec.generate_private_key(ec.SECP384R1())
        intermediate_key = ec.generate_private_key(ec.SECP384R1())
        leaf_key = ec.generate_private_key(leaf_curve or ec.SECP384R1())
        year, day = datetime.timedelta(days=365), datetime.timedelta(days=1)
        root = _certificate("test.nitro-enclaves", root_key, None, root_key, not_before=valid_at - year,
                            not_after=valid_at + year, ca=True, path_length=None, digital_signature=True)
        intermediate = _certificate("zonal.test.nitro-enclaves", intermediate_key, root, root_key,
                                    not_before=valid_at - day, not_after=valid_at + day, ca=True, path_length=0,
                                    digital_signature=True)
        leaf = _certificate(
            f"{TEST_MODULE_ID}.test", leaf_key, intermediate, intermediate_key,
            not_before=leaf_not_before or valid_at - datetime.timedelta(seconds=3),
            not_after=leaf_not_after or valid_at + datetime.timedelta(hours=3),
            ca=leaf_ca, path_length=None, digital_signature=leaf_digital_signature,
        )
        return cls(root=root, intermediate=intermediate, leaf=leaf, leaf_key=leaf_key)

    @property
    def pinned_roots(self) -> dict[bytes, str]:
        """The `pinned_roots` mapping that makes a verifier trust this test root."""
        return {hashlib.sha256(self.root.public_bytes(Encoding.DER)).digest(): TEST_ROOT_NAME}

    def cabundle(self) -> list[bytes]:
        """Root first, as AWS orders it."""
        return [self.root.public_bytes(Encoding.DER), self.intermediate.public_bytes(Encoding.DER)]

    def payload(self, *, timestamp: datetime.datetime, pcrs: Mapping[int, bytes] = DEFAULT_PCRS,
                user_data: bytes | None = b"test user data", nonce: bytes | None = None,
                public_key: bytes | None = None, fields: Mapping[str, object] | None = None) -> bytes:
        """The CBOR payload with AWS's fields in the NSM's order; `fields` replaces (or, with ABSENT, removes) any
        of them or adds others, so a test can make a wrong type or size that is still signed."""
        document: dict[str, object] = {
            "module_id": TEST_MODULE_ID,
            "digest": "SHA384",
            "timestamp": int((timestamp - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC))
                             / datetime.timedelta(milliseconds=1)),
            "pcrs": dict(pcrs),
            "certificate": self.leaf.public_bytes(Encoding.DER),
            "cabundle": self.cabundle(),
            "public_key": public_key,
            "user_data": user_data,
            "nonce": nonce,
        }
        for name, value in (fields or {}).items():
            if value is ABSENT:
                document.pop(name, None)
            else:
                document[name] = value
        return cbor2.dumps(document)

    def document(self, *, timestamp: datetime.datetime, alg: object = ES384_ALG, tagged: bool = False,
                 protected: bytes | None = None, unprotected: object = None, **payload_options: object) -> bytes:
        """A signed COSE_Sign1 document; `payload_options` go to `payload`."""
        return self.sign(self.payload(timestamp=timestamp, **payload_options),  # type: ignore[arg-type]
                         alg=alg, tagged=tagged, protected=protected, unprotected=unprotected)

    def sign(self, payload: bytes, *, alg: object = ES384_ALG, tagged: bool = False, protected: bytes | None = None,
             unprotected: object = None) -> bytes:
        """`payload` (any bytes) as a COSE_Sign1 signed ES384 by the leaf, protected header {1: alg} unless given."""
        if protected is None:
            protected = cbor2.dumps({1: alg})
        sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])
        r, s = decode_dss_signature(self.leaf_key.sign(sig_structure, ec.ECDSA(hashes.SHA384())))
        size = 48  # ES384's r || s; a smaller curve's values fit too, so a test can reach the key-type check
        cose = [protected, {} if unprotected is None else unprotected, payload,
                r.to_bytes(size, "big") + s.to_bytes(size, "big")]
        return cbor2.dumps(cbor2.CBORTag(18, cose) if tagged else cose)
