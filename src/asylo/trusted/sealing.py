"""Sealing: data encrypted inside the enclave so that only an enclave with the right identity, on the same
platform, can read it again — the way an enclave keeps secrets on an untrusted host's disk.

    blob = self.seal(key)                                     # SealPolicy.MEASUREMENT: exactly this build
    blob = self.seal(key, SealPolicy.SIGNER, aad=b"db-key")   # any build of this signer + product id
    key = self.unseal(blob, aad=b"db-key")

The blob (version 2; integers big-endian) is self-describing, so `unseal` needs nothing but the blob:

    magic        4   b"ASLD"
    version      2   2 (version 1 derived SIGNER keys without the SVN; its blobs no longer open)
    policy       1   1 = MEASUREMENT, 2 = SIGNER
    platform   1+n   n (1..32), then the platform kind in ASCII ("sim")
    binding          the identity fields the sealing key is bound to:
                       MEASUREMENT: measurement (32)
                       SIGNER:      signer (32) || product id (u32) || debug (u8)
    svn          4   the sealing enclave's SVN (SIGNER: the SVN the key is bound to)
    salt        32   random, this blob's HKDF salt
    nonce       12   random, the AES-GCM nonce
    ciphertext || 16-byte tag

Everything up to the nonce is the header. It is authenticated, not encrypted: the AES-GCM AAD is header || the
caller's aad, so changing the policy, the binding, the SVN, the salt or the nonce makes the blob fail to open.

**A key per blob.** The key that encrypts is HKDF-SHA256(ikm = the platform's sealing key for the policy, this
enclave's own identity and the header's SVN, salt = the blob's 32 random bytes, info = "asylo-seal-v2" || policy),
used for one blob only. `seal` asks the platform for the key of the enclave's own SVN; `unseal` for the key of the
blob's SVN, which the platform gives only if it is not above the enclave's own (MEASUREMENT keys ignore the SVN: the
measurement covers it). The platform's sealing key is long-lived: used directly with random 96-bit nonces it would
be good for about 2**32 blobs before a nonce collision (which in GCM gives away the authentication key) becomes a
real risk. With a fresh key per blob each GCM key encrypts exactly one message, so no number of blobs ever brings
two under one key and nonce, and the platform key itself never meets AES (key separation). The price is 32 bytes per
blob. The salt, not the nonce, separates the keys: 256 random bits leave no birthday bound worth counting.

**What unseal refuses, and how.** Checked on the header, before any decryption, so the answer is precise:
`PermissionDeniedError` for a well-formed blob that is not this enclave's to read — sealed for another measurement
(MEASUREMENT), another signer, product id or debug setting (SIGNER), another platform kind, or by an enclave with a
higher SVN than this one (no rollback: an old version, perhaps with a known flaw, does not get what a newer version
sealed). Forging the header does not get around this: the key comes from *this* enclave's identity and the header's
SVN, so a blob whose header was rewritten to name us, or to lower its SVN, fails to authenticate. `DataLossError`
for everything that does not authenticate or is not a blob at all: altered bytes, a wrong aad, a blob from another
machine's platform (another root secret, indistinguishable from tampering by design), garbage, truncation, an
unknown version, over the size bound. Callers' mistakes on `seal` (data too large, not bytes) are
`InvalidArgumentError`; an enclave without a platform gets `FailedPreconditionError` from both.

**Rollback is refused in the key, not only here.** The SVN check above only gives the precise error: the
platform binds each SIGNER key to an SVN and refuses the key of an SVN above the enclave's own (as SGX's EGETKEY
does), so an older enclave whose code skipped the check still cannot derive a newer blob's key.

**Limits.** The simulated platform enforces that through its API only: it is not a boundary against code in the same
process (see asylo.identity.sim). Sealing does not stop the host from deleting a blob, from returning an older blob
of the same name (replay), or from returning one name's blob for another; bind the name with `aad` (as the
quickstart does) to refuse the swap, and keep a version counter inside the sealed data where replay matters.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asylo.identity import MEASUREMENT_SIZE, SIGNER_SIZE, EnclaveIdentity, Platform, SealPolicy
from asylo.primitives.selectors import MAX_SEALED_BLOB_SIZE
from asylo.status import (
    AsyloError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
)

MAGIC = b"ASLD"
SEALED_BLOB_VERSION = 2
SALT_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
_KEY_SIZE = 32  # AES-256 only: one key size, nothing to negotiate
_KEY_INFO = b"asylo-seal-v2\0"
_MAX_PLATFORM_KIND = 32  # platform kinds are short protocol names (see asylo.identity.identity)

_POLICY_CODES = {SealPolicy.MEASUREMENT: 1, SealPolicy.SIGNER: 2}
_POLICY_BY_CODE = {code: policy for policy, code in _POLICY_CODES.items()}
_BINDING_SIZES = {SealPolicy.MEASUREMENT: MEASUREMENT_SIZE, SealPolicy.SIGNER: SIGNER_SIZE + 4 + 1}

#: The largest header (the longest platform kind and binding): the per-blob overhead is at most this plus the tag.
MAX_HEADER_SIZE = len(MAGIC) + 2 + 1 + 1 + _MAX_PLATFORM_KIND + max(_BINDING_SIZES.values()) + 4 + SALT_SIZE \
    + NONCE_SIZE
#: The most `seal` takes: whatever it makes must fit the host's sealed-blob store (MAX_SEALED_BLOB_SIZE).
MAX_SEAL_DATA_SIZE = MAX_SEALED_BLOB_SIZE - MAX_HEADER_SIZE - TAG_SIZE
#: The most additional data `seal`/`unseal` take: a label or a name, not a payload.
MAX_SEAL_AAD_SIZE = 64 * 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")

Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class SealedHeader:
    """The authenticated, unencrypted header of a sealed blob: what it was sealed for, and how."""

    policy: SealPolicy
    platform: str
    #: The identity fields the key is bound to, encoded as `binding_for(policy, identity)` gives them.
    binding: bytes
    svn: int
    salt: bytes
    nonce: bytes

    def encode(self) -> bytes:
        kind = self.platform.encode("ascii")
        return b"".join((MAGIC, _U16.pack(SEALED_BLOB_VERSION), bytes([_POLICY_CODES[self.policy], len(kind)]),
                         kind, self.binding, _U32.pack(self.svn), self.salt, self.nonce))

    def describe(self) -> str:
        """Who may unseal, in words, for error messages."""
        if self.policy is SealPolicy.MEASUREMENT:
            return f"measurement {self.binding.hex()}"
        signer, product_id, debug = _split_signer_binding(self.binding)
        return f"signer {signer.hex()} product_id {product_id}{' (debug)' if debug else ''}"


def binding_for(policy: SealPolicy, identity: EnclaveIdentity) -> bytes:
    """The identity fields a `policy` key is bound to (as the platform binds them), in the header's encoding."""
    if policy is SealPolicy.MEASUREMENT:
        return identity.measurement
    return identity.signer + _U32.pack(identity.product_id) + bytes([identity.debug])


def seal(platform: Platform | None, data: Bytes, policy: SealPolicy = SealPolicy.MEASUREMENT,
         aad: Bytes = b"") -> bytes:
    """Seal `data` for the enclave `platform` runs, under `policy`; `aad` must be given again to unseal."""
    platform = _require(platform)
    if not isinstance(policy, SealPolicy):
        raise InvalidArgumentError(f"seal policy must be a SealPolicy (MEASUREMENT or SIGNER), got {policy!r}")
    plaintext = _bytes(data, "sealed data", MAX_SEAL_DATA_SIZE, InvalidArgumentError)
    extra = _bytes(aad, "seal aad", MAX_SEAL_AAD_SIZE, InvalidArgumentError)
    identity = platform.identity
    header = SealedHeader(policy, identity.platform, binding_for(policy, identity), identity.svn,
                          os.urandom(SALT_SIZE), os.urandom(NONCE_SIZE))
    encoded = header.encode()
    key = _blob_key(platform, header)
    return encoded + AESGCM(key).encrypt(header.nonce, plaintext, encoded + extra)


def unseal(platform: Platform | None, blob: Bytes, aad: Bytes = b"") -> bytes:
    """The data in `blob`, if this enclave may read it and it authenticates with `aad` (see the module doc)."""
    platform = _require(platform)
    raw = _bytes(blob, "sealed blob", MAX_SEALED_BLOB_SIZE, DataLossError)
    extra = _bytes(aad, "unseal aad", MAX_SEAL_AAD_SIZE, InvalidArgumentError)
    header, header_size = parse_header(raw)
    identity = platform.identity
    if header.platform != identity.platform:
        raise PermissionDeniedError(f"the blob was sealed on platform {header.platform!r}; this enclave runs on "
                                    f"{identity.platform!r}")
    if header.binding != binding_for(header.policy, identity):
        mine = SealedHeader(header.policy, identity.platform, binding_for(header.policy, identity), identity.svn,
                            b"", b"")
        raise PermissionDeniedError(f"the blob was sealed ({header.policy.value} policy) for {header.describe()}; "
                                    f"this enclave is {mine.describe()}")
    if header.svn > identity.svn:  # the platform refuses this key too: here for the precise error
        raise PermissionDeniedError(f"the blob was sealed by SVN {header.svn}, this enclave is SVN {identity.svn}: "
                                    f"an older version may not read what a newer one sealed (rollback refused)")
    try:
        return AESGCM(_blob_key(platform, header)).decrypt(header.nonce, raw[header_size:],
                                                           raw[:header_size] + extra)
    except InvalidTag:
        raise DataLossError("the sealed blob does not authenticate: it was altered, the aad differs, or it was "
                            "sealed on another machine's platform") from None


def parse_header(blob: bytes) -> tuple[SealedHeader, int]:
    """The header of `blob` and its size; `DataLossError` if `blob` is not a sealed blob this runtime reads.

    Nothing here is verified: the header is authenticated only when the blob is unsealed.
    """
    cursor = _Cursor(blob)
    if cursor.take(len(MAGIC)) != MAGIC:
        raise DataLossError("not a sealed blob (no sealed-blob magic at its start)")
    version = _U16.unpack(cursor.take(2))[0]
    if version != SEALED_BLOB_VERSION:
        raise DataLossError(f"sealed blob version {version} is not supported (this runtime reads version "
                            f"{SEALED_BLOB_VERSION})")
    code, kind_size = cursor.take(2)
    policy = _POLICY_BY_CODE.get(code)
    if policy is None:
        raise DataLossError(f"sealed blob has an unknown policy code {code}")
    if not 0 < kind_size <= _MAX_PLATFORM_KIND:
        raise DataLossError(f"sealed blob platform kind is {kind_size} bytes (1..{_MAX_PLATFORM_KIND} allowed)")
    try:
        kind = cursor.take(kind_size).decode("ascii")
    except UnicodeDecodeError:
        raise DataLossError("sealed blob platform kind is not ASCII") from None
    binding = cursor.take(_BINDING_SIZES[policy])
    svn = _U32.unpack(cursor.take(4))[0]
    header = SealedHeader(policy, kind, binding, svn, cursor.take(SALT_SIZE), cursor.take(NONCE_SIZE))
    if len(blob) - cursor.position < TAG_SIZE:
        raise DataLossError("sealed blob is truncated (shorter than its authentication tag)")
    return header, cursor.position


def check_sealed(blob: Bytes, what: str) -> bytes:
    """`blob` as bytes if it has the form of a sealed blob; `InvalidArgumentError` naming `what` if not.

    For the enclave's own outgoing data (what it stores on the host): a guard against sending plaintext by mistake,
    not a verification.
    """
    try:
        raw = _bytes(blob, what, MAX_SEALED_BLOB_SIZE, DataLossError)
        parse_header(raw)
    except DataLossError as exc:
        raise InvalidArgumentError(f"{what} must be a blob made by seal(): {exc.message}") from None
    return raw


class _Cursor:
    __slots__ = ("_data", "position")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self._data):
            raise DataLossError(f"sealed blob is truncated ({len(self._data)} bytes)")
        chunk = self._data[self.position:end]
        self.position = end
        return chunk


def _split_signer_binding(binding: bytes) -> tuple[bytes, int, bool]:
    return binding[:SIGNER_SIZE], _U32.unpack(binding[SIGNER_SIZE:SIGNER_SIZE + 4])[0], bool(binding[-1])


def _require(platform: Platform | None) -> Platform:
    if platform is None:
        raise FailedPreconditionError("sealing needs a platform: this enclave was loaded without one")
    return platform


def _bytes(value: object, what: str, limit: int, error: type[AsyloError]) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"{what} must be bytes, got {type(value).__name__}")
    size = value.nbytes if isinstance(value, memoryview) else len(value)
    if size > limit:
        raise error(f"{what} is {size} bytes, over the limit of {limit}")
    return bytes(value)


def _blob_key(platform: Platform, header: SealedHeader) -> bytes:
    # The header's SVN: the own SVN when sealing, the blob's when unsealing (refused by the platform if higher).
    root = platform.sealing_key(header.policy, platform.identity, svn=header.svn)
    info = _KEY_INFO + header.policy.value.encode("ascii")
    return HKDF(algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=header.salt, info=info).derive(root)
