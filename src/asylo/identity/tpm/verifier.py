"""Verifying a TPM 2.0 quote on the host, offline, with nothing but `cryptography`: no TSS, no TPM.

The evidence of platform "tpm" is a deterministically serialized `TpmQuote` (asylo/proto/identity.proto): the
TPMS_ATTEST the TPM signed, its TPMT_SIGNATURE, the attestation key's TPMT_PUBLIC and the values of the PCRs the
quote selected. `TpmQuoteVerifier` checks, in order, each refusal an `AttestationError` naming the check:

1. the container: bounded, canonical protobuf (no unknown fields, no second encoding of one quote);
2. the AK is trusted: `platform_fingerprint` over its TPMT_PUBLIC bytes is one the host was given. The operator
   enrolled that AK once (`asylo platform enroll`: credential activation against an EK whose certificate chains to
   the manufacturer's CA) and hosts trust the fingerprint it printed, as they trust a sim platform's;
3. the AK is a restricted signing key that cannot leave its TPM (restricted, sign, fixedTPM, fixedParent; not
   decrypt), with an RSASSA, RSAPSS or ECDSA scheme. A TPM signs with a restricted key only digests it made itself
   or digests of data that do not start with TPM_GENERATED_VALUE (Part 1, "Restricted Signing Keys"), so a
   signature by this key over a structure that starts with the magic is the TPM's own statement;
4. the TPMS_ATTEST is a quote: magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE;
5. the signature is the AK's scheme and verifies over the TPMS_ATTEST bytes with the AK;
6. the PCR values given are exactly the selected PCRs (same banks, same indices, same order) and recompute to the
   quote's pcrDigest, hashed with the signature scheme's hash (see `structures.pcr_digest` for the source);
7. the qualifying data (extraData) is the 32 bytes pyasylo's attester puts there.

The verified `TpmLaunchIdentity` carries the extraData as its report data. What it must equal is
`qualifying_data(binding)`: the SHA-256 of the 64 bytes the session asks the hardware to carry (see
`QUALIFYING_DATA_SIZE` for why a digest). Freshness comes from there too: a quote carries the TPM's clock and boot
counters, not a wall time, so the verification time (`at`) has nothing to be checked against.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from asylo.identity.evidence import decode_canonical
from asylo.identity.fingerprints import parse_fingerprint, platform_fingerprint
from asylo.identity.launch import Endorsements, LaunchIdentity, QuoteVerifier, hex_fields
from asylo.identity.platforms import REPORT_DATA_SIZE
from asylo.identity.tpm.structures import (
    ECC_CURVES,
    MAX_PUBLIC_SIZE,
    MAX_QUOTE_ATTEST_SIZE,
    MAX_SIGNATURE_SIZE,
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_RSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPMA_OBJECT_DECRYPT,
    TPMA_OBJECT_FIXED_PARENT,
    TPMA_OBJECT_FIXED_TPM,
    TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SIGN,
    PcrSelection,
    QuoteAttest,
    TpmPublic,
    TpmSignature,
    algorithm_name,
    hash_algorithm,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
)
from asylo.proto import identity_pb2
from asylo.status import AttestationError, InvalidArgumentError

TPM_KIND = "tpm"
#: The qualifying data (TPM2_Quote's qualifyingData, the quote's extraData) is the SHA-256 of the 64 bytes of report
#: data, not the 64 bytes: qualifyingData is a TPM2B_DATA, whose buffer is sizeof(TPMT_HA) (Part 2, 10.4.3), a
#: TPM_ALG_ID and the largest digest the TPM implements, so a TPM whose largest hash is SHA-256 (the PC Client
#: profile requires no larger) refuses more than 34 bytes. 64 bytes do not fit every TPM; a 32-byte digest always does.
QUALIFYING_DATA_SIZE = 32
#: A serialized TpmQuote's bound: a quote's TPMS_ATTEST, the longest signature and key this verifier reads, and the
#: values of four full 24-PCR banks (SHA-1, SHA-256, SHA-384, SHA-512) with their framing come to under 6 KiB; 16 KiB
#: leaves room and keeps far inside the 64 KiB evidence bound.
MAX_TPM_QUOTE_SIZE = 16 * 1024
#: The signature hashes accepted: SHA-1 is refused, its collisions are practical (SHAttered, 2017).
SIGNATURE_HASHES = frozenset({0x000B, 0x000C, 0x000D})
#: The RSA AK sizes accepted: a TPM offers 1024 too, which is too weak to stand for a machine.
RSA_KEY_BITS = frozenset({2048, 3072, 4096})
#: The attributes an AK must have, each with why (Part 2, 8.3.3): a TPM quotes with any signing key, but only a
#: restricted one makes the TPM_GENERATED magic mean that the TPM made the structure, and only a key that can
#: neither leave the TPM nor be re-parented stays the key that was enrolled.
AK_REQUIRED_ATTRIBUTES: Mapping[int, str] = MappingProxyType({
    TPMA_OBJECT_RESTRICTED: "restricted (without it the key signs any digest, so a signed TPMS_ATTEST proves nothing)",
    TPMA_OBJECT_SIGN: "sign (a key that may not sign cannot have made a quote)",
    TPMA_OBJECT_FIXED_TPM: "fixedTPM (without it the key may be duplicated out of the TPM)",
    TPMA_OBJECT_FIXED_PARENT: "fixedParent (without it the key may be moved to another parent)",
})
#: The schemes an AK may have, by key type (Part 2, 12.2.3.5: a restricted RSA signing key's scheme is RSASSA or
#: RSAPSS; ECDSA is the ECC scheme verifiable with `cryptography`).
AK_SCHEMES: Mapping[int, frozenset[int]] = MappingProxyType({
    TPM_ALG_RSA: frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS}),
    TPM_ALG_ECC: frozenset({TPM_ALG_ECDSA}),
})
_PROTO_FIELDS = ("attest", "signature", "ak_public")
_FIELD_BOUNDS = {"attest": MAX_QUOTE_ATTEST_SIZE, "signature": MAX_SIGNATURE_SIZE, "ak_public": MAX_PUBLIC_SIZE}


def qualifying_data(report_data: bytes) -> bytes:
    """The qualifying data a TPM quote over `report_data` carries: its SHA-256 (see `QUALIFYING_DATA_SIZE`). The
    attester passes this to TPM2_Quote; the host compares the verified report data with it."""
    if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
        raise InvalidArgumentError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")
    return hashlib.sha256(report_data).digest()


def encode_tpm_quote(quote: identity_pb2.TpmQuote) -> bytes:
    """The one encoding of a TpmQuote that `TpmQuoteVerifier` accepts (deterministic protobuf)."""
    return quote.SerializeToString(deterministic=True)


def decode_tpm_quote(data: bytes) -> identity_pb2.TpmQuote:
    """Parse a serialized TpmQuote strictly: bounded, and exactly the deterministic encoding of what it parses to
    (as `asylo.identity.evidence.decode_evidence` does for the container around it)."""
    quote = decode_canonical(identity_pb2.TpmQuote, data, MAX_TPM_QUOTE_SIZE, "the TPM quote")
    for field in _PROTO_FIELDS:
        value = getattr(quote, field)
        if not value:
            raise AttestationError(f"the TPM quote has no {field}")
        if len(value) > _FIELD_BOUNDS[field]:
            raise AttestationError(f"the TPM quote's {field} is {len(value)} bytes, over the bound of "
                                   f"{_FIELD_BOUNDS[field]}")
    return quote


@dataclass(frozen=True, slots=True)
class TpmLaunchIdentity(LaunchIdentity):
    """A machine's boot state as a verified TPM 2.0 quote states it.

    `pcrs`: (hash_alg, index, value) triples in the quote's selection order (hash_alg a TPM_ALG_ID: 0x000B is
    SHA-256). `ak_fingerprint` names the attestation key (SHA-256 of its TPMT_PUBLIC, what `--trust-platform`
    takes), `ak_name` is its TPM Name and `ak_algorithm` its key and scheme ("rsa2048-rsassa-sha256"). `clock`,
    `reset_count`, `restart_count` and `safe` are the TPM's TPMS_CLOCK_INFO (milliseconds powered, boots, resumes:
    no wall time); `firmware_version` is the TPM vendor's; `qualified_signer` the AK's Qualified Name.
    `report_data` is the quote's qualifying data, 32 bytes: `qualifying_data` of what the session asked for.

    `debug` is always False: a TPM has no debug mode to report. What it proves is what was measured into the PCRs
    at boot; it says nothing of who can read the running machine's memory (root on it can), which is why the README
    pairs it with a confidential VM where that matters.
    """

    kind: ClassVar[str] = TPM_KIND

    pcrs: tuple[tuple[int, int, bytes], ...]
    ak_fingerprint: str
    ak_name: bytes
    ak_algorithm: str
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    qualified_signer: bytes
    report_data: bytes
    debug: bool = False

    def pcr(self, index: int, hash_alg: int = TPM_ALG_SHA256) -> bytes | None:
        """PCR `index` of bank `hash_alg` (default SHA-256), or None if the quote did not select it."""
        for bank, pcr_index, value in self.pcrs:
            if bank == hash_alg and pcr_index == index:
                return value
        return None

    def pcr_map(self, hash_alg: int = TPM_ALG_SHA256) -> Mapping[int, bytes]:
        """The quoted PCRs of one bank as a read-only mapping of index to value."""
        return MappingProxyType({index: value for bank, index, value in self.pcrs if bank == hash_alg})

    def selection(self) -> str:
        """The quoted PCRs in tpm2-tools' notation ("sha256:0,1,2,3,4,5,6,7")."""
        banks: dict[int, list[int]] = {}
        for bank, index, _ in self.pcrs:
            banks.setdefault(bank, []).append(index)
        return "+".join(f"{algorithm_name(bank)}:{','.join(map(str, indices))}" for bank, indices in banks.items())

    def describe(self) -> str:
        return f"tpm quote of {self.selection()} by AK {self.ak_fingerprint} ({self.ak_algorithm})"

    def to_json(self) -> dict[str, object]:
        banks: dict[str, dict[str, bytes]] = {}
        for bank, index, value in self.pcrs:
            banks.setdefault(algorithm_name(bank), {})[str(index)] = value
        return hex_fields({
            "kind": self.kind,
            "pcrs": banks,
            "ak_fingerprint": self.ak_fingerprint,
            "ak_name": self.ak_name,
            "ak_algorithm": self.ak_algorithm,
            "clock": self.clock,
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "safe": self.safe,
            "firmware_version": f"{self.firmware_version:#018x}",
            "qualified_signer": self.qualified_signer,
            "debug": self.debug,
            "report_data": self.report_data,
        })


class TpmQuoteVerifier(QuoteVerifier):
    """TPM quotes in, `TpmLaunchIdentity` out; see the module doc for the checks.

    `trusted_fingerprints`: the AKs this host trusts, by `platform_fingerprint` of their TPMT_PUBLIC as marshalled
    (64 hex digits, any case). The fingerprint names the key together with its attributes and policy: the same key
    material with other attributes is another fingerprint, so what was enrolled is exactly what is trusted. An empty
    collection is allowed (every quote is then refused, saying how to trust its AK).
    """

    kind: ClassVar[str] = TPM_KIND

    def __init__(self, trusted_fingerprints: Iterable[str]) -> None:
        if isinstance(trusted_fingerprints, str | bytes):
            raise InvalidArgumentError("trusted_fingerprints must be a collection of fingerprints, not one string")
        self._trusted = frozenset(parse_fingerprint(fingerprint) for fingerprint in trusted_fingerprints)

    @property
    def trusted_fingerprints(self) -> frozenset[str]:
        return self._trusted

    def expected_report_data(self, report_data: bytes) -> bytes:
        """What a verified launch's `report_data` must equal for evidence over `report_data` (64 bytes)."""
        return qualifying_data(report_data)

    def verify(self, evidence: bytes, endorsements: Endorsements, *,
               at: datetime.datetime | None = None) -> TpmLaunchIdentity:
        # `at` is not used: a quote carries the TPM's clock and boot counters, not a wall time, so there is nothing
        # to compare a verification time with. Freshness is the qualifying data's job (the session's transcript).
        del at
        if not isinstance(endorsements, Endorsements):
            raise InvalidArgumentError(f"endorsements must be Endorsements, got {type(endorsements).__name__}")
        if endorsements.certificates or endorsements.collateral:
            raise AttestationError("a TPM quote is verified with its enrolled AK alone; certificates or collateral "
                                   "beside it are not used and must be empty (the EK certificate is checked once, at "
                                   "enrollment)")
        quote = decode_tpm_quote(evidence)
        fingerprint = platform_fingerprint(quote.ak_public)
        if fingerprint not in self._trusted:
            raise AttestationError(
                f"the TPM attestation key {fingerprint} is not trusted by this host. If you operate that machine, "
                f"enroll its AK there with `asylo platform enroll`, which prints its fingerprint, and trust it with "
                f"--trust-platform {fingerprint}"
            )
        ak = parse_public(quote.ak_public)
        key = _attestation_key(ak)
        attest = parse_attest(quote.attest)
        signature = parse_signature(quote.signature)
        _check_signature(ak, key, signature, quote.attest)
        values = _check_pcr_values(attest, quote.pcrs)
        expected_digest = pcr_digest(attest.pcr_selections, [value for _, _, value in values], signature.hash_alg)
        if not hmac.compare_digest(expected_digest, attest.pcr_digest):
            raise AttestationError(
                f"the PCR values do not recompute to the quote's pcrDigest ({algorithm_name(signature.hash_alg)} over "
                f"the values in selection order is {expected_digest.hex()}, the TPM signed "
                f"{attest.pcr_digest.hex()}): a PCR value was altered"
            )
        if len(attest.extra_data) != QUALIFYING_DATA_SIZE:
            raise AttestationError(f"the quote's qualifying data is {len(attest.extra_data)} bytes, not the "
                                   f"{QUALIFYING_DATA_SIZE}-byte SHA-256 of the report data pyasylo's attester puts "
                                   f"there")
        clock = attest.clock_info
        return TpmLaunchIdentity(
            pcrs=values,
            ak_fingerprint=fingerprint,
            ak_name=ak.name,
            ak_algorithm=ak.algorithm,
            clock=clock.clock,
            reset_count=clock.reset_count,
            restart_count=clock.restart_count,
            safe=clock.safe,
            firmware_version=attest.firmware_version,
            qualified_signer=attest.qualified_signer,
            report_data=attest.extra_data,
        )


def _attestation_key(ak: TpmPublic) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The AK as a `cryptography` key, once its attributes and scheme are those of an attestation key."""
    for attribute, why in AK_REQUIRED_ATTRIBUTES.items():
        if not ak.has(attribute):
            raise AttestationError(f"the TPM attestation key lacks the attribute {why}; its attributes are "
                                   f"{', '.join(ak.attribute_names) or 'none'}")
    if ak.has(TPMA_OBJECT_DECRYPT):
        raise AttestationError("the TPM attestation key has the attribute decrypt: a restricted key is a signing key "
                               "or a decryption key, never both (Part 2, 8.3.3.11)")
    schemes = AK_SCHEMES[ak.type]
    if ak.scheme not in schemes:
        allowed = " or ".join(sorted(algorithm_name(scheme) for scheme in schemes))
        raise AttestationError(f"the TPM attestation key's scheme is {algorithm_name(ak.scheme)}, not {allowed} (a "
                               f"restricted signing key names the scheme it signs with)")
    if ak.scheme_hash not in SIGNATURE_HASHES:
        raise AttestationError(f"the TPM attestation key's scheme hash is {algorithm_name(ak.scheme_hash)}, not "
                               f"{_signature_hash_names()}")
    if ak.type == TPM_ALG_RSA and ak.rsa_key_bits not in RSA_KEY_BITS:
        raise AttestationError(f"the TPM attestation key is RSA-{ak.rsa_key_bits}, not one of "
                               f"{', '.join(f'RSA-{bits}' for bits in sorted(RSA_KEY_BITS))}")
    if ak.type == TPM_ALG_ECC and ak.curve not in ECC_CURVES:
        known = ", ".join(curve.name for curve in ECC_CURVES.values())
        raise AttestationError(f"the TPM attestation key's curve is {ak.curve:#06x}, not one of {known}")
    return ak.public_key()


def _signature_hash_names() -> str:
    return " or ".join(sorted(algorithm_name(alg) for alg in SIGNATURE_HASHES))


def _check_signature(ak: TpmPublic, key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey, signature: TpmSignature,
                     attest: bytes) -> None:
    # A TPM signs with a restricted key only in the key's own scheme (Part 3, TPM2_Quote: inScheme must be
    # TPM_ALG_NULL or equal to the key's), so a signature in any other scheme or hash is not the TPM's.
    if signature.sig_alg != ak.scheme or signature.hash_alg != ak.scheme_hash:
        raise AttestationError(
            f"the quote's signature is {algorithm_name(signature.sig_alg)}/{algorithm_name(signature.hash_alg)}, not "
            f"the attestation key's scheme {algorithm_name(ak.scheme)}/{algorithm_name(ak.scheme_hash)}"
        )
    digest = hash_algorithm(signature.hash_alg, "TPMT_SIGNATURE's hash").cryptography_hash()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if len(signature.rsa_signature) != key.key_size // 8:
                raise AttestationError(f"the quote's RSA signature is {len(signature.rsa_signature)} bytes, not the "
                                       f"{key.key_size // 8} of the attestation key's modulus")
            if signature.sig_alg == TPM_ALG_RSASSA:
                key.verify(signature.rsa_signature, attest, padding.PKCS1v15(), digest)
            else:
                # Salt length AUTO: libtpms salts with the digest's length, older TPM firmware with the largest
                # the key allows; the salt's length does not change what the signature proves.
                key.verify(signature.rsa_signature, attest,
                           padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.AUTO), digest)
        else:
            size = ECC_CURVES[ak.curve].size
            if not 0 < len(signature.ecdsa_r) <= size or not 0 < len(signature.ecdsa_s) <= size:
                raise AttestationError(f"the quote's ECDSA signature has r of {len(signature.ecdsa_r)} and s of "
                                       f"{len(signature.ecdsa_s)} bytes, not values of a {size}-byte curve")
            der = encode_dss_signature(int.from_bytes(signature.ecdsa_r, "big"),
                                       int.from_bytes(signature.ecdsa_s, "big"))
            key.verify(der, attest, ec.ECDSA(digest))
    except InvalidSignature:
        raise AttestationError(
            f"the quote's {algorithm_name(signature.sig_alg)} signature does not verify over its TPMS_ATTEST with the "
            f"attestation key: the quote or its signature was altered"
        ) from None


def _check_pcr_values(attest: QuoteAttest,
                      pcrs: Sequence[identity_pb2.TpmPcrValue]) -> tuple[tuple[int, int, bytes], ...]:
    """The PCR values, once they are exactly the quote's selection, in its order, each of its bank's size."""
    banks = [selection.hash_alg for selection in attest.pcr_selections]
    for bank in set(banks):
        if banks.count(bank) > 1:
            raise AttestationError(f"the quote selects bank {algorithm_name(bank)} {banks.count(bank)} times")
    selected = [(selection.hash_alg, index) for selection in attest.pcr_selections for index in selection.indices]
    if not selected:
        raise AttestationError("the quote selects no PCRs: it attests nothing about the machine's boot state")
    given = [(value.hash_alg, value.index) for value in pcrs]
    if given != selected:
        raise AttestationError(
            f"the PCR values carried are for {_describe_pcrs(given)}, but the quote selects "
            f"{_describe_selections(attest.pcr_selections)}: they must be the selected PCRs, in selection order"
        )
    values = []
    for value in pcrs:
        size = hash_algorithm(value.hash_alg, f"the bank of PCR {value.index}").digest_size
        if len(value.value) != size:
            raise AttestationError(f"the value of {algorithm_name(value.hash_alg)} PCR {value.index} is "
                                   f"{len(value.value)} bytes, not {size}")
        values.append((value.hash_alg, value.index, value.value))
    return tuple(values)


def _describe_pcrs(pcrs: list[tuple[int, int]]) -> str:
    if not pcrs:
        return "no PCRs"
    groups: list[tuple[int, list[int]]] = []
    for bank, index in pcrs:
        if groups and groups[-1][0] == bank:
            groups[-1][1].append(index)
        else:
            groups.append((bank, [index]))
    return "+".join(f"{algorithm_name(bank)}:{','.join(map(str, indices))}" for bank, indices in groups)


def _describe_selections(selections: Iterable[PcrSelection]) -> str:
    return "+".join(selection.describe() for selection in selections)

