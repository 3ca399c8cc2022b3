"""The host-side TPM 2.0 quote verifier, its parsers and the PcrsAre expectation.

Almost everything here runs against tests/tpm_test_quotes.py, a TEST DOUBLE that marshals and signs quotes with keys
made at test time: no TPM is involved, so the verifier's checks are reached one by one (a signed quote with the wrong
magic, an AK without `restricted`, ...). One clearly marked test at the end makes a real quote with swtpm (a software
TPM) and tpm2-tools and skips where they are not installed; the swtpm-based end-to-end session tests live elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asylo.identity import EnclaveIdentity, runtime_binding
from asylo.identity.fingerprints import platform_fingerprint
from asylo.identity.launch import Endorsements
from asylo.identity.tpm import (
    MAX_TPM_QUOTE_SIZE,
    QUALIFYING_DATA_SIZE,
    PcrsAre,
    PcrSelection,
    TpmLaunchIdentity,
    TpmQuoteVerifier,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
    qualifying_data,
)
from asylo.proto import identity_pb2
from asylo.status import AttestationError, InvalidArgumentError
from tests.tpm_test_quotes import (
    AK_ATTRIBUTES,
    ALG_ECDSA,
    ALG_RSAPSS,
    ALG_RSASSA,
    ALG_SHA1,
    ALG_SHA256,
    ALG_SHA384,
    ECC_NIST_P384,
    RESTRICTED,
    SIGN,
    TPM_ST_ATTEST_CERTIFY,
    QuoteParts,
    TestAk,
    default_pcr_values,
    made_up_pcr,
    make_quote,
    select_bitmap,
    tpm2b,
)

REPORT_DATA = hashlib.sha512(b"a session's runtime binding").digest()
EXTRA_DATA = qualifying_data(REPORT_DATA)
#: Byte offsets in the double's TPMS_ATTEST with a SHA-256 name: magic 4, type 2, qualifiedSigner 2 + 34.
EXTRA_DATA_OFFSET = 4 + 2 + 2 + 34 + 2
#: After extraData (32), clockInfo (17), firmwareVersion (8), the selection count (4), hash (2) and sizeofSelect (1).
SELECT_OFFSET = EXTRA_DATA_OFFSET + 32 + 17 + 8 + 4 + 2 + 1


@pytest.fixture(scope="module")
def rsassa() -> TestAk:
    return TestAk.rsa(ALG_RSASSA)


@pytest.fixture(scope="module")
def rsapss() -> TestAk:
    return TestAk.rsa(ALG_RSAPSS)


@pytest.fixture(scope="module")
def ecdsa() -> TestAk:
    return TestAk.ecc()


def verify(parts: QuoteParts | bytes, *trusted: TestAk | str) -> TpmLaunchIdentity:
    evidence = parts.serialize() if isinstance(parts, QuoteParts) else parts
    fingerprints = [key if isinstance(key, str) else key.fingerprint for key in trusted]
    return TpmQuoteVerifier(fingerprints).verify(evidence, Endorsements())


def refused(parts: QuoteParts | bytes, match: str, *trusted: TestAk | str) -> None:
    with pytest.raises(AttestationError, match=match):
        verify(parts, *trusted)


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1:]


# --- accepted --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ak_name", ["rsassa", "rsapss", "ecdsa"])
def test_quote_verifies(ak_name: str, request: pytest.FixtureRequest) -> None:
    ak: TestAk = request.getfixturevalue(ak_name)
    launch = verify(make_quote(ak, EXTRA_DATA), ak)
    assert launch.kind == "tpm"
    assert launch.report_data == EXTRA_DATA and len(launch.report_data) == QUALIFYING_DATA_SIZE
    assert launch.debug is False
    assert [(bank, index) for bank, index, _ in launch.pcrs] == [(ALG_SHA256, index) for index in range(8)]
    assert launch.pcr(0) == made_up_pcr("PCR0") and launch.pcr(8) is None and launch.pcr(0, ALG_SHA384) is None
    assert dict(launch.pcr_map()) == {index: made_up_pcr(f"PCR{index}") for index in range(8)}
    assert launch.ak_fingerprint == ak.fingerprint == platform_fingerprint(ak.public_area())
    assert launch.ak_name == ak.name and launch.qualified_signer == ak.name
    assert launch.ak_algorithm == {"rsassa": "rsa2048-rsassa-sha256", "rsapss": "rsa2048-rsapss-sha256",
                                   "ecdsa": "ecc-p256-ecdsa-sha256"}[ak_name]
    assert (launch.clock, launch.reset_count, launch.restart_count, launch.safe) == (6522, 2, 0, True)
    assert launch.selection() == "sha256:0,1,2,3,4,5,6,7"
    assert launch.describe() == f"tpm quote of sha256:0,1,2,3,4,5,6,7 by AK {ak.fingerprint} ({launch.ak_algorithm})"
    facts = launch.to_json()
    assert next(iter(facts)) == "kind" and facts["kind"] == "tpm"
    assert facts["pcrs"] == {"sha256": {str(index): made_up_pcr(f"PCR{index}").hex() for index in range(8)}}
    assert facts["report_data"] == EXTRA_DATA.hex() and facts["debug"] is False
    assert hash(launch) == hash(verify(make_quote(ak, EXTRA_DATA), ak))
    with pytest.raises(dataclasses.FrozenInstanceError):
        launch.debug = True  # type: ignore[misc]


def test_p384_ak_with_sha384_digests_pcrs_with_the_scheme_hash() -> None:
    ak = TestAk.ecc(ECC_NIST_P384, scheme_hash=ALG_SHA384)
    parts = make_quote(ak, EXTRA_DATA)
    assert len(parse_attest(parts.attest).pcr_digest) == 48  # the signature scheme's hash, not the SHA-256 bank's
    assert verify(parts, ak).ak_algorithm == "ecc-p384-ecdsa-sha384"


def test_unallocated_bank_selected_with_no_pcrs_verifies(ecdsa: TestAk) -> None:
    # swtpm clears the bits of a bank it has not allocated and quotes the selection so: sha384 with an empty bitmap.
    parts = make_quote(ecdsa, EXTRA_DATA, selection=((ALG_SHA256, tuple(range(8))), (ALG_SHA384, ())))
    launch = verify(parts, ecdsa)
    assert launch.selection() == "sha256:0,1,2,3,4,5,6,7"


def test_two_banks_verify(rsassa: TestAk) -> None:
    selection = ((ALG_SHA256, (0, 7)), (ALG_SHA1, (0,)))
    launch = verify(make_quote(rsassa, EXTRA_DATA, selection=selection), rsassa)
    assert launch.selection() == "sha256:0,7+sha1:0"
    assert launch.pcr(0, ALG_SHA1) == made_up_pcr("PCR0", ALG_SHA1)


def test_qualifying_data_is_sha256_of_the_report_data() -> None:
    assert qualifying_data(REPORT_DATA) == hashlib.sha256(REPORT_DATA).digest()
    assert TpmQuoteVerifier([]).expected_report_data(REPORT_DATA) == EXTRA_DATA
    with pytest.raises(InvalidArgumentError, match="64 bytes"):
        qualifying_data(b"short")


def test_report_data_binds_the_runtime_claim_as_the_host_must_check_it(rsassa: TestAk) -> None:
    # What asylo.identity.hardware must compare for tpm: the launch's report data against
    # qualifying_data(runtime_binding(T, claim)), not against the 64-byte binding itself.
    transcript = os.urandom(64)
    claim = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=1, svn=2, debug=False,
                            platform="tpm").to_proto()
    binding = runtime_binding(transcript, claim)
    launch = verify(make_quote(rsassa, qualifying_data(binding)), rsassa)
    assert launch.report_data == qualifying_data(binding) != binding
    other = runtime_binding(os.urandom(64), claim)
    assert launch.report_data != qualifying_data(other)


# --- refused ---------------------------------------------------------------------------------------------------------


def test_untrusted_ak_is_refused_naming_its_fingerprint(rsassa: TestAk, ecdsa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA)
    with pytest.raises(AttestationError) as caught:
        verify(parts, ecdsa)
    message = str(caught.value)
    assert rsassa.fingerprint in message and f"--trust-platform {rsassa.fingerprint}" in message
    assert "asylo platform enroll" in message and "not trusted" in message


def test_same_key_other_attributes_is_another_fingerprint(rsassa: TestAk) -> None:
    variant = rsassa.with_attributes(AK_ATTRIBUTES | (1 << 10))  # noDA
    refused(make_quote(variant, EXTRA_DATA), "not trusted", rsassa)


@pytest.mark.parametrize(("where", "offset"), [
    ("extraData", EXTRA_DATA_OFFSET),
    ("a PCR selection byte", SELECT_OFFSET),
    ("the pcrDigest", -1),
])
def test_flipped_bit_in_the_attest_body_is_refused(where: str, offset: int, rsassa: TestAk, ecdsa: TestAk) -> None:
    for ak in (rsassa, ecdsa):
        parts = make_quote(ak, EXTRA_DATA)
        position = offset % len(parts.attest)
        parts.attest = flip(parts.attest, position, 3)
        refused(parts, "signature does not verify over its TPMS_ATTEST", ak)


def test_flipped_bit_in_the_signature_is_refused(rsassa: TestAk, rsapss: TestAk, ecdsa: TestAk) -> None:
    for ak in (rsassa, rsapss, ecdsa):
        parts = make_quote(ak, EXTRA_DATA)
        parts.signature = flip(parts.signature, len(parts.signature) - 5)
        refused(parts, "signature does not verify", ak)


def test_signature_by_another_key_is_refused(rsassa: TestAk) -> None:
    refused(make_quote(rsassa, EXTRA_DATA, sign_with=TestAk.rsa()), "does not verify", rsassa)


def test_signature_in_another_scheme_is_refused(rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.signature = rsassa.sign(parts.attest, sig_alg=ALG_RSAPSS)
    refused(parts, "signature is rsapss/sha256, not the attestation key's scheme rsassa/sha256", rsassa)


def test_pcr_value_that_does_not_recompute_is_refused(ecdsa: TestAk) -> None:
    parts = make_quote(ecdsa, EXTRA_DATA)
    bank, index, _ = parts.pcrs[3]
    parts.pcrs[3] = (bank, index, made_up_pcr("something else booted"))
    refused(parts, r"do not recompute to the quote's pcrDigest .*a PCR value was altered", ecdsa)


def test_signed_digest_of_other_values_is_refused(ecdsa: TestAk) -> None:
    digested = default_pcr_values() | {(ALG_SHA256, 7): made_up_pcr("another secure boot policy")}
    refused(make_quote(ecdsa, EXTRA_DATA, digest_values=digested), "do not recompute", ecdsa)


@pytest.mark.parametrize(("carried", "what"), [
    ([(ALG_SHA256, index) for index in range(7)], "sha256:0,1,2,3,4,5,6,"),
    ([(ALG_SHA256, index) for index in range(9)], "sha256:0,1,2,3,4,5,6,7,8,"),
    ([(ALG_SHA256, index) for index in (1, 0, 2, 3, 4, 5, 6, 7)], "sha256:1,0,2"),
    ([(ALG_SHA1, index) for index in range(8)], "sha1:0,1,2,3,4,5,6,7,"),
])
def test_values_for_another_selection_are_refused(carried: list[tuple[int, int]], what: str, rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.pcrs = [(bank, index, made_up_pcr(f"PCR{index}", bank)) for bank, index in carried]
    with pytest.raises(AttestationError, match="but the quote selects sha256:0,1,2,3,4,5,6,7") as caught:
        verify(parts, rsassa)
    assert f"the PCR values carried are for {what}" in str(caught.value)


def test_pcr_value_of_the_wrong_size_is_refused(rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.pcrs[0] = (ALG_SHA256, 0, bytes(20))
    refused(parts, "the value of sha256 PCR 0 is 20 bytes, not 32", rsassa)


def test_empty_selection_is_refused(rsassa: TestAk) -> None:
    refused(make_quote(rsassa, EXTRA_DATA, selection=((ALG_SHA256, ()),)), "selects no PCRs", rsassa)


def test_bank_selected_twice_is_refused(rsassa: TestAk) -> None:
    selection = ((ALG_SHA256, (0,)), (ALG_SHA256, (1,)))
    refused(make_quote(rsassa, EXTRA_DATA, selection=selection), "selects bank sha256 2 times", rsassa)


@pytest.mark.parametrize(("removed", "name"), [
    (RESTRICTED, "restricted"), (SIGN, "sign"), (1 << 1, "fixedTPM"), (1 << 4, "fixedParent")])
def test_ak_without_a_required_attribute_is_refused(removed: int, name: str, rsassa: TestAk) -> None:
    variant = rsassa.with_attributes(AK_ATTRIBUTES & ~removed)
    with pytest.raises(AttestationError, match=f"lacks the attribute {name} ") as caught:
        verify(make_quote(variant, EXTRA_DATA), variant)
    assert name not in str(caught.value).split("its attributes are ")[1].split(", ")


def test_restricted_decryption_key_is_refused(rsassa: TestAk) -> None:
    variant = rsassa.with_attributes(AK_ATTRIBUTES | (1 << 17))
    refused(make_quote(variant, EXTRA_DATA), "has the attribute decrypt", variant)


def test_ak_with_sha1_scheme_is_refused() -> None:
    ak = TestAk.ecc(scheme_hash=ALG_SHA1)
    refused(make_quote(ak, EXTRA_DATA), "scheme hash is sha1", ak)


def test_rsa_1024_ak_is_refused() -> None:
    ak = TestAk.rsa(bits=1024)
    refused(make_quote(ak, EXTRA_DATA), "RSA-1024, not one of RSA-2048", ak)


def test_wrong_magic_is_refused_even_when_signed(rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA, magic=0x00544347)
    refused(parts, r"TPMS_ATTEST.magic: is 0x00544347, not TPM_GENERATED_VALUE 0xff544347", rsassa)


def test_wrong_type_is_refused_even_when_signed(rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA, attest_type=TPM_ST_ATTEST_CERTIFY)
    refused(parts, r"TPMS_ATTEST.type: is 0x8017 \(TPM_ST_ATTEST_CERTIFY\), not TPM_ST_ATTEST_QUOTE", rsassa)


def test_qualifying_data_of_another_size_is_refused(rsassa: TestAk) -> None:
    refused(make_quote(rsassa, REPORT_DATA), "qualifying data is 64 bytes, not the 32-byte SHA-256", rsassa)


def test_trailing_bytes_are_refused(rsassa: TestAk) -> None:
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.attest += b"\0"
    parts.signature = rsassa.sign(parts.attest)
    refused(parts, "TPMS_ATTEST has 1 bytes after its end", rsassa)
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.signature += b"\0"
    refused(parts, "TPMT_SIGNATURE has 1 bytes after its end", rsassa)
    parts = make_quote(rsassa, EXTRA_DATA)
    parts.ak_public += b"\0"
    refused(parts, "TPMT_PUBLIC has 1 bytes after its end", platform_fingerprint(parts.ak_public))


def test_non_canonical_or_oversized_container_is_refused(rsassa: TestAk) -> None:
    evidence = make_quote(rsassa, EXTRA_DATA).serialize()
    refused(evidence + bytes([15 << 3, 1]), "not canonically encoded", rsassa)  # unknown field 15
    refused(evidence + b"\xff", "not a valid TpmQuote", rsassa)
    refused(bytes(MAX_TPM_QUOTE_SIZE + 1), "over the limit", rsassa)
    empty = QuoteParts(attest=b"", signature=b"x", ak_public=rsassa.public_area(), pcrs=[])
    refused(empty, "has no attest", rsassa)


def test_endorsements_must_be_empty(rsassa: TestAk) -> None:
    verifier = TpmQuoteVerifier([rsassa.fingerprint])
    evidence = make_quote(rsassa, EXTRA_DATA).serialize()
    with pytest.raises(AttestationError, match="must be empty"):
        verifier.verify(evidence, Endorsements(certificates=(b"ek",)))
    with pytest.raises(InvalidArgumentError):
        verifier.verify(evidence, None)  # type: ignore[arg-type]


def test_verifier_arguments_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="not one string"):
        TpmQuoteVerifier("ab" * 32)
    with pytest.raises(InvalidArgumentError, match="not a platform fingerprint"):
        TpmQuoteVerifier(["nope"])
    assert TpmQuoteVerifier(["AB" * 32]).trusted_fingerprints == {"ab" * 32}


# --- structures ------------------------------------------------------------------------------------------------------


def test_parsers_read_the_double_field_by_field(rsassa: TestAk, ecdsa: TestAk) -> None:
    parts = make_quote(ecdsa, EXTRA_DATA, selection=((ALG_SHA256, (0, 7, 23)),))
    attest = parse_attest(parts.attest)
    assert attest.extra_data == EXTRA_DATA and attest.qualified_signer == ecdsa.name
    assert attest.pcr_selections == (PcrSelection(ALG_SHA256, select_bitmap((0, 7, 23))),)
    assert attest.pcr_selections[0].indices == (0, 7, 23) and attest.pcr_selections[0].describe() == "sha256:0,7,23"
    assert attest.firmware_version == 0x2019102300163636
    signature = parse_signature(parts.signature)
    assert (signature.sig_alg, signature.hash_alg, len(signature.ecdsa_r)) == (ALG_ECDSA, ALG_SHA256, 32)
    public = parse_public(rsassa.public_area())
    assert public.rsa_key_bits == 2048 and public.rsa_exponent == 0 and public.name == rsassa.name
    assert public.attribute_names == ("fixedTPM", "fixedParent", "sensitiveDataOrigin", "userWithAuth",
                                      "restricted", "sign")
    assert public.public_key().public_numbers().e == 65537  # type: ignore[union-attr]


def test_parsers_refuse_out_of_bound_sizes(ecdsa: TestAk) -> None:
    parts = make_quote(ecdsa, EXTRA_DATA)
    # extraData's size field says 67, over sizeof(TPMT_HA).
    bad = parts.attest[:EXTRA_DATA_OFFSET - 2] + (67).to_bytes(2, "big") + parts.attest[EXTRA_DATA_OFFSET:]
    with pytest.raises(AttestationError, match=r"TPMS_ATTEST.extraData: size 67 is over the bound of 66"):
        parse_attest(bad)
    with pytest.raises(AttestationError, match="is TPM_ALG_NULL: the quote is not signed"):
        parse_signature(bytes.fromhex("0010"))
    with pytest.raises(AttestationError, match="sigAlg: is hmac"):
        parse_signature(bytes.fromhex("0005000b") + bytes(32))
    with pytest.raises(AttestationError, match="type: is keyedhash, not an rsa or ecc key"):
        parse_public(bytes.fromhex("0008000b00000000") + tpm2b(b""))
    with pytest.raises(AttestationError, match="truncated"):
        parse_public(ecdsa.public_area()[:-1])
    with pytest.raises(InvalidArgumentError):
        parse_attest("not bytes")  # type: ignore[arg-type]


def test_ecc_point_off_the_curve_is_refused(ecdsa: TestAk) -> None:
    public = bytearray(ecdsa.public_area())
    public[-1] ^= 1  # the last byte of y
    fingerprint = platform_fingerprint(bytes(public))
    parts = make_quote(ecdsa, EXTRA_DATA)
    parts.ak_public = bytes(public)
    refused(parts, "not a valid p256 public key", fingerprint)


def test_pcr_digest_is_the_hash_of_the_values_in_selection_order() -> None:
    selections = [PcrSelection(ALG_SHA256, select_bitmap((2, 0))), PcrSelection(ALG_SHA1, select_bitmap((1,)))]
    values = [made_up_pcr("a"), made_up_pcr("b"), made_up_pcr("c", ALG_SHA1)]
    assert pcr_digest(selections, values, ALG_SHA384) == hashlib.sha384(b"".join(values)).digest()
    with pytest.raises(InvalidArgumentError, match="2 PCR values for a selection of 3"):
        pcr_digest(selections, values[:2], ALG_SHA256)


# --- PcrsAre ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def launch(ecdsa: TestAk) -> TpmLaunchIdentity:
    return verify(make_quote(ecdsa, EXTRA_DATA), ecdsa)


def test_pcrs_are_accepts_the_quoted_values(launch: TpmLaunchIdentity) -> None:
    assert PcrsAre(launch.pcr_map()).launch_mismatch(launch) is None
    expectation = PcrsAre({0: made_up_pcr("PCR0"), 7: made_up_pcr("PCR7")})
    assert expectation.launch_mismatch(launch) is None
    assert PcrsAre.from_hex({0: "0x" + made_up_pcr("PCR0").hex()}).launch_mismatch(launch) is None
    on_tpm = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                             platform="tpm", launch=launch)
    expectation.check(on_tpm)
    assert expectation.constrains_launch("tpm")
    assert expectation.describe().startswith("tpm launch with sha256 PCR 0 ")


def test_pcrs_are_mismatch_names_each_pcr_with_both_values(launch: TpmLaunchIdentity) -> None:
    expected = made_up_pcr("another firmware")
    reason = PcrsAre({0: expected, 7: made_up_pcr("another policy"), 1: made_up_pcr("PCR1")}).launch_mismatch(launch)
    assert reason is not None
    assert f"PCR 0 (sha256) is {made_up_pcr('PCR0').hex()}, expected {expected.hex()}" in reason
    assert "PCR 7 (sha256) is" in reason and "PCR 1 " not in reason


def test_pcr_not_quoted_is_a_mismatch(launch: TpmLaunchIdentity) -> None:
    reason = PcrsAre({9: made_up_pcr("PCR9")}).launch_mismatch(launch)
    assert reason is not None and reason.startswith("PCR 9 was not quoted (the quote selects sha256:0,1,2,3,4,5,6,7)")
    other_bank = PcrsAre({0: made_up_pcr("PCR0", ALG_SHA384)}, hash_alg="sha384").launch_mismatch(launch)
    assert other_bank is not None and "PCR 0 was not quoted" in other_bank


def test_pcrs_are_refuses_other_launches_and_bad_arguments(launch: TpmLaunchIdentity) -> None:
    sim = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False, platform="sim")
    with pytest.raises(AttestationError, match="expected a verified tpm launch, the enclave has no hardware launch"):
        PcrsAre({0: bytes(32)}).check(sim)
    for pcrs, options, match in [
        ({}, {}, "at least one"),
        ({0: bytes(20)}, {}, "must be 32 bytes"),
        ({32: bytes(32)}, {}, "0..31"),
        ({True: bytes(32)}, {}, "0..31"),
        ({0: bytes(32)}, {"hash_alg": "md5"}, "hash algorithm must be one of"),
    ]:
        with pytest.raises(InvalidArgumentError, match=match):
            PcrsAre(pcrs, **options)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not hex"):
        PcrsAre.from_hex({0: "zz"})


# --- property tests: hostile bytes never crash and never verify -------------------------------------------------------

_PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sample(ecdsa: TestAk) -> QuoteParts:
    return make_quote(ecdsa, EXTRA_DATA)


def _only_attestation_errors(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(AttestationError):
        parser(data)


@_PROPERTY
@given(data=st.binary(max_size=700))
def test_random_bytes_never_crash_the_parsers(data: bytes) -> None:
    for parser in (parse_attest, parse_public, parse_signature):
        _only_attestation_errors(parser, data)
    with pytest.raises(AttestationError):
        TpmQuoteVerifier([platform_fingerprint(data)]).verify(data, Endorsements())


@_PROPERTY
@given(prefix=st.binary(max_size=40), cut=st.integers(min_value=0, max_value=10_000))
def test_truncated_structures_are_refused(sample: QuoteParts, ecdsa: TestAk, prefix: bytes, cut: int) -> None:
    parsers: list[tuple[Callable[[bytes], object], bytes]] = [
        (parse_attest, sample.attest), (parse_signature, sample.signature), (parse_public, sample.ak_public)]
    for parser, whole in parsers:
        with pytest.raises(AttestationError):
            parser(whole[:cut % len(whole)])
        # A valid structure's prefix followed by noise: refused or (if the noise happens to parse) never a crash.
        _only_attestation_errors(parser, whole[:cut % len(whole)] + prefix)
    evidence = sample.serialize()
    with pytest.raises(AttestationError):
        verify(evidence[:cut % len(evidence)], ecdsa)


@_PROPERTY
@given(position=st.integers(min_value=0, max_value=10_000), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit_of_a_quote_never_verifies(sample: QuoteParts, ecdsa: TestAk, position: int,
                                                   bit: int) -> None:
    evidence = sample.serialize()
    with pytest.raises(AttestationError):
        verify(flip(evidence, position % len(evidence), bit), ecdsa)


@_PROPERTY
@given(field=st.sampled_from(["attest", "signature", "ak_public"]), noise=st.binary(min_size=1, max_size=600))
def test_random_fields_in_a_valid_container_never_verify(sample: QuoteParts, ecdsa: TestAk, field: str,
                                                         noise: bytes) -> None:
    parts = dataclasses.replace(sample, **{field: noise})
    trusted = platform_fingerprint(parts.ak_public)
    with pytest.raises(AttestationError):
        verify(parts, ecdsa, trusted)


# --- one real quote from swtpm (a software TPM), when swtpm and tpm2-tools are installed ------------------------------

_SWTPM_TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_flushcontext")
_missing = [tool for tool in _SWTPM_TOOLS if shutil.which(tool) is None]


def _free_port_pair() -> int:
    """A free port whose successor is free too: the swtpm TCTI talks commands on `port` and control on port + 1."""
    for _ in range(50):
        with socket.socket() as probe, socket.socket() as successor:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            try:
                successor.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A swtpm of our own (state in a temporary directory, free ports) for this module, stopped afterwards."""
    state = tmp_path_factory.mktemp("swtpm")
    port = _free_port_pair()
    ctrl = port + 1
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1", "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read() if process.stderr else b""
                    raise RuntimeError(f"swtpm did not start: {output!r}") from None
                time.sleep(0.05)
        env = {**os.environ, "TPM2TOOLS_TCTI": f"swtpm:host=127.0.0.1,port={port}"}
        yield state, env
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tool(env: dict[str, str], cwd: Path, *args: str) -> None:
    # No resource manager sits between the tools and swtpm: each tool's transient objects and sessions stay loaded
    # until flushed, and the TPM's few slots run out.
    for command in (args, ("tpm2_flushcontext", "-t"), ("tpm2_flushcontext", "-s")):
        result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"


@pytest.mark.skipif(bool(_missing) and not os.environ.get("ASYLO_REQUIRE_SWTPM"),
                    reason=f"swtpm/tpm2-tools not installed ({', '.join(_missing)} missing)")
@pytest.mark.parametrize(("algorithm", "scheme", "expected"), [
    ("rsa", "rsassa", "rsa2048-rsassa-sha256"),
    ("ecc256", "ecdsa", "ecc-p256-ecdsa-sha256"),
])
def test_real_quote_from_swtpm_verifies(swtpm: tuple[Path, dict[str, str]], algorithm: str, scheme: str,
                                        expected: str, tmp_path: Path) -> None:
    """SOFTWARE TPM (swtpm): a quote made by swtpm through tpm2-tools, not by a hardware TPM, verified here."""
    _, env = swtpm
    _tool(env, tmp_path, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    _tool(env, tmp_path, "tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", algorithm, "-g", "sha256", "-s",
          scheme, "-u", "ak.pub", "-f", "tss", "-n", "ak.name")
    _tool(env, tmp_path, "tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,1,2,3,4,5,6,7", "-q", EXTRA_DATA.hex(),
          "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-F", "values", "-g", "sha256",
          "--scheme", scheme)
    ak_public = (tmp_path / "ak.pub").read_bytes()[2:]  # a TPM2B_PUBLIC: the TPMT_PUBLIC after its size
    values = (tmp_path / "quote.pcrs").read_bytes()
    quote = identity_pb2.TpmQuote(
        attest=(tmp_path / "quote.msg").read_bytes(), signature=(tmp_path / "quote.sig").read_bytes(),
        ak_public=ak_public,
        pcrs=[identity_pb2.TpmPcrValue(hash_alg=ALG_SHA256, index=index, value=values[32 * index:32 * index + 32])
              for index in range(8)])
    evidence = quote.SerializeToString(deterministic=True)
    fingerprint = platform_fingerprint(ak_public)
    launch = TpmQuoteVerifier([fingerprint]).verify(evidence, Endorsements())
    assert launch.report_data == EXTRA_DATA
    assert launch.ak_algorithm == expected
    assert launch.ak_name == (tmp_path / "ak.name").read_bytes()  # tpm2_createak's name is the one computed here
    assert PcrsAre(launch.pcr_map()).launch_mismatch(launch) is None
    with pytest.raises(AttestationError, match="not trusted"):
        TpmQuoteVerifier([]).verify(evidence, Endorsements())
    tampered = identity_pb2.TpmQuote()
    tampered.CopyFrom(quote)
    tampered.attest = flip(quote.attest, EXTRA_DATA_OFFSET)
    with pytest.raises(AttestationError, match="does not verify"):
        TpmQuoteVerifier([fingerprint]).verify(tampered.SerializeToString(deterministic=True), Endorsements())
