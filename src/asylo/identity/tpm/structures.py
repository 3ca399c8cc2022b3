"""TPM 2.0 marshalled structures a host needs to check a quote, parsed from untrusted bytes.

The layouts are the TCG's "Trusted Platform Module Library, Part 2: Structures" (Family 2.0, Level 00 Revision 01.59;
section numbers below are that revision's, and each table keeps its name across revisions). A TPM marshals every
integer big-endian and every variable-length buffer as a TPM2B: a UINT16 size, then that many bytes, each with an
upper bound the specification names ("{:sizeof(TPMT_HA)}"). Parsing here reads no byte before checking that it is
inside the buffer, refuses a size above the specification's bound before it reads the buffer, refuses union selectors
it does not know (it could not tell where the next field starts) and refuses bytes after the end of the structure,
so one structure has one encoding. Every failure is an `AttestationError` naming the structure and field.

Three structures are read: TPMS_ATTEST of a quote (`parse_attest`), TPMT_SIGNATURE (`parse_signature`) and
TPMT_PUBLIC of an RSA or ECC key (`parse_public`, which also gives the key as a `cryptography` public key and its TPM
Name). Nothing here is authenticated: that is `asylo.identity.tpm.verifier`'s business.

Bounds that the specification leaves to the implementation (how many PCRs, the largest RSA or ECC key) take the
values of the TCG's TSS 2.0 headers (tss2_tpm2_types.h in tpm2-tss: TPM2_MAX_PCRS, TPM2_NUM_PCR_BANKS,
TPM2_MAX_RSA_KEY_BYTES, TPM2_MAX_ECC_KEY_BYTES), which every TPM the TSS talks to fits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from asylo.status import AttestationError, InvalidArgumentError

# --- constants (Part 2, clause 6) ------------------------------------------------------------------------------------

#: Part 2, 6.2 TPM_GENERATED: the first four bytes of every structure the TPM signs for itself ("\xffTCG"). A
#: restricted signing key signs no external data that starts with it, which is what makes a quote's magic meaningful.
TPM_GENERATED_VALUE = 0xFF544347
#: Part 2, 6.9 TPM_ST (Table 19): the TPMS_ATTEST type of a TPM2_Quote.
TPM_ST_ATTEST_QUOTE = 0x8018
#: The other attestation types of Part 2, 6.9 (TPMI_ST_ATTEST, 10.12.10), named in refusals.
ATTEST_TYPE_NAMES: Mapping[int, str] = MappingProxyType({
    0x8014: "TPM_ST_ATTEST_NV", 0x8015: "TPM_ST_ATTEST_COMMAND_AUDIT", 0x8016: "TPM_ST_ATTEST_SESSION_AUDIT",
    0x8017: "TPM_ST_ATTEST_CERTIFY", 0x8018: "TPM_ST_ATTEST_QUOTE", 0x8019: "TPM_ST_ATTEST_TIME",
    0x801A: "TPM_ST_ATTEST_CREATION", 0x801C: "TPM_ST_ATTEST_NV_DIGEST",
})

# Part 2, 6.3 TPM_ALG_ID (Table 9; the values are the TCG Algorithm Registry's).
TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_HMAC = 0x0005
TPM_ALG_AES = 0x0006
TPM_ALG_MGF1 = 0x0007
TPM_ALG_KEYEDHASH = 0x0008
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_SM4 = 0x0013
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAES = 0x0015
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_OAEP = 0x0017
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECDH = 0x0019
TPM_ALG_ECDAA = 0x001A
TPM_ALG_SM2 = 0x001B
TPM_ALG_ECSCHNORR = 0x001C
TPM_ALG_ECMQV = 0x001D
TPM_ALG_KDF1_SP800_56A = 0x0020
TPM_ALG_KDF2 = 0x0021
TPM_ALG_KDF1_SP800_108 = 0x0022
TPM_ALG_ECC = 0x0023
TPM_ALG_SYMCIPHER = 0x0025
TPM_ALG_CAMELLIA = 0x0026

#: Names for refusals and for `TpmPublic.algorithm`.
ALGORITHM_NAMES: Mapping[int, str] = MappingProxyType({
    TPM_ALG_RSA: "rsa", TPM_ALG_SHA1: "sha1", TPM_ALG_HMAC: "hmac", TPM_ALG_AES: "aes", TPM_ALG_MGF1: "mgf1",
    TPM_ALG_KEYEDHASH: "keyedhash", TPM_ALG_SHA256: "sha256", TPM_ALG_SHA384: "sha384", TPM_ALG_SHA512: "sha512",
    TPM_ALG_NULL: "null", 0x0012: "sm3_256", TPM_ALG_SM4: "sm4", TPM_ALG_RSASSA: "rsassa", TPM_ALG_RSAES: "rsaes",
    TPM_ALG_RSAPSS: "rsapss", TPM_ALG_OAEP: "oaep", TPM_ALG_ECDSA: "ecdsa", TPM_ALG_ECDH: "ecdh",
    TPM_ALG_ECDAA: "ecdaa", TPM_ALG_SM2: "sm2", TPM_ALG_ECSCHNORR: "ecschnorr", TPM_ALG_ECMQV: "ecmqv",
    TPM_ALG_KDF1_SP800_56A: "kdf1_sp800_56a", TPM_ALG_KDF2: "kdf2", TPM_ALG_KDF1_SP800_108: "kdf1_sp800_108",
    TPM_ALG_ECC: "ecc", TPM_ALG_SYMCIPHER: "symcipher", TPM_ALG_CAMELLIA: "camellia", 0x0027: "sha3_256",
    0x0028: "sha3_384", 0x0029: "sha3_512",
})

# Part 2, 6.4 TPM_ECC_CURVE (Table 10).
TPM_ECC_NIST_P256 = 0x0003
TPM_ECC_NIST_P384 = 0x0004

# Part 2, 8.3.2 TPMA_OBJECT (Table 31): bit positions of the attributes a host checks on an attestation key.
TPMA_OBJECT_FIXED_TPM = 1 << 1
TPMA_OBJECT_FIXED_PARENT = 1 << 4
TPMA_OBJECT_SENSITIVE_DATA_ORIGIN = 1 << 5
TPMA_OBJECT_RESTRICTED = 1 << 16
TPMA_OBJECT_DECRYPT = 1 << 17
TPMA_OBJECT_SIGN = 1 << 18
#: The attribute names of Part 2, 8.3.3, by bit, for messages and `TpmPublic.attribute_names`.
OBJECT_ATTRIBUTE_NAMES: Mapping[int, str] = MappingProxyType({
    1 << 1: "fixedTPM", 1 << 2: "stClear", 1 << 4: "fixedParent", 1 << 5: "sensitiveDataOrigin",
    1 << 6: "userWithAuth", 1 << 7: "adminWithPolicy", 1 << 10: "noDA", 1 << 11: "encryptedDuplication",
    1 << 16: "restricted", 1 << 17: "decrypt", 1 << 18: "sign", 1 << 19: "x509sign",
})

# --- bounds ----------------------------------------------------------------------------------------------------------

#: Part 2, 10.3.1 TPMU_HA: the largest digest in the TCG Algorithm Registry is 64 bytes (SHA-512, SHA3-512), so a
#: TPM2B_DIGEST ({:sizeof(TPMU_HA)}, 10.4.2) is at most this long on any TPM.
MAX_DIGEST_SIZE = 64
#: Part 2, 10.3.2 TPMT_HA: a TPM_ALG_ID and the largest digest. TPM2B_DATA (10.4.3, {:sizeof(TPMT_HA)}) and
#: TPM2B_NAME (10.5.3, {:sizeof(TPMU_NAME)}, whose largest member is a TPMT_HA) are at most this long.
MAX_TPMT_HA_SIZE = 2 + MAX_DIGEST_SIZE
MAX_DATA_SIZE = MAX_TPMT_HA_SIZE
MAX_NAME_SIZE = MAX_TPMT_HA_SIZE
#: Part 2, 10.6.2 TPMS_PCR_SELECTION: sizeofSelect {:PCR_SELECT_MAX}, where PCR_SELECT_MAX = (IMPLEMENTATION_PCR+7)/8.
#: The TSS's TPM2_MAX_PCRS is 32, so 4 bytes; a PC Client TPM has 24 PCRs and sends 3.
MAX_PCRS = 32
PCR_SELECT_MAX = (MAX_PCRS + 7) // 8
#: Part 2, 10.9.7 TPML_PCR_SELECTION: count {:HASH_COUNT}, one selection per implemented hash; the TSS's
#: TPM2_NUM_PCR_BANKS is 16.
MAX_PCR_BANKS = 16
#: Part 2, 11.2.4.5 TPM2B_PUBLIC_KEY_RSA {:MAX_RSA_KEY_BYTES}: the TSS's TPM2_MAX_RSA_KEY_BYTES (RSA-4096).
MAX_RSA_KEY_BYTES = 512
#: Part 2, 11.2.5.1 TPM2B_ECC_PARAMETER {:MAX_ECC_KEY_BYTES}: the TSS's TPM2_MAX_ECC_KEY_BYTES.
MAX_ECC_KEY_BYTES = 128
#: Part 2, 12.2.3.5 TPMS_RSA_PARMS: an exponent of zero means the default, 2**16 + 1.
RSA_DEFAULT_EXPONENT = 65537

#: The longest TPMS_ATTEST of a quote (10.12.12 with 10.12.4): magic, type, qualifiedSigner, extraData,
#: TPMS_CLOCK_INFO (10.11.1: 8 + 4 + 4 + 1), firmwareVersion, a TPML_PCR_SELECTION of MAX_PCR_BANKS selections
#: (hash, sizeofSelect, pcrSelect) and the pcrDigest.
MAX_QUOTE_ATTEST_SIZE = (4 + 2 + (2 + MAX_NAME_SIZE) + (2 + MAX_DATA_SIZE) + 17 + 8
                         + 4 + MAX_PCR_BANKS * (2 + 1 + PCR_SELECT_MAX) + (2 + MAX_DIGEST_SIZE))
#: The longest TPMT_SIGNATURE read here (11.3.4): an ECC signature's two parameters outweigh an RSA one.
MAX_SIGNATURE_SIZE = 2 + 2 + max(2 + MAX_RSA_KEY_BYTES, 2 * (2 + MAX_ECC_KEY_BYTES))
#: The longest TPMT_PUBLIC read here (12.2.4): type, nameAlg, objectAttributes, authPolicy, the longest
#: parameters (ECC: symmetric with key bits and mode, an ECDAA scheme with its count, curve, a KDF with its hash)
#: and the longest unique (an RSA-4096 modulus).
MAX_PUBLIC_SIZE = 2 + 2 + 4 + (2 + MAX_DIGEST_SIZE) + (6 + 6 + 2 + 4) + (2 + MAX_RSA_KEY_BYTES)


# --- hash algorithms -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HashAlgorithm:
    """A TPMI_ALG_HASH this module can compute: its TPM_ALG_ID, name and digest size."""

    alg_id: int
    name: str
    digest_size: int

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.name, data).digest()

    def cryptography_hash(self) -> hashes.HashAlgorithm:
        return _CRYPTOGRAPHY_HASHES[self.name]()


#: The PCR banks and name algorithms this module reads: the four SHA-2/SHA-1 banks a TPM may allocate (the PC
#: Client profile requires SHA-256; SM3 and SHA-3 banks are refused, as neither is in every Python's hashlib).
HASH_ALGORITHMS: Mapping[int, HashAlgorithm] = MappingProxyType({
    TPM_ALG_SHA1: HashAlgorithm(TPM_ALG_SHA1, "sha1", 20),
    TPM_ALG_SHA256: HashAlgorithm(TPM_ALG_SHA256, "sha256", 32),
    TPM_ALG_SHA384: HashAlgorithm(TPM_ALG_SHA384, "sha384", 48),
    TPM_ALG_SHA512: HashAlgorithm(TPM_ALG_SHA512, "sha512", 64),
})
_CRYPTOGRAPHY_HASHES: Mapping[str, type[hashes.HashAlgorithm]] = MappingProxyType({
    "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
})


def algorithm_name(alg_id: int) -> str:
    """`sha256`, or `0x1234` for an id this module has no name for."""
    return ALGORITHM_NAMES.get(alg_id, f"{alg_id:#06x}")


def hash_algorithm(alg_id: int, what: str) -> HashAlgorithm:
    """The hash algorithm `alg_id` names; AttestationError saying `what` used an unknown one."""
    algorithm = HASH_ALGORITHMS.get(alg_id)
    if algorithm is None:
        known = ", ".join(algorithm.name for algorithm in HASH_ALGORITHMS.values())
        raise AttestationError(f"{what} is {algorithm_name(alg_id)}, not a hash algorithm this verifier computes "
                               f"({known})")
    return algorithm


def hash_algorithm_named(name: str) -> HashAlgorithm:
    """The hash algorithm called `name` ("sha256"); InvalidArgumentError for any other name."""
    for algorithm in HASH_ALGORITHMS.values():
        if algorithm.name == name:
            return algorithm
    known = ", ".join(repr(algorithm.name) for algorithm in HASH_ALGORITHMS.values())
    raise InvalidArgumentError(f"hash algorithm must be one of {known}, got {name!r}")


# --- the reader ------------------------------------------------------------------------------------------------------


class _Reader:
    """One pass over `data`, big-endian: each read checks the bytes left first, and names the field if they lack."""

    __slots__ = ("_data", "_pos", "_structure")

    def __init__(self, data: bytes, structure: str) -> None:
        self._data = data
        self._pos = 0
        self._structure = structure

    def fail(self, field: str, reason: str) -> AttestationError:
        return AttestationError(f"{self._structure}.{field}: {reason}")

    def take(self, size: int, field: str) -> bytes:
        left = len(self._data) - self._pos
        if size > left:
            raise self.fail(field, f"needs {size} bytes at offset {self._pos}, only {left} left (truncated)")
        chunk = self._data[self._pos:self._pos + size]
        self._pos += size
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def u32(self, field: str) -> int:
        return self.uint(4, field)

    def u64(self, field: str) -> int:
        return self.uint(8, field)

    def tpm2b(self, field: str, max_size: int) -> bytes:
        """A TPM2B: its UINT16 size, checked against the specification's bound before the buffer is read."""
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise self.fail(field, f"size {size} is over the bound of {max_size} bytes")
        return self.take(size, f"{field}.buffer")

    def end(self) -> None:
        extra = len(self._data) - self._pos
        if extra:
            raise AttestationError(f"{self._structure} has {extra} bytes after its end (at offset {self._pos}): one "
                                   f"structure has one encoding")


def _as_bytes(data: object, structure: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"a {structure} is bytes, got {type(data).__name__}")
    return bytes(data)


# --- TPMS_ATTEST -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """A TPMS_PCR_SELECTION (Part 2, 10.6.2): a bank (a TPM_ALG_ID) and the bitmap of PCRs selected in it, bit i of
    byte i // 8 for PCR i. A TPM clears the bits of PCRs and banks it does not have before it quotes, so a bank the TPM
    has not allocated appears with no bits set."""

    hash_alg: int
    select: bytes

    @property
    def indices(self) -> tuple[int, ...]:
        """The selected PCR indices, ascending: the order TPM2_Quote digests them in."""
        return tuple(index for index in range(len(self.select) * 8) if self.select[index // 8] >> (index % 8) & 1)

    def describe(self) -> str:
        """`sha256:0,1,2` (tpm2-tools' notation), `sha256:none` for an empty bitmap."""
        indices = self.indices
        return f"{algorithm_name(self.hash_alg)}:{','.join(map(str, indices)) if indices else 'none'}"


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2, 10.11.1): milliseconds the TPM has been powered since its clock was last set,
    TPM2_Startup(CLEAR)s and resets since then, resumes since the last reset, and whether the clock is known not to
    have gone backwards (safe). None of it is a wall time."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class QuoteAttest:
    """A TPMS_ATTEST (Part 2, 10.12.12) of type TPM_ST_ATTEST_QUOTE, with its TPMS_QUOTE_INFO (10.12.4) unpacked."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selections: tuple[PcrSelection, ...]
    pcr_digest: bytes


def parse_attest(data: bytes) -> QuoteAttest:
    """Parse the TPMS_ATTEST of a quote: magic TPM_GENERATED_VALUE, type TPM_ST_ATTEST_QUOTE, then its fields.

    AttestationError for another magic or type (a structure the TPM did not generate, or not a quote), a field out of
    its bound, truncation or trailing bytes.
    """
    raw = _as_bytes(data, "TPMS_ATTEST")
    if len(raw) > MAX_QUOTE_ATTEST_SIZE:
        raise AttestationError(f"TPMS_ATTEST is {len(raw)} bytes, over the {MAX_QUOTE_ATTEST_SIZE} a quote's can be")
    reader = _Reader(raw, "TPMS_ATTEST")
    magic = reader.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise reader.fail("magic", f"is {magic:#010x}, not TPM_GENERATED_VALUE {TPM_GENERATED_VALUE:#010x}: the TPM "
                                   f"did not generate this structure")
    attest_type = reader.u16("type")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        name = ATTEST_TYPE_NAMES.get(attest_type, "an unknown type")
        raise reader.fail("type", f"is {attest_type:#06x} ({name}), not TPM_ST_ATTEST_QUOTE "
                                  f"{TPM_ST_ATTEST_QUOTE:#06x}: this is not a quote")
    qualified_signer = reader.tpm2b("qualifiedSigner", MAX_NAME_SIZE)
    extra_data = reader.tpm2b("extraData", MAX_DATA_SIZE)
    clock = reader.u64("clockInfo.clock")
    reset_count = reader.u32("clockInfo.resetCount")
    restart_count = reader.u32("clockInfo.restartCount")
    safe = reader.u8("clockInfo.safe")
    if safe > 1:
        # Part 2, 9.2 TPMI_YES_NO: NO (0) or YES (1).
        raise reader.fail("clockInfo.safe", f"is {safe}, not a TPMI_YES_NO (0 or 1)")
    firmware_version = reader.u64("firmwareVersion")
    count = reader.u32("attested.quote.pcrSelect.count")
    if count > MAX_PCR_BANKS:
        raise reader.fail("attested.quote.pcrSelect.count", f"is {count}, over the bound of {MAX_PCR_BANKS} banks")
    selections = []
    for position in range(count):
        field = f"attested.quote.pcrSelect.pcrSelections[{position}]"
        hash_alg = reader.u16(f"{field}.hash")
        size = reader.u8(f"{field}.sizeofSelect")
        if size > PCR_SELECT_MAX:
            raise reader.fail(f"{field}.sizeofSelect", f"is {size}, over the bound of {PCR_SELECT_MAX} bytes")
        selections.append(PcrSelection(hash_alg, reader.take(size, f"{field}.pcrSelect")))
    pcr_digest = reader.tpm2b("attested.quote.pcrDigest", MAX_DIGEST_SIZE)
    reader.end()
    return QuoteAttest(
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=ClockInfo(clock, reset_count, restart_count, bool(safe)),
        firmware_version=firmware_version,
        pcr_selections=tuple(selections),
        pcr_digest=pcr_digest,
    )


def pcr_digest(selections: Sequence[PcrSelection], values: Sequence[bytes], hash_alg: int) -> bytes:
    """What TPM2_Quote puts in pcrDigest: the digest, with `hash_alg`, of the selected PCRs' values concatenated in
    selection order (each selection in turn, its PCRs by ascending index).

    `hash_alg` is the hash of the quote's signing scheme, not a bank's and not the key's nameAlg: TPM 2.0 Part 3,
    TPM2_Quote (18.4), and its reference code (TPMCmd/tpm/src/command/Attestation/Quote.c: `hashAlg =
    in->inScheme.details.any.hashAlg; PCRComputeCurrentDigest(hashAlg, &in->PCRselect, ...)`); tpm2-tools'
    tpm2_checkquote recomputes it with the hash from the TPMT_SIGNATURE likewise. `values` must hold one value of the
    bank's digest size per selected PCR (InvalidArgumentError otherwise: the verifier checks that first).
    """
    expected = [(selection.hash_alg, index) for selection in selections for index in selection.indices]
    if len(values) != len(expected):
        raise InvalidArgumentError(f"{len(values)} PCR values for a selection of {len(expected)} PCRs")
    digest = hashlib.new(hash_algorithm(hash_alg, "the PCR digest's hash").name)
    for (bank, index), value in zip(expected, values, strict=True):
        size = hash_algorithm(bank, f"the bank of PCR {index}").digest_size
        if not isinstance(value, bytes) or len(value) != size:
            raise InvalidArgumentError(f"the value of {algorithm_name(bank)} PCR {index} must be {size} bytes")
        digest.update(value)
    return digest.digest()


# --- TPMT_SIGNATURE --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TpmSignature:
    """A TPMT_SIGNATURE (Part 2, 11.3.4) by an RSA or ECDSA key: the scheme, its hash, and for RSA the signature
    (TPMS_SIGNATURE_RSA, 11.3.1), for ECDSA r and s (TPMS_SIGNATURE_ECC, 11.3.2), each big-endian."""

    sig_alg: int
    hash_alg: int
    rsa_signature: bytes = b""
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""


def parse_signature(data: bytes) -> TpmSignature:
    """Parse a TPMT_SIGNATURE made with RSASSA, RSAPSS or ECDSA; AttestationError for any other scheme (a NULL
    signature, an HMAC a host cannot check, an ECDAA or SM2 signature this verifier does not implement), a parameter
    out of its bound, truncation or trailing bytes."""
    raw = _as_bytes(data, "TPMT_SIGNATURE")
    if len(raw) > MAX_SIGNATURE_SIZE:
        raise AttestationError(f"TPMT_SIGNATURE is {len(raw)} bytes, over the bound of {MAX_SIGNATURE_SIZE}")
    reader = _Reader(raw, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg == TPM_ALG_NULL:
        raise reader.fail("sigAlg", "is TPM_ALG_NULL: the quote is not signed")
    if sig_alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        hash_alg = reader.u16("signature.rsa.hash")
        signature = reader.tpm2b("signature.rsa.sig", MAX_RSA_KEY_BYTES)
        reader.end()
        return TpmSignature(sig_alg, hash_alg, rsa_signature=signature)
    if sig_alg == TPM_ALG_ECDSA:
        hash_alg = reader.u16("signature.ecdsa.hash")
        r = reader.tpm2b("signature.ecdsa.signatureR", MAX_ECC_KEY_BYTES)
        s = reader.tpm2b("signature.ecdsa.signatureS", MAX_ECC_KEY_BYTES)
        reader.end()
        return TpmSignature(sig_alg, hash_alg, ecdsa_r=r, ecdsa_s=s)
    raise reader.fail("sigAlg", f"is {algorithm_name(sig_alg)}; this verifier checks rsassa, rsapss and ecdsa "
                                f"signatures")


# --- TPMT_PUBLIC -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EccCurve:
    """A TPM_ECC_CURVE this module turns into a `cryptography` key."""

    curve_id: int
    name: str
    size: int

    def curve(self) -> ec.EllipticCurve:
        return ec.SECP256R1() if self.curve_id == TPM_ECC_NIST_P256 else ec.SECP384R1()


#: The curves of Part 2, 6.4 that AKs use: P-256 (tpm2_createak's ecc256) and P-384.
ECC_CURVES: Mapping[int, EccCurve] = MappingProxyType({
    TPM_ECC_NIST_P256: EccCurve(TPM_ECC_NIST_P256, "p256", 32),
    TPM_ECC_NIST_P384: EccCurve(TPM_ECC_NIST_P384, "p384", 48),
})
#: Part 2, 11.1.7 TPMT_SYM_DEF_OBJECT: a block cipher (TPMI_ALG_SYM_OBJECT, 9.30) carries keyBits and mode after it.
_SYMMETRIC_OBJECT_ALGORITHMS = frozenset({TPM_ALG_AES, TPM_ALG_SM4, TPM_ALG_CAMELLIA})
#: Part 2, 11.2.4.2 TPMT_RSA_SCHEME: the schemes whose details are a TPMS_SCHEME_HASH (RSAES's are empty).
_RSA_HASH_SCHEMES = frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS, TPM_ALG_OAEP})
#: Part 2, 11.2.5.6 TPMT_ECC_SCHEME: the schemes whose details are a TPMS_SCHEME_HASH (ECDAA's add a count).
_ECC_HASH_SCHEMES = frozenset({TPM_ALG_ECDSA, TPM_ALG_ECDH, TPM_ALG_SM2, TPM_ALG_ECSCHNORR, TPM_ALG_ECMQV})
#: Part 2, 11.2.3.3 TPMT_KDF_SCHEME: every KDF's details are a TPMS_SCHEME_HASH.
_KDF_SCHEMES = frozenset({TPM_ALG_MGF1, TPM_ALG_KDF1_SP800_56A, TPM_ALG_KDF2, TPM_ALG_KDF1_SP800_108})


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """A TPMT_PUBLIC (Part 2, 12.2.4) of an RSA or ECC key, exactly as marshalled (`raw`), with its fields.

    `scheme` and `scheme_hash` are TPM_ALG_NULL when the key has no scheme. RSA keys have `rsa_key_bits`,
    `rsa_exponent` (as marshalled: 0 means 65537) and `rsa_modulus`; ECC keys `curve`, `kdf`, `ecc_x` and `ecc_y`.
    """

    raw: bytes
    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    symmetric: int
    scheme: int
    scheme_hash: int
    rsa_key_bits: int = 0
    rsa_exponent: int = 0
    rsa_modulus: bytes = b""
    curve: int = 0
    kdf: int = TPM_ALG_NULL
    ecc_x: bytes = b""
    ecc_y: bytes = b""

    @property
    def name(self) -> bytes:
        """The key's TPM Name: nameAlg (UINT16) || H_nameAlg(TPMT_PUBLIC) (Part 1, "Names"; Part 2, 12.2.4), what
        TPM2_MakeCredential binds a credential to and what qualifiedSigner is derived from."""
        return self.name_alg.to_bytes(2, "big") + hash_algorithm(self.name_alg, "the key's nameAlg").digest(self.raw)

    def has(self, attribute: int) -> bool:
        return bool(self.object_attributes & attribute)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """The TPMA_OBJECT attributes set, by name (bits this module has no name for as `bit N`)."""
        return tuple(OBJECT_ATTRIBUTE_NAMES.get(1 << bit, f"bit {bit}")
                     for bit in range(32) if self.object_attributes >> bit & 1)

    @property
    def algorithm(self) -> str:
        """The key and its scheme in one word: `rsa2048-rsassa-sha256`, `ecc-p256-ecdsa-sha256`."""
        if self.type == TPM_ALG_RSA:
            key = f"rsa{self.rsa_key_bits}"
        else:
            curve = ECC_CURVES.get(self.curve)
            key = f"ecc-{curve.name if curve is not None else f'{self.curve:#06x}'}"
        if self.scheme == TPM_ALG_NULL:
            return f"{key}-noscheme"
        return f"{key}-{algorithm_name(self.scheme)}-{algorithm_name(self.scheme_hash)}"

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as `cryptography` sees it; AttestationError if the numbers do not make a valid key (a modulus of
        another size than keyBits says, an even exponent, a point off the curve)."""
        if self.type == TPM_ALG_RSA:
            if self.rsa_key_bits % 8 or len(self.rsa_modulus) != self.rsa_key_bits // 8:
                raise AttestationError(f"TPMT_PUBLIC.unique.rsa is {len(self.rsa_modulus)} bytes, not the "
                                       f"{self.rsa_key_bits} bits parameters.rsaDetail.keyBits says")
            modulus = int.from_bytes(self.rsa_modulus, "big")
            if modulus.bit_length() != self.rsa_key_bits:
                raise AttestationError(f"the RSA modulus has {modulus.bit_length()} bits, not {self.rsa_key_bits}")
            exponent = self.rsa_exponent or RSA_DEFAULT_EXPONENT
            try:
                return rsa.RSAPublicNumbers(exponent, modulus).public_key()
            except ValueError as exc:
                raise AttestationError(f"TPMT_PUBLIC is not a valid RSA public key: {exc}") from None
        curve = ECC_CURVES.get(self.curve)
        if curve is None:
            known = ", ".join(curve.name for curve in ECC_CURVES.values())
            raise AttestationError(f"TPMT_PUBLIC.parameters.eccDetail.curveID is {self.curve:#06x}, not a curve this "
                                   f"verifier reads ({known})")
        for coordinate, value in (("x", self.ecc_x), ("y", self.ecc_y)):
            # The TPM pads each coordinate to the curve's size; one longer is not a coordinate of this curve.
            if not 0 < len(value) <= curve.size:
                raise AttestationError(f"TPMT_PUBLIC.unique.ecc.{coordinate} is {len(value)} bytes, not a "
                                       f"{curve.name} coordinate ({curve.size} bytes)")
        try:
            return ec.EllipticCurvePublicNumbers(int.from_bytes(self.ecc_x, "big"), int.from_bytes(self.ecc_y, "big"),
                                                 curve.curve()).public_key()
        except ValueError as exc:
            raise AttestationError(f"TPMT_PUBLIC is not a valid {curve.name} public key: {exc}") from None


def parse_public(data: bytes) -> TpmPublic:
    """Parse a TPMT_PUBLIC (not a TPM2B_PUBLIC: no size in front) of an RSA or ECC key.

    AttestationError for another type (a keyed hash or symmetric object has no public key to verify with), a
    nameAlg this module cannot compute, an unknown selector in the parameters, a field out of its bound,
    truncation or trailing bytes.
    """
    raw = _as_bytes(data, "TPMT_PUBLIC")
    if len(raw) > MAX_PUBLIC_SIZE:
        raise AttestationError(f"TPMT_PUBLIC is {len(raw)} bytes, over the bound of {MAX_PUBLIC_SIZE}")
    reader = _Reader(raw, "TPMT_PUBLIC")
    key_type = reader.u16("type")
    if key_type not in (TPM_ALG_RSA, TPM_ALG_ECC):
        raise reader.fail("type", f"is {algorithm_name(key_type)}, not an rsa or ecc key")
    name_alg = reader.u16("nameAlg")
    hash_algorithm(name_alg, "TPMT_PUBLIC.nameAlg")
    attributes = reader.u32("objectAttributes")
    auth_policy = reader.tpm2b("authPolicy", MAX_DIGEST_SIZE)
    detail = "parameters.rsaDetail" if key_type == TPM_ALG_RSA else "parameters.eccDetail"
    symmetric = reader.u16(f"{detail}.symmetric.algorithm")
    if symmetric in _SYMMETRIC_OBJECT_ALGORITHMS:
        reader.u16(f"{detail}.symmetric.keyBits")
        reader.u16(f"{detail}.symmetric.mode")
    elif symmetric != TPM_ALG_NULL:
        raise reader.fail(f"{detail}.symmetric.algorithm", f"is {algorithm_name(symmetric)}, not a "
                                                          f"TPMI_ALG_SYM_OBJECT (aes, sm4, camellia or null)")
    scheme = reader.u16(f"{detail}.scheme.scheme")
    scheme_hash = TPM_ALG_NULL
    if key_type == TPM_ALG_RSA:
        if scheme in _RSA_HASH_SCHEMES:
            scheme_hash = reader.u16(f"{detail}.scheme.details.hashAlg")
        elif scheme not in (TPM_ALG_RSAES, TPM_ALG_NULL):
            raise reader.fail(f"{detail}.scheme.scheme", f"is {algorithm_name(scheme)}, not an RSA scheme")
        key_bits = reader.u16(f"{detail}.keyBits")
        exponent = reader.u32(f"{detail}.exponent")
        modulus = reader.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES)
        reader.end()
        return TpmPublic(raw=raw, type=key_type, name_alg=name_alg, object_attributes=attributes,
                         auth_policy=auth_policy, symmetric=symmetric, scheme=scheme, scheme_hash=scheme_hash,
                         rsa_key_bits=key_bits, rsa_exponent=exponent, rsa_modulus=modulus)
    if scheme in _ECC_HASH_SCHEMES:
        scheme_hash = reader.u16(f"{detail}.scheme.details.hashAlg")
    elif scheme == TPM_ALG_ECDAA:
        scheme_hash = reader.u16(f"{detail}.scheme.details.hashAlg")
        reader.u16(f"{detail}.scheme.details.count")
    elif scheme != TPM_ALG_NULL:
        raise reader.fail(f"{detail}.scheme.scheme", f"is {algorithm_name(scheme)}, not an ECC scheme")
    curve = reader.u16(f"{detail}.curveID")
    kdf = reader.u16(f"{detail}.kdf.scheme")
    if kdf in _KDF_SCHEMES:
        reader.u16(f"{detail}.kdf.details.hashAlg")
    elif kdf != TPM_ALG_NULL:
        raise reader.fail(f"{detail}.kdf.scheme", f"is {algorithm_name(kdf)}, not a key derivation function")
    x = reader.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)
    y = reader.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)
    reader.end()
    return TpmPublic(raw=raw, type=key_type, name_alg=name_alg, object_attributes=attributes, auth_policy=auth_policy,
                     symmetric=symmetric, scheme=scheme, scheme_hash=scheme_hash, curve=curve, kdf=kdf, ecc_x=x,
                     ecc_y=y)
