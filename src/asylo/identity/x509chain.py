"""Checking a vendor's certificate chain up to a root pinned in the code, at a given time.

AMD's VCEK and the Nitro leaf certificate have no authority key identifier, so `cryptography`'s x509
`PolicyBuilder` (which requires one) refuses them; the vendors' own verifiers walk the chain by hand, and so does
this: each certificate must be signed by the next (`verify_directly_issued_by`, RSA-PSS included), each issuer
must be a CA whose path length allows what is below it, every certificate must be valid at `at`, and the last must
be a self-signed root whose DER SHA-256 is one of the pinned digests. Revocation is each platform's business (AMD
and AWS publish none that their offline verifiers use; DCAP's CRLs are checked by dcap-qvl).
"""

from __future__ import annotations

import datetime
import hashlib
import warnings
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from asylo.status import AttestationError

# AMD's VCEKs have serial number 0, which cryptography warns about on every load (a deprecation: RFC 5280 wants a
# positive serial). The vendor's certificates are what they are; the chain check decides, not that. Only this
# warning is silenced, for the whole process (catch_warnings per load would not be thread-safe).
warnings.filterwarnings("ignore", message=".*serial number.*", category=CryptographyDeprecationWarning)

#: A chain longer than this is not one any of the supported vendors issues (SNP: 3, Nitro: 4 or 5).
MAX_CHAIN_LENGTH = 8
#: A DER certificate larger than this is not a vendor's: AMD's ARK (RSA-4096) is about 1.6 KiB.
MAX_CERTIFICATE_SIZE = 16 * 1024


#: What `cryptography` raises for a malformed certificate besides ValueError: on loading (InvalidVersion) and when a
#: lazily parsed part is first read (names, extensions, the key).
CERTIFICATE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion, x509.DuplicateExtension,
                      x509.UnsupportedGeneralNameType, x509.AttributeNotFound)


def load_der_certificate(der: bytes, what: str) -> x509.Certificate:
    """Parse a DER certificate from untrusted input, names, extensions and key included (cryptography parses those
    lazily, so a malformed one would otherwise raise from deep inside a chain check); AttestationError naming
    `what` if it is not a certificate."""
    if len(der) > MAX_CERTIFICATE_SIZE:
        raise AttestationError(f"{what} is {len(der)} bytes, over the limit of {MAX_CERTIFICATE_SIZE}")
    try:
        certificate = x509.load_der_x509_certificate(der)
        _ = (certificate.subject, certificate.issuer, certificate.extensions)
        certificate.public_key()
    except CERTIFICATE_ERRORS as exc:
        raise AttestationError(
            f"{what} is not a DER X.509 certificate that can be read ({type(exc).__name__}: {exc})") from None
    return certificate


def certificate_sha256(certificate: x509.Certificate) -> bytes:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).digest()


def check_chain(chain: Sequence[x509.Certificate], names: Sequence[str], *, at: datetime.datetime,
                pinned_roots: Mapping[bytes, str]) -> str:
    """Check `chain` (leaf first, root last) as described in the module doc; return the pinned root's name.

    `names` says what each certificate is ("VCEK", "ASK", "ARK"), for messages. `pinned_roots` maps the DER
    SHA-256 of each trusted root to its name ("ARK-Milan").
    """
    if not chain or len(chain) != len(names):
        raise AttestationError("an empty certificate chain")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise AttestationError(f"a certificate chain of {len(chain)} certificates (at most {MAX_CHAIN_LENGTH})")
    root = chain[-1]
    root_name = pinned_roots.get(certificate_sha256(root))
    if root_name is None:
        raise AttestationError(
            f"the {names[-1]} certificate (SHA-256 {certificate_sha256(root).hex()}) is not a root pinned by this "
            f"pyasylo (trusted: {', '.join(sorted(pinned_roots.values())) or 'none'})"
        )
    for certificate, name in zip(chain, names, strict=True):
        _check_validity(certificate, name, at)
    for index, (certificate, name) in enumerate(zip(chain, names, strict=True)):
        issuer, issuer_name = (chain[index + 1], names[index + 1]) if index + 1 < len(chain) else (root, name)
        if issuer is not certificate:
            _check_issuer_may_sign(issuer, issuer_name, certificates_below=index)
        try:
            certificate.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            relation = "is not self-signed" if issuer is certificate else f"is not signed by the {issuer_name}"
            raise AttestationError(f"the {name} certificate {relation} ({type(exc).__name__}: {exc})") from None
    return root_name


def _check_validity(certificate: x509.Certificate, name: str, at: datetime.datetime) -> None:
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        raise AttestationError(
            f"the {name} certificate is not valid at {at.isoformat()} (valid from "
            f"{certificate.not_valid_before_utc.isoformat()} to {certificate.not_valid_after_utc.isoformat()})"
        )


def _check_issuer_may_sign(issuer: x509.Certificate, name: str, *, certificates_below: int) -> None:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise AttestationError(f"the {name} certificate issues others but has no basic constraints") from None
    except (ValueError, x509.DuplicateExtension) as exc:
        raise AttestationError(f"the {name} certificate has malformed extensions: {exc}") from None
    if not constraints.ca:
        raise AttestationError(f"the {name} certificate issues others but is not a CA")
    # Path length counts the CA certificates below this one (the leaf does not count).
    if constraints.path_length is not None and certificates_below > constraints.path_length:
        raise AttestationError(f"the {name} certificate's path length {constraints.path_length} does not allow a "
                               f"chain this long")

