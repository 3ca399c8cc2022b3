"""The attested handshake: the host learns which enclave it talks to before it sends anything, and both ends get
session keys that only they hold.

    host                                              enclave
    key share H, nonce N      -- Hello(token, load config, limits, H, N) -->
                                                      key share E; T = transcript(hello, E, welcome fields)
                              <-- Welcome(measurement, signer, name, limits; E, evidence(report data = T)) --
    verify evidence: trusted platform, expected identity, report data == T (so: fresh, and bound to H and E)
    both: keys = HKDF(X25519(H, E), salt = T) -> one AES-256-GCM key per direction

The transcript covers the whole hello frame as sent (token, load config, limits, H, N) and every field of the
welcome but the handshake itself (measurement, signer, name, negotiated limits; deterministically encoded), so a
man in the middle who rewrites any of them makes the evidence fail to verify rather than, say, shrinking the
session's limits or misnaming the enclave.

The evidence proves that a genuine enclave with the stated identity made key share E for this very hello: a proxy
in the middle could replay old evidence, but not for its own key share and the host's fresh nonce. Verifying is
the host's `verify` callable (asylo.identity's EvidenceVerifier with the host's expectation, in practice); making
evidence is the enclave's `attest` (its platform). Both are plain functions, so this module, like the rest of the
session core, does no I/O.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import DecodeError

from asylo.crypto import KEY_SHARE_SIZE, KeyShare, RecordChannel, SessionKeys, derive_session_keys
from asylo.proto import session_pb2
from asylo.status import AttestationError, InvalidArgumentError

_DOMAIN = b"asylo-handshake-v1\0"
NONCE_SIZE = 32
#: A welcome's handshake holds a key share and evidence: a few hundred bytes on sim, up to asylo.identity's
#: MAX_EVIDENCE_SIZE (64 KiB) on hardware (a TDX quote with its collateral is about 21 KiB). The welcome is never
#: fragmented, so a host takes a welcome this large whatever its max_frame_size (Session.largest_frame).
MAX_HANDSHAKE_SIZE = 72 * 1024
#: What a hello or welcome frame holds besides its handshake: a token, a load config, a name, ids and limits.
HANDSHAKE_FRAME_OVERHEAD = 8 * 1024

#: (evidence, report data) -> the verified identity (any object; the session only passes it on). Raises
#: AttestationError when the evidence does not prove what the host expects.
Verify = Callable[[bytes, bytes], object]
#: report data (64 bytes) -> evidence from the enclave's platform.
Attest = Callable[[bytes], bytes]


def transcript_hash(hello_frame: bytes, enclave_share: bytes, welcome_fields: bytes) -> bytes:
    """The 64 bytes the evidence's report data must equal: SHA-512 over the hello frame (which holds the host's key
    share and nonce), the enclave's key share and the welcome's other fields, each length-prefixed."""
    digest = hashlib.sha512(_DOMAIN)
    for part in (hello_frame, enclave_share, welcome_fields):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def session_keys(shared_secret: bytes, transcript: bytes) -> SessionKeys:
    """Both directions' keys: HKDF over the X25519 secret, salted with (a digest of) the transcript."""
    return derive_session_keys(shared_secret, hashlib.sha256(transcript).digest())


class HostHandshake:
    """The host's side: offers a key share and nonce, and accepts only a welcome that `verify` accepts."""

    def __init__(self, verify: Verify) -> None:
        self._verify = verify
        self._share = KeyShare.generate()
        self._nonce = os.urandom(NONCE_SIZE)

    def offer(self) -> bytes:
        """The hello's handshake field."""
        return session_pb2.HandshakeHello(key_share=self._share.public, nonce=self._nonce).SerializeToString()

    def finish(self, answer: bytes, hello_frame: bytes, welcome_fields: bytes) -> tuple[RecordChannel, object]:
        """Check the welcome's handshake field; the host's records and the verified identity, or AttestationError."""
        if not answer:
            raise AttestationError("the proxy did not attest the enclave (its welcome has no evidence); it may be "
                                   "an older or a tampered proxy")
        try:
            welcome = _parse(session_pb2.HandshakeWelcome, answer)
        except InvalidArgumentError as exc:
            raise AttestationError(f"the enclave's handshake is malformed: {exc.message}") from None
        if len(welcome.key_share) != KEY_SHARE_SIZE or not welcome.evidence:
            raise AttestationError("the enclave's handshake is malformed")
        transcript = transcript_hash(hello_frame, welcome.key_share, welcome_fields)
        identity = self._verify(welcome.evidence, transcript)
        try:
            shared = self._share.exchange(welcome.key_share)
        except InvalidArgumentError as exc:
            raise AttestationError(f"the enclave's key share is unusable: {exc.message}") from None
        return session_keys(shared, transcript).for_host(), identity


class EnclaveHandshake:
    """The enclave's side: answers a host's offer with its own key share and evidence made by `attest`."""

    def __init__(self, attest: Attest) -> None:
        self._attest = attest

    def answer(self, offer: bytes, hello_frame: bytes, welcome_fields: bytes) -> tuple[bytes, RecordChannel]:
        """The welcome's handshake field and the enclave's records; InvalidArgumentError for a malformed offer."""
        hello = check_offer(offer)
        share = KeyShare.generate()
        shared = share.exchange(hello.key_share)
        transcript = transcript_hash(hello_frame, share.public, welcome_fields)
        evidence = self._attest(transcript)
        answer = session_pb2.HandshakeWelcome(key_share=share.public, evidence=evidence).SerializeToString()
        return answer, session_keys(shared, transcript).for_enclave()


def check_offer(offer: bytes) -> session_pb2.HandshakeHello:
    """The host's offer, parsed and checked; InvalidArgumentError if it is malformed."""
    hello = _parse(session_pb2.HandshakeHello, offer)
    if len(hello.key_share) != KEY_SHARE_SIZE or len(hello.nonce) != NONCE_SIZE:
        raise InvalidArgumentError("the host's handshake is malformed")
    return hello


_M = TypeVar("_M", session_pb2.HandshakeHello, session_pb2.HandshakeWelcome)


def _parse(kind: type[_M], data: bytes) -> _M:
    if len(data) > MAX_HANDSHAKE_SIZE:
        raise InvalidArgumentError(f"a handshake of {len(data)} bytes (at most {MAX_HANDSHAKE_SIZE})")
    try:
        return kind.FromString(data)
    except DecodeError:
        raise InvalidArgumentError("an undecodable handshake") from None
