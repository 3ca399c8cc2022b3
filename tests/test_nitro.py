"""The AWS Nitro Enclaves verifier, PCR expectations and NSM attester.

The genuine documents in tests/vectors/nitro (see PROVENANCE.md) are what the verifier must accept, each at its own
timestamp, and what flipped bits, other times and other expectations must make it refuse. Checks the genuine
documents cannot reach (another root, a wrong algorithm, wrong types that are still signed) use
tests/nitro_test_document.py, a TEST DOUBLE that signs documents in AWS's format with a chain made at test time.
The NSM's ioctl is only exercised where no NSM is (an absent device, a regular file, /dev/null); its request and
response encodings are tested on their own.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import zipfile
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from asylo.identity import EnclaveIdentity
from asylo.identity.launch import Endorsements
from asylo.identity.nitro import (
    AWS_NITRO_ROOT_G1_SHA256,
    DEFAULT_MAX_AGE,
    MAX_CLOCK_SKEW,
    MAX_DOCUMENT_SIZE,
    NSM_IOCTL_RAW,
    NSM_RESPONSE_MAX_SIZE,
    NitroLaunchIdentity,
    NitroPcrs,
    NitroQuoteVerifier,
    NitroSecureModule,
    decode_attestation_response,
    decode_document_file,
    encode_attestation_request,
    parse_document,
)
from asylo.identity.nitro.document import MAX_PAYLOAD_SIZE, decode_cbor
from asylo.status import AttestationError, FailedPreconditionError, InvalidArgumentError
from tests.nitro_test_document import ABSENT, DEFAULT_PCRS, TEST_MODULE_ID, TEST_ROOT_NAME, NitroTestPki, made_up_pcr

VECTORS = Path(__file__).parent / "vectors" / "nitro"
UTC = datetime.UTC
GENUINE = decode_document_file((VECTORS / "nitro_attestation.b64").read_bytes())
DEBUG = decode_document_file((VECTORS / "nitro_attestation_debug.b64").read_bytes())
#: The genuine documents' timestamps (1725719859545 and 1725719886508 ms), from the vectors' provenance.
GENUINE_TIME = datetime.datetime(2024, 9, 7, 14, 37, 39, 545000, tzinfo=UTC)
DEBUG_TIME = datetime.datetime(2024, 9, 7, 14, 38, 6, 508000, tzinfo=UTC)
#: Verifying "as of a few seconds after it was made", as a host that just received it would.
GENUINE_AT = GENUINE_TIME + datetime.timedelta(seconds=5)
DEBUG_AT = DEBUG_TIME + datetime.timedelta(seconds=5)
GENUINE_PCR0 = bytes.fromhex("e72a46ca80a260fb044a125442f0c7e331813bcbaf9724d9f3857758992766f2"
                             "d65710a27aa94ae3949dd54e7c9fe86a")
#: A fixed time for the test double's documents, so nothing depends on today's date.
DOUBLE_TIME = datetime.datetime(2025, 6, 1, 12, 0, 0, 250000, tzinfo=UTC)
DOUBLE_AT = DOUBLE_TIME + datetime.timedelta(seconds=5)
SECOND = datetime.timedelta(seconds=1)


def verify(document: bytes, *, at: datetime.datetime = GENUINE_AT, **options: object) -> NitroLaunchIdentity:
    return NitroQuoteVerifier(**options).verify(document, Endorsements(), at=at)  # type: ignore[arg-type]


def refused(document: bytes, match: str, *, at: datetime.datetime = GENUINE_AT, **options: object) -> None:
    with pytest.raises(AttestationError, match=match):
        verify(document, at=at, **options)


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1:]


@pytest.fixture(scope="module")
def pki() -> NitroTestPki:
    return NitroTestPki.create(DOUBLE_TIME)


# --- the genuine documents ------------------------------------------------------------------------------------------


def test_genuine_document_verifies_at_its_time() -> None:
    launch = verify(GENUINE)
    assert launch.kind == "nitro"
    assert launch.module_id == "i-0a22e5c5f24d22174-enc0191cceb4289903f"
    assert launch.digest == "SHA384"
    assert launch.timestamp == GENUINE_TIME
    assert [index for index, _ in launch.pcrs] == list(range(16))
    assert launch.pcr(0) == GENUINE_PCR0 and launch.pcr(16) is None
    assert launch.report_data == launch.nonce == launch.public_key == b"\x01" * 1024
    assert launch.debug is False
    assert launch.root == "AWS Nitro Enclaves Root-G1"
    assert launch.describe() == f"nitro enclave PCR0 {GENUINE_PCR0.hex()} (module {launch.module_id})"
    facts = launch.to_json()
    assert next(iter(facts)) == "kind" and facts["kind"] == "nitro"
    assert facts["timestamp"] == "2024-09-07T14:37:39.545+00:00"
    assert facts["pcrs"] == {str(index): value.hex() for index, value in launch.pcrs}
    assert facts["report_data"] == "01" * 1024
    # Frozen and hashable: a verified launch is a value.
    assert hash(launch) == hash(verify(GENUINE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        launch.debug = True  # type: ignore[misc]


def test_genuine_pcrs_are_accepted_by_nitro_pcrs() -> None:
    launch = verify(GENUINE)
    assert NitroPcrs(launch.pcr_map).launch_mismatch(launch) is None
    expectation = NitroPcrs({0: GENUINE_PCR0, 1: launch.pcr_map[1], 2: launch.pcr_map[2]})
    assert expectation.launch_mismatch(launch) is None
    # Through an enclave identity, as the host checks it; a sim identity has no launch and is refused.
    on_nitro = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="nitro", launch=launch)
    expectation.check(on_nitro)
    assert expectation.constrains_launch("nitro")
    simulated = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                                platform="sim")
    reason = expectation.mismatch(simulated)
    assert reason is not None and "expected a verified nitro launch, the enclave has no hardware launch" in reason


def test_debug_document_verifies_as_debug_and_needs_allow_debug() -> None:
    launch = verify(DEBUG, at=DEBUG_AT)
    assert launch.debug is True
    assert launch.pcr(0) == launch.pcr(1) == launch.pcr(2) == bytes(48)
    assert launch.timestamp == DEBUG_TIME
    assert launch.describe().endswith(", debug)")
    pcr4 = launch.pcr_map[4]
    reason = NitroPcrs({4: pcr4}).launch_mismatch(launch)
    assert reason is not None and "debug enclave (PCR0, PCR1 and PCR2 all zero)" in reason
    assert "allow_debug=True" in reason
    assert NitroPcrs({4: pcr4}, allow_debug=True).launch_mismatch(launch) is None
    assert NitroPcrs({0: bytes(48)}, allow_debug=True).launch_mismatch(launch) is None


def test_pinned_root_is_the_one_aws_distributes() -> None:
    archive = (VECTORS / "AWS_NitroEnclaves_Root-G1.zip").read_bytes()
    # The SHA-256 AWS publishes for the zip (attestation_process.md, "Attestation Document Definition").
    assert hashlib.sha256(archive).hexdigest() == "8cf60e2b2efca96c6a9e71e851d00c1b6991cc09eadbe64a6a1d1b1eb9faff7c"
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        root = x509.load_pem_x509_certificate(bundle.read("root.pem"))
    der = root.public_bytes(Encoding.DER)
    assert hashlib.sha256(der).digest() == AWS_NITRO_ROOT_G1_SHA256
    assert parse_document(GENUINE).cabundle[0] == der == parse_document(DEBUG).cabundle[0]


def test_document_file_forms() -> None:
    text = (VECTORS / "nitro_attestation.b64").read_bytes()
    wrapped = b"\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + b"\n"
    assert decode_document_file(wrapped) == decode_document_file(b"  " + text + b"\r\n") == GENUINE
    assert decode_document_file(GENUINE) == GENUINE
    assert len(GENUINE) == 7539
    # Tagged COSE_Sign1 (tag 18) is the same document: the tag is not signed.
    tagged = b"\xd2" + GENUINE
    assert decode_document_file(tagged) == tagged
    assert parse_document(tagged) == parse_document(GENUINE)
    assert verify(tagged) == verify(GENUINE)
    with pytest.raises(AttestationError, match="neither CBOR nor base64"):
        decode_document_file(b"not base64!")
    with pytest.raises(AttestationError, match="over the limit"):
        decode_document_file(b"A" * (4 * MAX_DOCUMENT_SIZE + 1))


# --- refusals of the genuine document -------------------------------------------------------------------------------


def test_flipped_signature_bit_is_refused() -> None:
    refused(flip_bit(GENUINE, len(GENUINE) - 1), "ES384 signature does not verify")
    refused(flip_bit(GENUINE, len(GENUINE) - 96, 7), "ES384 signature does not verify")


def test_flipped_pcr_bit_in_the_signed_payload_is_refused() -> None:
    offset = GENUINE.index(GENUINE_PCR0)
    assert GENUINE.count(GENUINE_PCR0) == 1
    tampered = flip_bit(GENUINE, offset + 10)
    # Still a well-formed document, with another PCR0: only the signature tells.
    assert dict(parse_document(tampered).pcrs)[0] != GENUINE_PCR0
    refused(tampered, "ES384 signature does not verify")


def test_changed_user_data_is_refused() -> None:
    offset = GENUINE.index(b"user_data") + len(b"user_data") + 3  # past the key and the bstr's 3-byte header
    tampered = GENUINE[:offset] + b"\x02" + GENUINE[offset + 1:]
    assert parse_document(tampered).user_data == b"\x02" + b"\x01" * 1023
    refused(tampered, "ES384 signature does not verify")


def test_unreadable_certificates_in_the_bundle_are_refused() -> None:
    # Single bit flips inside the genuine CA bundle that cryptography reports with exceptions of its own, not
    # ValueErrors (found by flipping every bit of the document): an X.509 version of 3, a duplicated key usage.
    refused(flip_bit(GENUINE, 944), "the Nitro leaf certificate .*3 is not a valid X509 version")
    refused(flip_bit(GENUINE, 1957), r"certificate .*Duplicate 2\.5\.29\.15 extension")


def test_leaf_expired_at_the_verification_time() -> None:
    later = GENUINE_TIME + datetime.timedelta(hours=4)  # the leaf lives 3 hours
    refused(GENUINE, r"the Nitro leaf certificate expired at 2024-09-07T17:37:39\+00:00, before the verification "
            "time", at=later, max_age=datetime.timedelta(hours=5))
    # With the default max_age the document is stale long before.
    refused(GENUINE, "older than the allowed 0:05:00", at=later)


def test_stale_document_is_refused() -> None:
    refused(GENUINE, "is 0:05:01 old", at=GENUINE_TIME + DEFAULT_MAX_AGE + SECOND)
    assert verify(GENUINE, at=GENUINE_TIME + DEFAULT_MAX_AGE).timestamp == GENUINE_TIME
    short = datetime.timedelta(seconds=30)
    refused(GENUINE, "older than the allowed 0:00:30", at=GENUINE_TIME + short + SECOND, max_age=short)


def test_document_from_the_future_is_refused() -> None:
    refused(GENUINE, "is in the future of the verification time", at=GENUINE_TIME - MAX_CLOCK_SKEW - SECOND)
    # A verifier whose clock is a little behind is fine: certificates are checked at the document's time.
    assert not verify(GENUINE, at=GENUINE_TIME - datetime.timedelta(seconds=30)).debug


def test_naive_at_is_utc() -> None:
    assert verify(GENUINE, at=GENUINE_AT.replace(tzinfo=None)).timestamp == GENUINE_TIME


def test_pcr_expectation_that_differs_lists_each_pcr() -> None:
    launch = verify(GENUINE)
    other0, other3 = made_up_pcr("other PCR0"), made_up_pcr("other PCR3")
    reason = NitroPcrs({0: other0, 3: other3, 20: other3}).launch_mismatch(launch)
    assert reason is not None
    assert f"PCR0 is {GENUINE_PCR0.hex()}, expected {other0.hex()}" in reason
    assert f"PCR3 is {bytes(48).hex()}, expected {other3.hex()}" in reason
    assert f"PCR20 is absent from the document, expected {other3.hex()}" in reason
    identity = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="nitro", launch=launch)
    with pytest.raises(AttestationError, match="enclave identity not accepted: PCR0 is"):
        NitroPcrs({0: other0}).check(identity)


def test_nitro_pcrs_arguments() -> None:
    for bad in ({}, {32: bytes(48)}, {-1: bytes(48)}, {True: bytes(48)}, {"0": bytes(48)}, {0: bytes(32)},
                {0: "00" * 48}):
        with pytest.raises(InvalidArgumentError):
            NitroPcrs(bad)  # type: ignore[arg-type]
    expectation = NitroPcrs({2: bytes(48), 0: GENUINE_PCR0})
    assert list(expectation.pcrs) == [0, 2]
    assert expectation.describe().startswith(f"nitro launch with PCR0 {GENUINE_PCR0.hex()}, PCR2 ")


def test_verifier_arguments() -> None:
    bad_options: list[dict[str, object]] = [
        {"pinned_roots": {}}, {"pinned_roots": {b"short": "x"}}, {"pinned_roots": {bytes(32): 1}},
        {"max_age": datetime.timedelta(0)}, {"max_age": -SECOND}, {"max_age": 300},
    ]
    for options in bad_options:
        with pytest.raises(InvalidArgumentError):
            NitroQuoteVerifier(**options)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        NitroQuoteVerifier().verify("text", Endorsements(), at=GENUINE_AT)  # type: ignore[arg-type]
    with pytest.raises(AttestationError, match="endorsements beside it are not used"):
        NitroQuoteVerifier().verify(GENUINE, Endorsements(certificates=(b"x",)), at=GENUINE_AT)


# --- the test double: other roots, headers, keys and certificates ---------------------------------------------------


def test_another_root_is_refused_unless_pinned(pki: NitroTestPki) -> None:
    document = pki.document(timestamp=DOUBLE_TIME, user_data=b"binding", nonce=b"n" * 16, public_key=b"k" * 91)
    refused(document, r"the cabundle\[0\] certificate \(SHA-256 [0-9a-f]{64}\) is not a root pinned by this "
            r"pyasylo \(trusted: AWS Nitro Enclaves Root-G1\)", at=DOUBLE_AT)
    launch = verify(document, at=DOUBLE_AT, pinned_roots=pki.pinned_roots)
    assert launch.root == TEST_ROOT_NAME
    assert launch.report_data == b"binding" and launch.nonce == b"n" * 16 and launch.public_key == b"k" * 91
    assert launch.pcr_map == DEFAULT_PCRS and not launch.debug
    assert launch.module_id == TEST_MODULE_ID
    assert launch.timestamp == DOUBLE_TIME
    # The genuine document is not trusted by a verifier that pins only the test root.
    refused(GENUINE, "is not a root pinned", pinned_roots=pki.pinned_roots)


def test_optional_fields_absent_or_null(pki: NitroTestPki) -> None:
    for value in (None, ABSENT):
        fields = {"user_data": value, "nonce": value, "public_key": value}
        launch = verify(pki.document(timestamp=DOUBLE_TIME, fields=fields), at=DOUBLE_AT,
                        pinned_roots=pki.pinned_roots)
        assert launch.report_data == b"" and launch.nonce is None and launch.public_key is None


def test_document_without_debug_pcrs_is_refused(pki: NitroTestPki) -> None:
    document = pki.document(timestamp=DOUBLE_TIME, pcrs={4: made_up_pcr("PCR4")})
    refused(document, "no PCR0, so whether the enclave runs in debug mode cannot be told", at=DOUBLE_AT,
            pinned_roots=pki.pinned_roots)


@pytest.mark.parametrize(("options", "match"), [
    ({"alg": -7}, r"algorithm is the integer -7, expected -35 \(ES384\)"),
    ({"alg": "ES384"}, "algorithm is a str of length 5, expected -35"),
    ({"protected": cbor2.dumps({1: -35, 2: ["crit"]})}, "parameters besides the algorithm"),
    ({"protected": cbor2.dumps([1, -35])}, "protected header is a list of length 2, not a map"),
    ({"protected": b""}, "protected header is 0 bytes"),
    ({"unprotected": {4: b"kid"}}, "unprotected header is not empty"),
    ({"unprotected": []}, "unprotected header is a list of length 0, not a map"),
])
def test_cose_headers_are_checked(pki: NitroTestPki, options: dict[str, object], match: str) -> None:
    refused(pki.document(timestamp=DOUBLE_TIME, **options), match,  # type: ignore[arg-type]
            at=DOUBLE_AT, pinned_roots=pki.pinned_roots)


def test_tagged_test_document_verifies(pki: NitroTestPki) -> None:
    document = pki.document(timestamp=DOUBLE_TIME, tagged=True)
    assert document[0] == 0xD2
    assert verify(document, at=DOUBLE_AT, pinned_roots=pki.pinned_roots).timestamp == DOUBLE_TIME


def test_certificate_not_valid_at_the_document_time() -> None:
    pki = NitroTestPki.create(DOUBLE_TIME, leaf_not_before=DOUBLE_TIME + SECOND)
    refused(pki.document(timestamp=DOUBLE_TIME), "the Nitro leaf certificate is not valid at 2025-06-01T12:00:00.25",
            at=DOUBLE_AT, pinned_roots=pki.pinned_roots)


@pytest.mark.parametrize(("options", "match"), [
    ({"leaf_curve": ec.SECP256R1()}, "not an EC P-384 key"),
    ({"leaf_ca": True}, "the Nitro leaf certificate is a CA certificate"),
    ({"leaf_digital_signature": False}, "key usage does not include digitalSignature"),
])
def test_leaf_certificate_is_checked(options: dict[str, object], match: str) -> None:
    pki = NitroTestPki.create(DOUBLE_TIME, **options)  # type: ignore[arg-type]
    refused(pki.document(timestamp=DOUBLE_TIME), match, at=DOUBLE_AT, pinned_roots=pki.pinned_roots)


def test_signature_by_another_key_is_refused(pki: NitroTestPki) -> None:
    other = NitroTestPki.create(DOUBLE_TIME)
    # The test double's chain, but signed by another leaf's key.
    forged = dataclasses.replace(pki, leaf_key=other.leaf_key)
    refused(forged.document(timestamp=DOUBLE_TIME), "ES384 signature does not verify", at=DOUBLE_AT,
            pinned_roots=pki.pinned_roots)


# --- malformed documents: CBOR, types and sizes ---------------------------------------------------------------------


@pytest.mark.parametrize(("data", "match"), [
    (b"", "an item of 1 bytes where only 0 remain"),
    (b"\x84", "an array of 4 items in 0 bytes"),
    (GENUINE[:-1], "an item of 96 bytes where only 95 remain"),
    (GENUINE + b"\x00", "1 bytes after the end of the item"),
    (b"\x9f" + GENUINE[1:], "indefinite-length item"),
    (b"\x83" + GENUINE[1:], "bytes after the end"),
    (cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"x"]), "not a COSE_Sign1 .an array of 4 items.: it is a list of length 3"),
    (b"\xa0", "not a COSE_Sign1"),
    (b"\xd8\x62" + GENUINE, "CBOR tag 98 .only 18 is allowed around it."),
    (b"\xd2\xd2" + GENUINE, "CBOR tag 18 .no tag is allowed here."),
    (b"\xf9\x00\x00", "a float or a simple value"),
    (b"\xf7", "a float or a simple value"),
    (b"\x1c", "reserved additional information 28"),
    (b"\x9b" + b"\xff" * 8, "an array of 18446744073709551615 items in 0 bytes"),
    (b"\xbb" + b"\xff" * 8, "a map of 18446744073709551615 entries in 0 bytes"),
    (b"\x5b" + b"\xff" * 8, "an item of 18446744073709551615 bytes where only 0 remain"),
    (b"\x84\x62\xff\xfe\x00\x00\x00", "a text string that is not UTF-8"),
    (b"\x81" * 10 + b"\x00", "nested more than 4 deep"),
    (b"\x84" + bytes(MAX_DOCUMENT_SIZE), "over the limit of"),
    (cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"p", bytes(64)]), "COSE signature is 64 bytes, expected 96"),
    (cbor2.dumps([b"\xa1\x01\x38\x22", {}, "payload", bytes(96)]), "COSE payload is a str of length 7, not a byte"),
    (cbor2.dumps([b"\xa1\x01\x38\x22", {}, bytes(MAX_PAYLOAD_SIZE + 1), bytes(96)]),
     "COSE payload is 16385 bytes, expected 1 to 16384"),
    (cbor2.dumps(["\xa1\x01\x38\x22", {}, b"p", bytes(96)]), "protected header is a str"),
    (cbor2.dumps([b"\xa1\x01\x38\x22", {}, b"\x80", bytes(96)]), "payload is a list of length 0, not a map"),
])
def test_malformed_documents_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(AttestationError, match=match):
        parse_document(data)
    refused(data, match)


@pytest.mark.parametrize(("fields", "match"), [
    ({"pcrs": {"0": bytes(48)}}, "PCR index a str of length 1, not an integer in 0..31"),
    ({"pcrs": {32: bytes(48)}}, "PCR index 32, not an integer in 0..31"),
    ({"pcrs": {0: bytes(32)}}, "PCR0 is 32 bytes, expected 48"),
    ({"pcrs": {0: "00" * 48}}, "PCR0 is a str of length 96, not a byte string"),
    ({"pcrs": {}}, "pcrs is a dict of length 0, not a map of 1 to 32 PCRs"),
    ({"pcrs": {index: bytes(48) for index in range(33)}}, "pcrs is a dict of length 33"),
    ({"pcrs": [bytes(48)]}, "pcrs is a list of length 1, not a map"),
    ({"digest": "SHA256"}, r"digest is 'SHA256', expected one of \['SHA384'\]"),
    ({"digest": 384}, "digest is the integer 384"),
    ({"timestamp": 0}, "timestamp is the integer 0, not milliseconds since 1970"),
    ({"timestamp": -1}, "timestamp is the integer -1"),
    ({"timestamp": True}, "timestamp is bool"),
    ({"timestamp": 2**64 - 1}, "timestamp is the integer 18446744073709551615"),
    ({"timestamp": 2**64}, "CBOR tag 2 .no tag is allowed here."),
    ({"timestamp": 1.5e12}, "a float or a simple value"),
    ({"timestamp": "2025-06-01"}, "timestamp is a str of length 10"),
    ({"timestamp": datetime.datetime(2025, 6, 1, tzinfo=UTC)}, "CBOR tag 0 .no tag is allowed here."),
    ({"module_id": ""}, "module_id is 0 characters, expected 1 to 256"),
    ({"module_id": "i" * 257}, "module_id is 257 characters"),
    ({"module_id": b"i-0"}, "module_id is a bytes of length 3, not a text string"),
    ({"cabundle": []}, "cabundle is a list of length 0, not an array of 1 to 7 certificates"),
    ({"cabundle": [b"x"] * 8}, "cabundle is a list of length 8"),
    ({"cabundle": ["certificate"]}, r"cabundle\[0\] is a str of length 11, not a byte string"),
    ({"cabundle": [b""]}, r"cabundle\[0\] is 0 bytes, expected 1 to 1024"),
    ({"certificate": bytes(1025)}, "certificate is 1025 bytes, expected 1 to 1024"),
    ({"certificate": None}, "the attestation document's certificate is null"),
    ({"user_data": bytes(1025)}, "user_data is 1025 bytes, expected 0 to 1024"),
    ({"nonce": "nonce"}, "nonce is a str of length 5, not a byte string"),
    ({"public_key": bytes(1025)}, "public_key is 1025 bytes"),
    ({"public_key": [b"key"]}, "public_key is a list of length 1"),
    ({"nitrotpm_pcrs": {}}, r"fields AWS's specification does not: \['nitrotpm_pcrs'\]"),
    ({"pcrs": ABSENT}, "the attestation document has no pcrs"),
    ({"module_id": ABSENT}, "the attestation document has no module_id"),
])
def test_payload_fields_are_checked_before_use(pki: NitroTestPki, fields: dict[str, object], match: str) -> None:
    document = pki.document(timestamp=DOUBLE_TIME, fields=fields)  # signed: only the parser can refuse it
    with pytest.raises(AttestationError, match=match):
        parse_document(document)
    refused(document, match, at=DOUBLE_AT, pinned_roots=pki.pinned_roots)


@pytest.mark.parametrize(("payload", "match"), [
    (b"\xa2\x65nonce\x40\x65nonce\x40", "the map key 'nonce' twice"),
    (b"\xa1\x01\x02", "fields AWS's specification does not: \\[1\\]"),
    (b"\xa1\xf5\x02", "a map key of type bool"),
    (b"\xa1\x41k\x02", "a map key of type bytes"),
    (b"\xa1\x65nonce\xd8\x24\x41x", "CBOR tag 36"),
])
def test_signed_payload_cbor_is_strict(pki: NitroTestPki, payload: bytes, match: str) -> None:
    refused(pki.sign(payload), match, at=DOUBLE_AT, pinned_roots=pki.pinned_roots)


def test_certificate_that_is_not_der_is_refused(pki: NitroTestPki) -> None:
    document = pki.document(timestamp=DOUBLE_TIME, fields={"certificate": b"not a certificate"})
    assert parse_document(document).certificate == b"not a certificate"
    refused(document, "the Nitro leaf certificate is not a DER X.509 certificate", at=DOUBLE_AT,
            pinned_roots=pki.pinned_roots)


def test_cbor_decoder_accepts_what_aws_sends() -> None:
    value = decode_cbor(cbor2.dumps({"a": [0, -1, 2**64 - 1, -(2**64), b"\x00", "é", True, False, None]}), "test")
    assert value == {"a": [0, -1, 2**64 - 1, -(2**64), b"\x00", "é", True, False, None]}
    # Non-shortest lengths are not AWS's habit but are valid CBOR, and the signature covers the bytes anyway.
    assert decode_cbor(b"\x18\x01", "test") == 1


# --- the NSM --------------------------------------------------------------------------------------------------------


def test_nsm_ioctl_number() -> None:
    # _IOWR(0x0A, 0, struct nsm_raw) with a 32-byte struct: read|write << 30, 32 << 16, 0x0A << 8.
    assert NSM_IOCTL_RAW == 0xC0200A00


def test_attestation_request_encoding() -> None:
    # The nsm-api crate's serde encoding of Request::Attestation, byte for byte.
    expected = (b"\xa1\x6bAttestation\xa3\x69user_data\x43abc\x65nonce\xf6\x6apublic_key\xf6")
    assert encode_attestation_request(b"abc") == expected
    full = cbor2.loads(encode_attestation_request(b"u" * 1024, nonce=b"n" * 1024, public_key=b"k" * 1024))
    assert full == {"Attestation": {"user_data": b"u" * 1024, "nonce": b"n" * 1024, "public_key": b"k" * 1024}}
    assert list(full["Attestation"]) == ["user_data", "nonce", "public_key"]
    assert cbor2.loads(encode_attestation_request(b""))["Attestation"]["user_data"] == b""
    bad_arguments: list[dict[str, object]] = [
        {"user_data": bytes(1025)}, {"user_data": "text"}, {"user_data": None},
        {"user_data": b"", "nonce": bytes(1025)}, {"user_data": b"", "public_key": "key"},
    ]
    for arguments in bad_arguments:
        with pytest.raises(InvalidArgumentError):
            encode_attestation_request(**arguments)  # type: ignore[arg-type]


def test_attestation_response_decoding() -> None:
    assert decode_attestation_response(cbor2.dumps({"Attestation": {"document": GENUINE}})) == GENUINE
    with pytest.raises(AttestationError, match="refused the attestation request: Error 'InputTooLarge'"):
        decode_attestation_response(cbor2.dumps({"Error": "InputTooLarge"}))


@pytest.mark.parametrize(("response", "match"), [
    (b"", "the NSM response is 0 bytes, expected 1 to 12288"),
    (bytes(NSM_RESPONSE_MAX_SIZE + 1), "the NSM response is 12289 bytes"),
    (b"\xff\x00", "the NSM response is not valid CBOR"),
    (cbor2.dumps({"Attestation": {"document": GENUINE}}) + b"\x00", "1 bytes after the end"),
    (cbor2.dumps({"Error": 7}), "refused the attestation request: Error a int"),
    (cbor2.dumps({"Error": "x" * 1000}), "Error 'x{64}'$"),
    (cbor2.dumps({"DescribeNSM": {}}), "the NSM response is 'DescribeNSM', not an Attestation response"),
    (cbor2.dumps({"Attestation": {}}), "not a map holding just a document"),
    (cbor2.dumps({"Attestation": {"document": GENUINE, "extra": 1}}), "not a map holding just a document"),
    (cbor2.dumps({"Attestation": {"document": "text"}}), "document is not a byte string"),
    (cbor2.dumps({"Attestation": {"document": b""}}), "document is not a byte string of 1 to"),
    (cbor2.dumps({"Attestation": {"document": GENUINE}, "Error": "x"}), "not a map of one entry"),
    (cbor2.dumps(["Attestation"]), "not a map of one entry"),
])
def test_bad_nsm_responses_are_refused(response: bytes, match: str) -> None:
    with pytest.raises(AttestationError, match=match):
        decode_attestation_response(response)


def test_absent_nsm_device(tmp_path: Path) -> None:
    device = tmp_path / "nsm"
    with pytest.raises(FailedPreconditionError, match=f"not inside a Nitro enclave: {device} not found"):
        NitroSecureModule(device).attestation(b"report data")
    # Arguments are checked before the device is looked for.
    with pytest.raises(InvalidArgumentError):
        NitroSecureModule(device).attestation(bytes(1025))
    with pytest.raises(InvalidArgumentError):
        NitroSecureModule("")


def test_nsm_device_that_is_not_the_nsm(tmp_path: Path) -> None:
    regular = tmp_path / "nsm"
    regular.write_bytes(b"")
    with pytest.raises(FailedPreconditionError, match="is not a character device"):
        NitroSecureModule(str(regular)).attestation(b"report data")
    if Path("/dev/null").exists():
        with pytest.raises(FailedPreconditionError, match="/dev/null does not answer the NSM ioctl"):
            NitroSecureModule("/dev/null").attestation(b"report data")


# --- properties: nothing but AttestationError, and nothing verifies -------------------------------------------------

_PROPERTY = settings(max_examples=150, deadline=None)
_leaves = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=64)
           | st.text(max_size=16) | st.floats(allow_nan=False))
_cbor_values = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.integers(min_value=-100, max_value=100) | st.text(max_size=12), children, max_size=4),
    max_leaves=24,
)
_FIELD_NAMES = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key", "user_data",
                "nonce")


def _never_verifies(document: bytes) -> None:
    with pytest.raises(AttestationError):
        parse_document(document)
    with pytest.raises(AttestationError):
        verify(document)


@_PROPERTY
@given(st.binary(max_size=600))
def test_random_bytes_are_refused(data: bytes) -> None:
    _never_verifies(data)
    with pytest.raises(AttestationError):
        decode_attestation_response(data)


@_PROPERTY
@given(st.integers(min_value=0, max_value=len(GENUINE) - 1))
def test_truncated_documents_are_refused(length: int) -> None:
    _never_verifies(GENUINE[:length])


@_PROPERTY
@given(st.integers(min_value=0, max_value=len(GENUINE) * 8 - 1))
def test_any_flipped_bit_is_refused(bit: int) -> None:
    with pytest.raises(AttestationError):
        verify(flip_bit(GENUINE, bit // 8, bit % 8))


@_PROPERTY
@given(_cbor_values)
def test_random_cbor_is_refused(value: object) -> None:
    encoded = cbor2.dumps(value)
    _never_verifies(encoded)
    # The same value as the payload of a COSE_Sign1 with a valid header, to reach the payload's checks.
    _never_verifies(cbor2.dumps([b"\xa1\x01\x38\x22", {}, encoded, bytes(96)]))


@_PROPERTY
@given(st.dictionaries(st.sampled_from(_FIELD_NAMES), _cbor_values, min_size=6))
def test_random_payload_fields_are_refused(fields: dict[str, object]) -> None:
    _never_verifies(cbor2.dumps([b"\xa1\x01\x38\x22", {}, cbor2.dumps(fields), bytes(96)]))
