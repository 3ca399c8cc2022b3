"""asylo.crypto: X25519 key shares, session key derivation, and the AES-256-GCM record layer."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from asylo.crypto import (
    ENCLAVE_TO_HOST,
    HOST_TO_ENCLAVE,
    MAX_RECORDS,
    TAG_SIZE,
    KeyShare,
    RecordError,
    RecordOpener,
    RecordSealer,
    SessionKeys,
    derive_session_keys,
)
from asylo.status import DataLossError, InvalidArgumentError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
DIRECTION = b"host->enclave"

# Low-order X25519 points (and their non-canonical encodings), as listed by libsodium and RFC 7748's errata:
# exchanging with any of them gives the all-zero secret that an attacker would know.
LOW_ORDER_POINTS = [
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        # The same points with the top bit set, which X25519 ignores.
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
]


def pair(key: bytes = KEY, direction: bytes = DIRECTION) -> tuple[RecordSealer, RecordOpener]:
    return RecordSealer(key, direction), RecordOpener(key, direction)


def assert_dead(opener: RecordOpener, sealer_for_next: RecordSealer | None = None) -> None:
    """Every later open fails, including of a record that would otherwise be the right next one."""
    with pytest.raises(RecordError):
        opener.open(b"\0" * 64)
    if sealer_for_next is not None:
        with pytest.raises(RecordError, match="closed"):
            opener.open(sealer_for_next.seal(b"valid"))


# --- key shares ---------------------------------------------------------------------------------------------------


def test_key_shares_agree_and_differ_per_handshake() -> None:
    host, enclave = KeyShare.generate(), KeyShare.generate()
    assert len(host.public) == 32
    secret = host.exchange(enclave.public)
    assert secret == enclave.exchange(host.public)
    assert len(secret) == 32
    assert secret != bytes(32)
    other = KeyShare.generate()
    assert other.public != host.public
    assert other.exchange(enclave.public) != secret


def test_key_share_accepts_buffers() -> None:
    host, enclave = KeyShare.generate(), KeyShare.generate()
    assert host.exchange(memoryview(enclave.public)) == host.exchange(bytearray(enclave.public))


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_key_share_refuses_low_order_points(point: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="low-order"):
        KeyShare.generate().exchange(point)


@pytest.mark.parametrize("peer", [b"", b"\x09" * 31, b"\x09" * 33, "09" * 32, None], ids=repr)
def test_key_share_refuses_malformed_peer_keys(peer: object) -> None:
    with pytest.raises(InvalidArgumentError, match="peer key share"):
        KeyShare.generate().exchange(peer)  # type: ignore[arg-type]


def test_key_share_repr_shows_only_the_public_key() -> None:
    share = KeyShare.generate()
    assert repr(share) == f"KeyShare(public={share.public.hex()})"


# --- session keys -------------------------------------------------------------------------------------------------


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out independently of the code under test."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_session_keys_are_hkdf_of_secret_and_transcript() -> None:
    secret, transcript = os.urandom(32), hashlib.sha256(b"transcript").digest()
    keys = derive_session_keys(secret, transcript)
    okm = hkdf_sha256(secret, transcript, b"asylo-session-v1 keys", 64)
    assert keys.host_to_enclave == okm[:32]
    assert keys.enclave_to_host == okm[32:]


def test_both_sides_derive_the_same_keys() -> None:
    host, enclave = KeyShare.generate(), KeyShare.generate()
    transcript = hashlib.sha256(b"hello|welcome").digest()
    host_keys = derive_session_keys(host.exchange(enclave.public), transcript)
    enclave_keys = derive_session_keys(enclave.exchange(host.public), transcript)
    assert host_keys == enclave_keys
    assert host_keys.host_to_enclave != host_keys.enclave_to_host
    host_sealer, host_opener = host_keys.for_host()
    enclave_sealer, enclave_opener = enclave_keys.for_enclave()
    assert enclave_opener.open(host_sealer.seal(b"call")) == b"call"
    assert host_opener.open(enclave_sealer.seal(b"result")) == b"result"


def test_different_transcripts_or_secrets_give_different_keys() -> None:
    secret = os.urandom(32)
    a = derive_session_keys(secret, hashlib.sha256(b"a").digest())
    b = derive_session_keys(secret, hashlib.sha256(b"b").digest())
    c = derive_session_keys(os.urandom(32), hashlib.sha256(b"a").digest())
    keys = {a.host_to_enclave, a.enclave_to_host, b.host_to_enclave, b.enclave_to_host, c.host_to_enclave}
    assert len(keys) == 5


def test_session_keys_repr_hides_the_keys() -> None:
    keys = derive_session_keys(os.urandom(32), os.urandom(32))
    text = repr(keys)
    assert keys.host_to_enclave.hex() not in text
    assert str(keys.host_to_enclave) not in text
    assert keys.enclave_to_host.hex() not in text
    assert str(keys.enclave_to_host) not in text


@pytest.mark.parametrize(
    ("secret", "transcript"),
    [(b"s" * 31, b"t" * 32), (b"s" * 32, b"t" * 31), (b"s" * 32, b""), ("s" * 32, b"t" * 32)],
)
def test_session_key_inputs_are_checked(secret: bytes, transcript: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        derive_session_keys(secret, transcript)


def test_session_keys_must_be_32_bytes() -> None:
    with pytest.raises(InvalidArgumentError):
        SessionKeys(host_to_enclave=b"k" * 16, enclave_to_host=b"k" * 32)


# --- records ------------------------------------------------------------------------------------------------------


def test_records_round_trip_in_order() -> None:
    sealer, opener = pair()
    messages = [b"", b"x", os.urandom(1000), os.urandom(70_000)]
    records = [sealer.seal(m) for m in messages]
    assert [len(r) for r in records] == [len(m) + TAG_SIZE for m in messages]
    assert sealer.sequence == len(messages)
    assert [opener.open(r) for r in records] == messages
    assert opener.sequence == len(messages)


def test_record_format_is_the_documented_one() -> None:
    """Nonce = 96-bit big-endian sequence number, AAD = direction || 64-bit big-endian sequence number."""
    sealer, _ = pair()
    records = [sealer.seal(b"payload %d" % i) for i in range(3)]
    for seq, record in enumerate(records):
        expected = AESGCM(KEY).encrypt(seq.to_bytes(12, "big"), b"payload %d" % seq, DIRECTION + seq.to_bytes(8, "big"))
        assert record == expected


def test_the_same_plaintext_seals_differently_each_time() -> None:
    sealer, _ = pair()
    assert sealer.seal(b"same") != sealer.seal(b"same")


def test_memoryviews_and_bytearrays() -> None:
    sealer, opener = pair()
    data = bytearray(os.urandom(4096))
    record = sealer.seal(memoryview(data)[100:200])
    assert opener.open(memoryview(record)) == bytes(data[100:200])
    record = sealer.seal(data)
    assert opener.open(bytearray(record)) == bytes(data)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=256), data=st.data())
def test_a_flipped_bit_anywhere_kills_the_opener(payload: bytes, data: st.DataObject) -> None:
    sealer, opener = pair()
    record = bytearray(sealer.seal(payload))
    bit = data.draw(st.integers(0, len(record) * 8 - 1))
    record[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(RecordError, match="does not authenticate"):
        opener.open(bytes(record))
    assert_dead(opener, sealer)


def test_replayed_record() -> None:
    sealer, opener = pair()
    first = sealer.seal(b"one")
    assert opener.open(first) == b"one"
    with pytest.raises(RecordError):
        opener.open(first)
    assert_dead(opener, sealer)


def test_reordered_records() -> None:
    sealer, opener = pair()
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    with pytest.raises(RecordError):
        opener.open(second)
    with pytest.raises(RecordError):
        opener.open(first)  # the right one now, but the opener is dead
    assert_dead(opener)


def test_dropped_record() -> None:
    sealer, opener = pair()
    sealer.seal(b"lost")
    with pytest.raises(RecordError):
        opener.open(sealer.seal(b"next"))
    assert_dead(opener, sealer)


@pytest.mark.parametrize("cut", [1, TAG_SIZE, 5])
def test_truncated_record(cut: int) -> None:
    sealer, opener = pair()
    record = sealer.seal(b"some payload")
    with pytest.raises(RecordError):
        opener.open(record[:-cut])
    assert_dead(opener, sealer)


@pytest.mark.parametrize("record", [b"", b"\0" * (TAG_SIZE - 1)], ids=["empty", "shorter-than-tag"])
def test_too_short_record(record: bytes) -> None:
    sealer, opener = pair()
    with pytest.raises(RecordError, match="shorter than"):
        opener.open(record)
    assert_dead(opener, sealer)


def test_extended_record() -> None:
    sealer, opener = pair()
    with pytest.raises(RecordError):
        opener.open(sealer.seal(b"payload") + b"\0")
    assert_dead(opener, sealer)


def test_wrong_key() -> None:
    sealer = RecordSealer(KEY, DIRECTION)
    opener = RecordOpener(OTHER_KEY, DIRECTION)
    with pytest.raises(RecordError):
        opener.open(sealer.seal(b"payload"))
    assert_dead(opener, RecordSealer(OTHER_KEY, DIRECTION))


def test_wrong_direction_label() -> None:
    """Even under one key, a record sealed for one direction does not open in the other (no reflection)."""
    sealer = RecordSealer(KEY, HOST_TO_ENCLAVE)
    opener = RecordOpener(KEY, ENCLAVE_TO_HOST)
    with pytest.raises(RecordError):
        opener.open(sealer.seal(b"payload"))
    assert_dead(opener)


def test_a_reflected_record_does_not_open_on_its_sender() -> None:
    keys = derive_session_keys(os.urandom(32), os.urandom(32))
    host_sealer, host_opener = keys.for_host()
    with pytest.raises(RecordError):
        host_opener.open(host_sealer.seal(b"to the enclave"))


def test_record_error_is_data_loss() -> None:
    assert issubclass(RecordError, DataLossError)


def test_sequence_refuses_to_wrap() -> None:
    sealer, opener = pair()
    sealer._seq = MAX_RECORDS - 1
    opener._seq = MAX_RECORDS - 1
    last = sealer.seal(b"last")
    assert opener.open(last) == b"last"
    assert last == AESGCM(KEY).encrypt(
        (MAX_RECORDS - 1).to_bytes(12, "big"), b"last", DIRECTION + (MAX_RECORDS - 1).to_bytes(8, "big")
    )
    with pytest.raises(RecordError, match="exhausted"):
        sealer.seal(b"one too many")
    with pytest.raises(RecordError):
        sealer.seal(b"and after that")
    with pytest.raises(RecordError, match="exhausted"):
        opener.open(last)
    assert_dead(opener)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 24, b"k" * 33, "k" * 32])
def test_only_aes_256_keys(key: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        RecordSealer(key, DIRECTION)
    with pytest.raises(InvalidArgumentError):
        RecordOpener(key, DIRECTION)


@pytest.mark.parametrize("direction", [b"", b"d" * 65, "host->enclave"])
def test_direction_label_is_checked(direction: bytes) -> None:
    with pytest.raises(InvalidArgumentError):
        RecordSealer(KEY, direction)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=5))
def test_sealing_parts_into_a_buffer_makes_the_same_record(parts: list[bytes]) -> None:
    """`seal_into` (the direct stream's large fragments: no join, no fresh buffer) makes exactly the record `seal`
    makes of the joined parts, under the same sequence numbers, and the opener opens it."""
    key = os.urandom(32)
    joined, parted, opener = RecordSealer(key, b"h2e"), RecordSealer(key, b"h2e"), RecordOpener(key, b"h2e")
    size = sum(len(part) for part in parts)
    out = bytearray(size + 16 + 15 + 7)
    for _ in range(2):
        length = parted.seal_into(parts, memoryview(out))
        assert bytes(out[:length]) == joined.seal(b"".join(parts))
        assert opener.open(out[:length]) == b"".join(parts)


def test_sealing_into_too_small_a_buffer_is_refused_before_a_number_is_spent() -> None:
    key = os.urandom(32)
    sealer, opener = RecordSealer(key, b"h2e"), RecordOpener(key, b"h2e")
    with pytest.raises(InvalidArgumentError, match="needs 131 bytes of room"):
        sealer.seal_into([b"x" * 100], memoryview(bytearray(130)))
    assert opener.open(sealer.seal(b"next")) == b"next"  # the refused call took no sequence number
