"""The AWS Nitro Enclaves attestation document: a COSE_Sign1 (RFC 8152) whose payload is a CBOR map of the enclave's
PCRs, the NSM's certificate and CA bundle, a timestamp and the guest's user data, nonce and public key.

This module only parses: every field's type and size is checked against AWS's specification (aws-nitro-enclaves-nsm-api,
docs/attestation_process.md, "Attestation Document Specification" and "Syntactical Validation") before anything
uses it. Whether the document is genuine (certificate chain, signature, freshness) is `asylo.identity.nitro.verifier`'s
business.

The CBOR is read by `decode_cbor`, a strict decoder of the subset AWS uses (integers, byte and text strings, arrays,
maps, false/true/null, definite lengths only), not by cbor2: cbor2 decodes its built-in semantic tags (dates, MIME
messages, regular expressions, shared references that make cycles, ...) before a `tag_hook` ever sees them, and keeps
the last of duplicate map keys, where a signed document with two values for one key must be refused, not read one way
here and another way elsewhere. Here every tag but COSE_Sign1's 18 at the top is refused, and so are duplicate keys,
floats, indefinite lengths and nesting deeper than the format has.
"""

from __future__ import annotations

import base64
import binascii
import datetime
from dataclasses import dataclass

import cbor2

from asylo.identity.x509chain import MAX_CHAIN_LENGTH
from asylo.status import AttestationError, InvalidArgumentError

#: CBOR tag of a tagged COSE_Sign1 (RFC 8152 section 2); the NSM sends the document untagged, AWS's docs show it tagged.
COSE_SIGN1_TAG = 18
#: COSE algorithm ES384 (ECDSA with SHA-384, RFC 8152 table 5): the only one AWS signs attestation documents with.
COSE_ALG_ES384 = -35
#: COSE header label of the algorithm parameter (RFC 8152 table 2).
COSE_HEADER_ALG = 1
#: An ES384 signature is r || s, each 48 bytes big-endian (RFC 8152 section 8.1 with P-384).
ES384_SIGNATURE_SIZE = 96
#: The protected header AWS sends is the 4-byte map {1: -35}; a header larger than this is not AWS's.
MAX_PROTECTED_HEADER_SIZE = 64
#: AWS: the payload is `bstr .size (1..16384)` (attestation_process.md, section 3.1).
MAX_PAYLOAD_SIZE = 16384
#: The payload plus the COSE framing: protected header, empty unprotected map, 96-byte signature and the array and
#: string headers come to about 110 bytes; 512 leaves room without letting a multi-megabyte blob be parsed.
MAX_DOCUMENT_SIZE = MAX_PAYLOAD_SIZE + 512
#: A document file holds the document as base64 text (4/3 of its size) with any line breaks and indentation;
#: four times the document's bound is more than any such file and still small.
MAX_DOCUMENT_FILE_SIZE = 4 * MAX_DOCUMENT_SIZE
#: AWS: `pcrs` has between 1 and 32 entries, indices in [0, 32) (section 3.2.2.2).
MAX_PCR_COUNT = 32
PCR_INDEX_LIMIT = 32
#: AWS: `digest` is exactly "SHA384", so every PCR is a SHA-384 value of 48 bytes (the spec's 32 and 64 belong to
#: digests the NSM does not use in attestation documents).
PCR_SIZE_BY_DIGEST = {"SHA384": 48}
PCR_SIZE = PCR_SIZE_BY_DIGEST["SHA384"]
#: AWS: `cert = bytes .size (1..1024)` for the signing certificate and each CA bundle entry (section 2.2, 3.2.2.2).
MAX_DOCUMENT_CERTIFICATE_SIZE = 1024
#: The CA bundle plus the leaf must fit the chain walker's limit (AWS sends 4 CA certificates: root, regional,
#: zonal, instance).
MAX_CABUNDLE_LENGTH = MAX_CHAIN_LENGTH - 1
#: AWS: `user_data = bytes .size (0..1024)` is the type of user_data, nonce and public_key (section 2.2). The
#: syntactical-validation section says 512 for user_data and nonce, but the NSM accepts and signs 1024 (the genuine
#: test vector carries 1024 bytes in each), so 1024 it is.
MAX_USER_DATA_SIZE = 1024
MAX_NONCE_SIZE = 1024
MAX_PUBLIC_KEY_SIZE = 1024
#: AWS's module ids are "i-<17 hex>-enc<16 hex>" (39 characters); the spec gives no bound, 256 leaves ample room.
MAX_MODULE_ID_LENGTH = 256
#: The last millisecond Python's datetime can represent (9999-12-31T23:59:59.999Z); AWS says `uint .size 8`, but a
#: timestamp past this is no time at all.
MAX_TIMESTAMP_MS = 253402300799999
#: AWS's structures nest three deep (the NSM response: map -> map -> bytes; the payload: map -> map -> bytes); one
#: more level of room, and recursion stays bounded whatever the input.
MAX_CBOR_NESTING = 4

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MANDATORY_FIELDS = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL_FIELDS = ("public_key", "user_data", "nonce")
_SIG_STRUCTURE_CONTEXT = "Signature1"
# CBOR major types (RFC 8949 section 3.1).
_UNSIGNED, _NEGATIVE, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_SIMPLE_VALUES: dict[int, object] = {20: False, 21: True, 22: None}


class _Decoder:
    """One pass over `data`: every declared length is checked against the bytes left before it is read."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def fail(self, reason: str) -> AttestationError:
        return AttestationError(f"{self._what} is not valid CBOR of the kind AWS sends: {reason} (at byte {self._pos})")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, size: int) -> bytes:
        if size > self.remaining:
            raise self.fail(f"an item of {size} bytes where only {self.remaining} remain")
        chunk = self._data[self._pos:self._pos + size]
        self._pos += size
        return chunk

    def head(self) -> tuple[int, int, int]:
        """The next item's major type, additional information and argument."""
        initial = self.take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, info
        if info <= 27:
            return major, info, int.from_bytes(self.take(1 << (info - 24)), "big")
        if info == 31:
            raise self.fail("an indefinite-length item (AWS uses definite lengths only)")
        raise self.fail(f"reserved additional information {info}")

    def item(self, depth: int) -> object:
        if depth > MAX_CBOR_NESTING:
            raise self.fail(f"items nested more than {MAX_CBOR_NESTING} deep")
        major, info, argument = self.head()
        if major == _UNSIGNED:
            return argument
        if major == _NEGATIVE:
            return -1 - argument
        if major == _BYTES:
            return self.take(argument)
        if major == _TEXT:
            try:
                return self.take(argument).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("a text string that is not UTF-8") from None
        if major == _ARRAY:
            # Every item takes at least one byte: a count beyond what is left is a lie, refused before looping.
            if argument > self.remaining:
                raise self.fail(f"an array of {argument} items in {self.remaining} bytes")
            return [self.item(depth + 1) for _ in range(argument)]
        if major == _MAP:
            return self.map(argument, depth)
        if major == _TAG:
            raise self.fail(f"CBOR tag {argument} (no tag is allowed here)")
        if info in _SIMPLE_VALUES:
            return _SIMPLE_VALUES[info]
        raise self.fail("a float or a simple value other than false, true and null")

    def map(self, count: int, depth: int) -> dict[int | str, object]:
        if count > self.remaining // 2:
            raise self.fail(f"a map of {count} entries in {self.remaining} bytes")
        result: dict[int | str, object] = {}
        for _ in range(count):
            key = self.item(depth + 1)
            # bool is an int to Python, and True == 1 would collide with the key 1.
            if not isinstance(key, int | str) or isinstance(key, bool):
                raise self.fail(f"a map key of type {_type_name(key)} (only integers and text strings)")
            if key in result:
                raise self.fail(f"the map key {key!r} twice")
            result[key] = self.item(depth + 1)
        return result


def decode_cbor(data: bytes, what: str, *, allowed_tag: int | None = None) -> object:
    """The single CBOR item that is all of `data`: int, bytes, str, list, dict (int or str keys), bool or None.

    `allowed_tag` is the one tag accepted around the whole item (COSE_Sign1's 18); any other tag, anywhere, is
    refused. AttestationError naming `what` if `data` is anything else, has trailing bytes or nests too deep.
    """
    decoder = _Decoder(data, what)
    if allowed_tag is not None and data[:1] and data[0] >> 5 == _TAG:
        _, _, tag = decoder.head()
        if tag != allowed_tag:
            raise decoder.fail(f"CBOR tag {tag} (only {allowed_tag} is allowed around it)")
    value = decoder.item(0)
    if decoder.remaining:
        raise decoder.fail(f"{decoder.remaining} bytes after the end of the item")
    return value


@dataclass(frozen=True)
class AttestationDocument:
    """A Nitro attestation document whose structure and field sizes are valid; nothing here is verified yet.

    `protected`, `payload` and `signature` are the COSE_Sign1's raw parts, which the signature check needs as they
    were sent. `pcrs` is sorted by index. The optional fields are None when absent or null.
    """

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: tuple[tuple[int, bytes], ...]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    protected: bytes
    payload: bytes
    signature: bytes

    @property
    def timestamp(self) -> datetime.datetime:
        """When the NSM made the document, an aware UTC time with its milliseconds."""
        return _EPOCH + datetime.timedelta(milliseconds=self.timestamp_ms)

    def sig_structure(self) -> bytes:
        """The bytes the signature covers: RFC 8152's Sig_structure ["Signature1", protected, external_aad,
        payload] with an empty external_aad, as AWS signs it."""
        return cbor2.dumps([_SIG_STRUCTURE_CONTEXT, self.protected, b"", self.payload])


def parse_document(data: bytes) -> AttestationDocument:
    """Parse a COSE_Sign1 attestation document (untagged as the NSM sends it, or with tag 18).

    AttestationError naming the first part that is malformed, of the wrong type or out of AWS's bounds.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"an attestation document is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_SIZE:
        raise AttestationError(f"the attestation document is {len(data)} bytes, over the limit of {MAX_DOCUMENT_SIZE}")
    cose = decode_cbor(data, "the attestation document", allowed_tag=COSE_SIGN1_TAG)
    if not isinstance(cose, list) or len(cose) != 4:
        raise AttestationError(f"the attestation document is not a COSE_Sign1 (an array of 4 items): it is "
                               f"{_describe(cose)}")
    protected, unprotected, payload, signature = cose
    protected = _bytes_field(protected, "the COSE protected header", 1, MAX_PROTECTED_HEADER_SIZE)
    _check_protected_header(protected)
    if not isinstance(unprotected, dict):
        raise AttestationError(f"the COSE unprotected header is {_describe(unprotected)}, not a map")
    if unprotected:
        # AWS sends none, and nothing in it would be covered by the signature.
        raise AttestationError(f"the COSE unprotected header is not empty (labels {sorted(map(str, unprotected))})")
    payload = _bytes_field(payload, "the COSE payload", 1, MAX_PAYLOAD_SIZE)
    signature = _bytes_field(signature, "the COSE signature", ES384_SIGNATURE_SIZE, ES384_SIGNATURE_SIZE)
    fields = decode_cbor(payload, "the attestation document payload")
    if not isinstance(fields, dict):
        raise AttestationError(f"the attestation document payload is {_describe(fields)}, not a map")
    _check_field_names(fields)
    digest = fields["digest"]
    if not isinstance(digest, str) or digest not in PCR_SIZE_BY_DIGEST:
        shown = repr(digest[:32]) if isinstance(digest, str) else _describe(digest)
        raise AttestationError(f"the document's digest is {shown}, expected one of {sorted(PCR_SIZE_BY_DIGEST)}")
    timestamp = fields["timestamp"]
    if not _is_int(timestamp) or not 0 < timestamp <= MAX_TIMESTAMP_MS:
        raise AttestationError(f"the document's timestamp is {_describe(timestamp)}, not milliseconds since 1970 in "
                               f"1..{MAX_TIMESTAMP_MS}")
    cabundle = fields["cabundle"]
    if not isinstance(cabundle, list) or not 1 <= len(cabundle) <= MAX_CABUNDLE_LENGTH:
        raise AttestationError(f"the document's cabundle is {_describe(cabundle)}, not an array of 1 to "
                               f"{MAX_CABUNDLE_LENGTH} certificates")
    return AttestationDocument(
        module_id=_text_field(fields["module_id"], "module_id", 1, MAX_MODULE_ID_LENGTH),
        digest=digest,
        timestamp_ms=timestamp,
        pcrs=_pcrs_field(fields["pcrs"], PCR_SIZE_BY_DIGEST[digest]),
        certificate=_bytes_field(fields["certificate"], "the document's certificate", 1,
                                 MAX_DOCUMENT_CERTIFICATE_SIZE),
        cabundle=tuple(_bytes_field(entry, f"the document's cabundle[{index}]", 1, MAX_DOCUMENT_CERTIFICATE_SIZE)
                       for index, entry in enumerate(cabundle)),
        public_key=_optional_bytes(fields, "public_key", MAX_PUBLIC_KEY_SIZE),
        user_data=_optional_bytes(fields, "user_data", MAX_USER_DATA_SIZE),
        nonce=_optional_bytes(fields, "nonce", MAX_NONCE_SIZE),
        protected=protected,
        payload=payload,
        signature=signature,
    )


def decode_document_file(data: bytes) -> bytes:
    """The raw CBOR of a document file: base64 text (whitespace anywhere ignored, as in the test vectors) or the
    CBOR itself (it starts with a 4-item array or tag 18, which no base64 text does). Not parsed further."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"a document file is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_DOCUMENT_FILE_SIZE:
        raise AttestationError(f"the attestation document file is {len(data)} bytes, over the limit of "
                               f"{MAX_DOCUMENT_FILE_SIZE}")
    if data[:1] in (b"\x84", b"\xd2"):  # array(4) or tag(18): raw COSE_Sign1
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttestationError(f"the attestation document file is neither CBOR nor base64 text: {exc}") from None


def _check_protected_header(protected: bytes) -> None:
    header = decode_cbor(protected, "the COSE protected header")
    if not isinstance(header, dict):
        raise AttestationError(f"the COSE protected header is {_describe(header)}, not a map")
    alg = header.get(COSE_HEADER_ALG)
    if not _is_int(alg) or alg != COSE_ALG_ES384:
        raise AttestationError(f"the COSE protected header's algorithm is {_describe(alg)}, expected "
                               f"{COSE_ALG_ES384} (ES384)")
    if len(header) != 1:
        # A parameter such as crit would change what the signature means; AWS sends the algorithm alone.
        raise AttestationError(f"the COSE protected header has parameters besides the algorithm "
                               f"(labels {sorted(map(str, header))})")


def _check_field_names(fields: dict[int | str, object]) -> None:
    unknown = [key for key in fields if key not in _MANDATORY_FIELDS + _OPTIONAL_FIELDS]
    if unknown:
        raise AttestationError(f"the attestation document has fields AWS's specification does not: {unknown!r}")
    for name in _MANDATORY_FIELDS:
        if name not in fields:
            raise AttestationError(f"the attestation document has no {name}")
        if fields[name] is None:
            raise AttestationError(f"the attestation document's {name} is null")


def _pcrs_field(value: object, size: int) -> tuple[tuple[int, bytes], ...]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_PCR_COUNT:
        raise AttestationError(f"the document's pcrs is {_describe(value)}, not a map of 1 to {MAX_PCR_COUNT} PCRs")
    pcrs = []
    for index, pcr in value.items():
        if not _is_int(index) or not 0 <= index < PCR_INDEX_LIMIT:
            shown = index if _is_int(index) else _describe(index)
            raise AttestationError(f"the document has a PCR index {shown}, not an integer in "
                                   f"0..{PCR_INDEX_LIMIT - 1}")
        pcrs.append((index, _bytes_field(pcr, f"the document's PCR{index}", size, size)))
    return tuple(sorted(pcrs))


def _optional_bytes(fields: dict[int | str, object], name: str, limit: int) -> bytes | None:
    value = fields.get(name)
    return None if value is None else _bytes_field(value, f"the document's {name}", 0, limit)


def _bytes_field(value: object, what: str, minimum: int, maximum: int) -> bytes:
    if not isinstance(value, bytes):
        raise AttestationError(f"{what} is {_describe(value)}, not a byte string")
    if not minimum <= len(value) <= maximum:
        bound = f"{minimum}" if minimum == maximum else f"{minimum} to {maximum}"
        raise AttestationError(f"{what} is {len(value)} bytes, expected {bound}")
    return value


def _text_field(value: object, name: str, minimum: int, maximum: int) -> str:
    if not isinstance(value, str):
        raise AttestationError(f"the document's {name} is {_describe(value)}, not a text string")
    if not minimum <= len(value) <= maximum:
        raise AttestationError(f"the document's {name} is {len(value)} characters, expected {minimum} to {maximum}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _describe(value: object) -> str:
    """A short account of an untrusted value for a message: its type and size, never its whole content."""
    if isinstance(value, bytes | str | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    if _is_int(value) and isinstance(value, int) and abs(value) < 10**20:
        return f"the integer {value}"
    return _type_name(value)
