"""TDX and SGX DCAP: genuine quotes verified offline with dcap-qvl, refusals of every kind, expectations on the
verified launch, and the proxy's collateral sources (a file, and a PCCS served from loopback in the test).

The quotes are real Intel evidence (tests/vectors/tdx-sgx-dcap/PROVENANCE.md); their collateral is valid from
2025-06-19 to 2025-07-19, so every verification passes the time explicitly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from asylo.identity.expectations import AllOf, MeasurementIs
from asylo.identity.identity import EnclaveIdentity
from asylo.identity.launch import Endorsements
from asylo.identity.tdx import (
    INTEL_SGX_ROOT_CA_SHA256,
    MAX_COLLATERAL_SIZE,
    MAX_QUOTE_SIZE,
    CollateralSource,
    PccsCollateral,
    SgxEnclave,
    SgxLaunchIdentity,
    SgxQuoteVerifier,
    TdxLaunch,
    TdxLaunchIdentity,
    TdxQuoteVerifier,
    check_pccs_url,
    decode_quote_file,
    intel_root_ca_der,
)
from asylo.status import AttestationError, InvalidArgumentError

VECTORS = Path(__file__).parent / "vectors" / "tdx-sgx-dcap"
TDX_QUOTE = (VECTORS / "tdx_quote").read_bytes()
TDX_COLLATERAL = (VECTORS / "tdx_quote_collateral.json").read_bytes()
SGX_QUOTE = (VECTORS / "sgx_quote").read_bytes()
SGX_COLLATERAL = (VECTORS / "sgx_quote_collateral.json").read_bytes()
ROOT_DER = (VECTORS / "TrustedRootCA.der").read_bytes()
TDX_ENDORSEMENTS = Endorsements(collateral=TDX_COLLATERAL)
SGX_ENDORSEMENTS = Endorsements(collateral=SGX_COLLATERAL)


def utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC)


#: Inside both samples' windows.
AT = utc("2025-07-01T00:00:00")
#: The exact windows dcap-qvl accepts: TDX from its QE identity's issueDate to its CRLs' nextUpdate, SGX from its
#: TCB info's issueDate to its QE identity's nextUpdate (see the vectors' PROVENANCE.md).
TDX_FIRST, TDX_LAST = utc("2025-06-19T10:32:27"), utc("2025-07-19T10:00:34")
SGX_FIRST, SGX_LAST = utc("2025-06-19T10:56:11"), utc("2025-07-19T10:01:18")
SECOND = datetime.timedelta(seconds=1)

# What the genuine TD measured (dcap-qvl's parse of tdx_quote, checked by the signature).
MRTD = bytes.fromhex("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")
RTMRS = (
    bytes.fromhex("44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0"),
    bytes.fromhex("0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378"),
    bytes.fromhex("d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132"),
    bytes(48),
)
MRENCLAVE = bytes.fromhex("33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb")
MRSIGNER = bytes.fromhex("815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6")
SGX_STATUS = "ConfigurationAndSWHardeningNeeded"
SGX_ADVISORIES = ("INTEL-SA-00289", "INTEL-SA-00615")

# Quote layout (Intel DCAP): 48-byte header, the body (TD report 584 bytes, SGX report 384), a 4-byte signature
# data length, then the signature data, which starts with the 64-byte ECDSA signature over header and body.
HEADER = 48
TDX_BODY, SGX_BODY = 584, 384
MRTD_OFFSET = HEADER + 136
TDX_SIGNATURE = HEADER + TDX_BODY + 4
SGX_SIGNATURE = HEADER + SGX_BODY + 4
#: The TDX sample is padded with 70 zero bytes after its signature data, which dcap-qvl ignores.
TDX_QUOTE_LENGTH = TDX_SIGNATURE + int.from_bytes(TDX_QUOTE[TDX_SIGNATURE - 4:TDX_SIGNATURE], "little")
SGX_QUOTE_LENGTH = SGX_SIGNATURE + int.from_bytes(SGX_QUOTE[SGX_SIGNATURE - 4:SGX_SIGNATURE], "little")

TDX = TdxQuoteVerifier()
SGX = SgxQuoteVerifier()


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= 1 << bit
    return bytes(changed)


def tdx_launch() -> TdxLaunchIdentity:
    launch = TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=AT)
    assert isinstance(launch, TdxLaunchIdentity)
    return launch


def sgx_launch() -> SgxLaunchIdentity:
    launch = SGX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=AT)
    assert isinstance(launch, SgxLaunchIdentity)
    return launch


def self_signed_root() -> bytes:
    """A root CA made here, named like Intel's: it must not verify Intel's chains."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX Root CA"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation")])
    start = utc("2018-01-01T00:00:00")
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 40))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


# --- genuine quotes ---------------------------------------------------------------------------------------------


def test_genuine_tdx_quote_verifies_up_to_date() -> None:
    launch = tdx_launch()
    assert launch.kind == "tdx"
    assert launch.mrtd == MRTD
    assert launch.rtmrs == RTMRS
    assert launch.tcb_status == "UpToDate"
    assert launch.advisory_ids == ()
    assert launch.debug is False
    assert launch.td_attributes == bytes.fromhex("0000001000000000")  # SEPT_VE_DISABLE only
    assert launch.quote_version == 4
    assert launch.report_data == TDX_QUOTE[HEADER + 520:HEADER + 584]
    document = launch.to_json()
    assert next(iter(document)) == "kind"
    assert document["kind"] == "tdx"
    assert document["mrtd"] == MRTD.hex()
    assert document["rtmrs"] == [r.hex() for r in RTMRS]
    assert json.loads(json.dumps(document)) == document
    assert MRTD.hex() in launch.describe()
    assert "UpToDate" in launch.describe()


@pytest.mark.parametrize(("first", "last"), [(TDX_FIRST, TDX_LAST)])
def test_tdx_quote_verifies_at_both_ends_of_its_window_and_not_a_second_beyond(
        first: datetime.datetime, last: datetime.datetime) -> None:
    assert TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=first).tcb_status == "UpToDate"
    assert TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=last).tcb_status == "UpToDate"
    with pytest.raises(AttestationError, match="QE Identity issue date is in the future"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=first - SECOND)
    with pytest.raises(AttestationError, match="CrlExpired"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=last + SECOND)


def test_naive_time_is_taken_as_utc() -> None:
    assert TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=TDX_FIRST.replace(tzinfo=None)).mrtd == MRTD


def test_tdx_launch_accepts_the_genuine_measurements() -> None:
    launch = tdx_launch()
    expectation = TdxLaunch(MRTD, rtmrs=dict(enumerate(RTMRS)), mrconfigid=bytes(48), mrowner=bytes(48))
    assert expectation.launch_mismatch(launch) is None
    # Through an enclave identity, as the host checks it, combined with the image expectation.
    identity = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="tdx", launch=launch)
    AllOf(expectation, MeasurementIs(bytes(32))).check(identity)
    assert expectation.constrains_launch("tdx")
    assert MRTD.hex() in expectation.describe()
    assert "rtmr2" in expectation.describe()


def test_genuine_sgx_quote_verifies_with_its_tcb_status_and_advisories() -> None:
    launch = sgx_launch()
    assert launch.kind == "sgx"
    assert launch.mrenclave == MRENCLAVE
    assert launch.mrsigner == MRSIGNER
    assert (launch.isv_prod_id, launch.isv_svn) == (0, 0)
    assert launch.tcb_status == SGX_STATUS
    assert launch.advisory_ids == SGX_ADVISORIES
    assert launch.debug is False
    assert launch.report_data == b"Hello, world!".ljust(64, b"\0")
    assert launch.to_json()["advisory_ids"] == list(SGX_ADVISORIES)
    assert SGX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=SGX_FIRST).mrenclave == MRENCLAVE
    assert SGX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=SGX_LAST).mrenclave == MRENCLAVE


def test_sgx_enclave_refuses_the_status_unless_it_is_accepted() -> None:
    launch = sgx_launch()
    reason = SgxEnclave(MRENCLAVE).launch_mismatch(launch)
    assert reason is not None
    assert SGX_STATUS in reason
    assert "INTEL-SA-00289" in reason and "INTEL-SA-00615" in reason
    assert "mrenclave" not in reason  # the measurement matched; only the TCB is named
    identity = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="sgx", launch=launch)
    with pytest.raises(AttestationError, match="INTEL-SA-00615"):
        SgxEnclave(MRENCLAVE).check(identity)
    accepting = SgxEnclave(MRENCLAVE, mrsigner=MRSIGNER, isv_prod_id=0, accept_tcb_status=[SGX_STATUS])
    assert accepting.launch_mismatch(launch) is None
    assert SGX_STATUS in accepting.describe()
    # Another accepted status is not this one.
    assert SgxEnclave(MRENCLAVE, accept_tcb_status=["SWHardeningNeeded"]).launch_mismatch(launch) is not None


def test_sgx_enclave_lists_every_mismatched_field() -> None:
    reason = SgxEnclave(bytes(32), mrsigner=bytes(32), isv_prod_id=7, min_isv_svn=3,
                        accept_tcb_status=[SGX_STATUS]).launch_mismatch(sgx_launch())
    assert reason is not None
    assert f"mrenclave is {MRENCLAVE.hex()}, expected {bytes(32).hex()}" in reason
    assert f"mrsigner is {MRSIGNER.hex()}, expected {bytes(32).hex()}" in reason
    assert "isv_prod_id is 0, expected 7" in reason
    assert "isv_svn is 0, below the minimum 3" in reason


# --- refusals: the quote --------------------------------------------------------------------------------------


def test_a_flipped_bit_in_the_signature_is_refused() -> None:
    with pytest.raises(AttestationError, match=r"TDX quote not verified.*ISV enclave report signature is invalid"):
        TDX.verify(flip(TDX_QUOTE, TDX_SIGNATURE + 10), TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match=r"SGX quote not verified.*ISV enclave report signature is invalid"):
        SGX.verify(flip(SGX_QUOTE, SGX_SIGNATURE + 40, 7), SGX_ENDORSEMENTS, at=AT)


def test_a_flipped_bit_in_the_signed_body_is_refused() -> None:
    with pytest.raises(AttestationError, match="ISV enclave report signature is invalid"):
        TDX.verify(flip(TDX_QUOTE, MRTD_OFFSET), TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match="ISV enclave report signature is invalid"):
        SGX.verify(flip(SGX_QUOTE, HEADER + 64), SGX_ENDORSEMENTS, at=AT)  # MRENCLAVE


def test_a_flipped_bit_in_the_attestation_key_breaks_the_qe_binding() -> None:
    with pytest.raises(AttestationError, match="QE report hash mismatch"):
        TDX.verify(flip(TDX_QUOTE, TDX_SIGNATURE + 64 + 5), TDX_ENDORSEMENTS, at=AT)


def test_another_root_is_refused() -> None:
    verifier = TdxQuoteVerifier(root_ca_der=self_signed_root())
    assert verifier.root_ca_sha256 != INTEL_SGX_ROOT_CA_SHA256
    with pytest.raises(AttestationError, match=r"TDX quote not verified.*root CA CRL"):
        verifier.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match="SGX quote not verified"):
        SgxQuoteVerifier(root_ca_der=self_signed_root()).verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=AT)
    # Intel's root passed explicitly is the default's equal.
    assert TdxQuoteVerifier(root_ca_der=ROOT_DER).verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=AT).mrtd == MRTD


def test_the_pinned_root_is_intels() -> None:
    assert intel_root_ca_der() == ROOT_DER
    assert TDX.root_ca_sha256 == INTEL_SGX_ROOT_CA_SHA256
    with pytest.raises(InvalidArgumentError, match=r"not a DER X\.509 certificate"):
        TdxQuoteVerifier(root_ca_der=b"\x30\x03\x02\x01\x01")
    with pytest.raises(InvalidArgumentError, match="root_ca_der must be"):
        SgxQuoteVerifier(root_ca_der=b"")


def test_times_outside_the_collateral_are_refused() -> None:
    with pytest.raises(AttestationError, match=r"TDX quote not verified at 2025-07-20T00:00:00\+00:00"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=utc("2025-07-20T00:00:00"))
    with pytest.raises(AttestationError, match="issue date is in the future"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=utc("2025-06-01T00:00:00"))
    with pytest.raises(AttestationError, match="QE Identity expired"):
        SGX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=SGX_LAST + SECOND)
    with pytest.raises(AttestationError, match="TCBInfo issue date is in the future"):
        SGX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=SGX_FIRST - SECOND)
    with pytest.raises(AttestationError, match=r"expired|Expired"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS)  # now: long after the sample's collateral
    with pytest.raises(InvalidArgumentError, match="before 1970"):
        TDX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=utc("1969-12-31T00:00:00"))


def test_each_verifier_refuses_the_other_tees_quote() -> None:
    with pytest.raises(AttestationError, match="the SGX verifier was given a TDX quote"):
        SGX.verify(TDX_QUOTE, TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match="the TDX verifier was given an SGX quote"):
        TDX.verify(SGX_QUOTE, SGX_ENDORSEMENTS, at=AT)
    unknown = SGX_QUOTE[:4] + (0x42).to_bytes(4, "little") + SGX_QUOTE[8:]
    with pytest.raises(AttestationError, match="unknown TEE type 0x00000042"):
        TDX.verify(unknown, SGX_ENDORSEMENTS, at=AT)


def test_the_other_tees_collateral_is_refused() -> None:
    with pytest.raises(AttestationError, match="Unsupported QE Identity id/version"):
        TDX.verify(TDX_QUOTE, SGX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match="Unsupported QE Identity id/version"):
        SGX.verify(SGX_QUOTE, TDX_ENDORSEMENTS, at=AT)


def test_short_and_oversized_quotes_are_refused() -> None:
    with pytest.raises(AttestationError, match="shorter than its 48-byte header"):
        TDX.verify(TDX_QUOTE[:47], TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match="Failed to decode quote"):
        TDX.verify(TDX_QUOTE[:600], TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(AttestationError, match=f"more than any DCAP quote \\({MAX_QUOTE_SIZE}\\)"):
        TDX.verify(TDX_QUOTE + bytes(MAX_QUOTE_SIZE), TDX_ENDORSEMENTS, at=AT)
    with pytest.raises(InvalidArgumentError, match="must be bytes"):
        TDX.verify("quote", TDX_ENDORSEMENTS, at=AT)  # type: ignore[arg-type]


# --- refusals: the collateral ---------------------------------------------------------------------------------


def test_empty_collateral_says_where_collateral_comes_from() -> None:
    with pytest.raises(AttestationError, match=r"--collateral FILE.*PCCS URL"):
        TDX.verify(TDX_QUOTE, Endorsements(), at=AT)


def test_oversized_and_malformed_collateral_is_refused() -> None:
    padded = TDX_COLLATERAL + b" " * (MAX_COLLATERAL_SIZE - len(TDX_COLLATERAL) + 1)
    with pytest.raises(AttestationError, match=f"more than DCAP collateral takes \\({MAX_COLLATERAL_SIZE}\\)"):
        TDX.verify(TDX_QUOTE, Endorsements(collateral=padded), at=AT)
    with pytest.raises(AttestationError, match="not DCAP collateral JSON: not UTF-8"):
        TDX.verify(TDX_QUOTE, Endorsements(collateral=b"\xff\xfe"), at=AT)
    with pytest.raises(AttestationError, match=r"not DCAP collateral JSON.*missing field"):
        TDX.verify(TDX_QUOTE, Endorsements(collateral=b"{}"), at=AT)


def test_altered_collateral_is_refused() -> None:
    collateral = json.loads(TDX_COLLATERAL)
    # Promote the first out-of-date TCB level to UpToDate: exactly what a proxy would like to forge.
    altered = collateral["tcb_info"].replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"', 1)
    assert altered != collateral["tcb_info"]
    collateral["tcb_info"] = altered
    with pytest.raises(AttestationError, match="Signature is invalid for tcb_info"):
        TDX.verify(TDX_QUOTE, Endorsements(collateral=json.dumps(collateral).encode()), at=AT)


def test_separate_certificates_are_refused() -> None:
    with pytest.raises(AttestationError, match="DCAP takes none"):
        TDX.verify(TDX_QUOTE, Endorsements(certificates=(ROOT_DER,), collateral=TDX_COLLATERAL), at=AT)


# --- expectations ----------------------------------------------------------------------------------------------


def test_a_different_mrtd_is_refused_with_both_values() -> None:
    other = bytes(47) + b"\x01"
    reason = TdxLaunch(other).launch_mismatch(tdx_launch())
    assert reason == f"mrtd is {MRTD.hex()}, expected {other.hex()}"


def test_a_different_rtmr_is_refused_with_both_values() -> None:
    other = b"\xaa" * 48
    reason = TdxLaunch(MRTD, rtmrs={0: RTMRS[0], 2: other}).launch_mismatch(tdx_launch())
    assert reason == f"rtmr2 is {RTMRS[2].hex()}, expected {other.hex()}"


def test_every_mismatched_tdx_field_is_listed() -> None:
    launch = dataclasses.replace(tdx_launch(), tcb_status="OutOfDate", advisory_ids=("INTEL-SA-00837",))
    reason = TdxLaunch(b"\x01" * 48, rtmrs={3: b"\x02" * 48}, mrconfigid=b"\x03" * 48,
                       mrowner=b"\x04" * 48).launch_mismatch(launch)
    assert reason is not None
    for part in ("mrtd is", "rtmr3 is", "mrconfigid is", "mrowner is",
                 "TCB status is OutOfDate (advisories INTEL-SA-00837)"):
        assert part in reason
    assert TdxLaunch(MRTD, accept_tcb_status=["OutOfDate"]).launch_mismatch(launch) is None


def test_a_debug_td_is_refused_unless_allowed() -> None:
    genuine = tdx_launch()
    debug_attributes = bytes([genuine.td_attributes[0] | 0x01]) + genuine.td_attributes[1:]
    debug = dataclasses.replace(genuine, td_attributes=debug_attributes, debug=True)
    reason = TdxLaunch(MRTD).launch_mismatch(debug)
    assert reason is not None and "debug TD" in reason and "allow_debug=True" in reason
    assert TdxLaunch(MRTD, allow_debug=True).launch_mismatch(debug) is None
    assert "debug allowed" in TdxLaunch(MRTD, allow_debug=True).describe()
    assert "DEBUG" in debug.describe()
    # The flag and the attribute it stands for cannot disagree.
    with pytest.raises(InvalidArgumentError, match="TDATTRIBUTES bit 0"):
        dataclasses.replace(genuine, debug=True)


def test_a_debug_sgx_enclave_is_refused_unless_allowed() -> None:
    genuine = sgx_launch()
    debug = dataclasses.replace(genuine, attributes=bytes([genuine.attributes[0] | 0x02]) + genuine.attributes[1:],
                                debug=True)
    reason = SgxEnclave(MRENCLAVE, accept_tcb_status=[SGX_STATUS]).launch_mismatch(debug)
    assert reason is not None and "debug enclave" in reason
    assert SgxEnclave(MRENCLAVE, accept_tcb_status=[SGX_STATUS], allow_debug=True).launch_mismatch(debug) is None
    with pytest.raises(InvalidArgumentError, match="ATTRIBUTES bit 1"):
        dataclasses.replace(genuine, debug=True)


def test_an_expectation_refuses_another_kind_of_launch() -> None:
    identity = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="sgx", launch=sgx_launch())
    reason = TdxLaunch(MRTD).mismatch(identity)
    assert reason is not None and "expected a verified tdx launch" in reason
    assert TdxLaunch(MRTD).launch_mismatch(sgx_launch()) == "expected a TDX launch identity, got SgxLaunchIdentity"
    sim = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False, platform="sim")
    assert "no hardware launch" in (SgxEnclave(MRENCLAVE).mismatch(sim) or "")


def test_rtmrs_without_an_mrtd_do_not_constrain_the_launch() -> None:
    rtmrs_only = TdxLaunch(rtmrs={1: RTMRS[1]})
    assert rtmrs_only.launch_mismatch(tdx_launch()) is None
    assert not rtmrs_only.constrains_launch("tdx")
    assert rtmrs_only.constrains_launch("snp")  # it accepts no SNP launch at all
    # MRTD measures the firmware only: the kernel (RTMR1) and command line (RTMR2) must be pinned with it, in one
    # expectation (AllOf does not add up partial pins: it is conservative).
    assert not TdxLaunch(MRTD).constrains_launch("tdx")
    assert not AllOf(rtmrs_only, TdxLaunch(MRTD)).constrains_launch("tdx")
    assert AllOf(rtmrs_only, TdxLaunch(MRTD, rtmrs={1: RTMRS[1], 2: RTMRS[2]})).constrains_launch("tdx")
    assert SgxEnclave(mrsigner=MRSIGNER, isv_prod_id=0).constrains_launch("sgx")


@pytest.mark.parametrize(("make", "message"), [
    (lambda: TdxLaunch(b"\x00" * 32), "mrtd must be 48 bytes, got 32 bytes"),
    (TdxLaunch, "needs reference values"),
    (lambda: TdxLaunch(mrconfigid=bytes(48)), "needs reference values"),
    (lambda: TdxLaunch(MRTD, rtmrs={4: bytes(48)}), "register 4 is not one of 0..3"),
    (lambda: TdxLaunch(MRTD, rtmrs={True: bytes(48)}), "register True"),
    (lambda: TdxLaunch(MRTD, rtmrs={1: bytes(47)}), "rtmr1 must be 48 bytes"),
    (lambda: TdxLaunch(MRTD, mrowner="00" * 48),  # type: ignore[arg-type]
     "mrowner must be 48 bytes, got str"),
    (lambda: TdxLaunch(MRTD, accept_tcb_status=["UpToDat"]), "unknown TCB status 'UpToDat' \\(valid: UpToDate, "
                                                              "SWHardeningNeeded, ConfigurationNeeded"),
    (lambda: TdxLaunch(MRTD, accept_tcb_status=["OK"]), "unknown TCB status 'OK'"),
    (lambda: TdxLaunch(MRTD, accept_tcb_status="OutOfDate"), "not one string"),
    (lambda: TdxLaunch(MRTD, accept_tcb_status=["Revoked"]), "cannot accept TCB status Revoked"),
    (lambda: TdxLaunch(MRTD, allow_debug=1),  # type: ignore[arg-type]
     "allow_debug must be a bool"),
    (SgxEnclave, "needs an mrenclave or an mrsigner"),
    (lambda: SgxEnclave(bytes(48)), "mrenclave must be 32 bytes"),
    (lambda: SgxEnclave(MRENCLAVE, isv_prod_id=65536), "isv_prod_id must be an integer in 0..65535"),
    (lambda: SgxEnclave(MRENCLAVE, min_isv_svn=-1), "min_isv_svn must be an integer"),
    (lambda: SgxEnclave(MRENCLAVE, accept_tcb_status=[None]),  # type: ignore[list-item]
     "unknown TCB status None"),
])
def test_bad_expectation_arguments_are_refused(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(InvalidArgumentError, match=message):
        make()


# --- quote files ----------------------------------------------------------------------------------------------


def test_decode_quote_file_takes_binary_or_hex_text() -> None:
    assert decode_quote_file(TDX_QUOTE) == TDX_QUOTE
    assert decode_quote_file(SGX_QUOTE) == SGX_QUOTE
    hex_text = TDX_QUOTE.hex().upper()
    wrapped = "\n".join(hex_text[i:i + 64] for i in range(0, len(hex_text), 64)) + "\n"
    assert decode_quote_file(wrapped.encode()) == TDX_QUOTE
    assert decode_quote_file(b" " + SGX_QUOTE.hex().encode() + b"\r\n") == SGX_QUOTE
    with pytest.raises(AttestationError, match="odd number of digits"):
        decode_quote_file(TDX_QUOTE.hex().encode()[:-1])
    with pytest.raises(AttestationError, match="more than any DCAP quote"):
        decode_quote_file(b"0" * (4 * MAX_QUOTE_SIZE + 1))
    assert TDX.verify(decode_quote_file(wrapped.encode()), TDX_ENDORSEMENTS, at=AT).mrtd == MRTD


# --- properties: nothing but AttestationError, and nothing verifies ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=6000))
def test_random_bytes_never_verify(data: bytes) -> None:
    for verifier, endorsements in ((TDX, TDX_ENDORSEMENTS), (SGX, SGX_ENDORSEMENTS)):
        with pytest.raises(AttestationError):
            verifier.verify(data, endorsements, at=AT)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_random_stretches_in_the_authenticated_part_never_verify(data: st.DataObject) -> None:
    # A genuine header gets past the TEE type check into dcap-qvl's parser and verifier; the stretch replaced lies
    # in header, body, signature or attestation key, all of which the signatures cover. (Not in the PCK chain's
    # PEM text: its line breaks and armour are not signed, and dcap-qvl tolerates some changes there.)
    for verifier, quote, endorsements, end in ((TDX, TDX_QUOTE, TDX_ENDORSEMENTS, TDX_SIGNATURE + 128),
                                               (SGX, SGX_QUOTE, SGX_ENDORSEMENTS, SGX_SIGNATURE + 128)):
        start = data.draw(st.integers(0, end - 1))
        stretch = data.draw(st.binary(min_size=1, max_size=end - start))
        changed = quote[:start] + stretch + quote[start + len(stretch):]
        if changed != quote:
            with pytest.raises(AttestationError):
                verifier.verify(changed, endorsements, at=AT)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_truncated_genuine_quotes_never_verify(data: st.DataObject) -> None:
    tdx_length = data.draw(st.integers(0, TDX_QUOTE_LENGTH - 1))
    with pytest.raises(AttestationError):
        TDX.verify(TDX_QUOTE[:tdx_length], TDX_ENDORSEMENTS, at=AT)
    sgx_length = data.draw(st.integers(0, SGX_QUOTE_LENGTH - 1))
    with pytest.raises(AttestationError):
        SGX.verify(SGX_QUOTE[:sgx_length], SGX_ENDORSEMENTS, at=AT)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_flipped_bits_in_the_signed_part_or_signature_never_verify(data: st.DataObject) -> None:
    # Header, body and the ECDSA signature over them: every bit of those counts.
    offset = data.draw(st.integers(0, TDX_SIGNATURE + 64 - 1))
    with pytest.raises(AttestationError):
        TDX.verify(flip(TDX_QUOTE, offset, data.draw(st.integers(0, 7))), TDX_ENDORSEMENTS, at=AT)
    offset = data.draw(st.integers(0, SGX_SIGNATURE + 64 - 1))
    with pytest.raises(AttestationError):
        SGX.verify(flip(SGX_QUOTE, offset, data.draw(st.integers(0, 7))), SGX_ENDORSEMENTS, at=AT)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_random_collateral_never_verifies(collateral: bytes) -> None:
    with pytest.raises(AttestationError):
        TDX.verify(TDX_QUOTE, Endorsements(collateral=collateral), at=AT)


# --- the proxy's collateral sources ---------------------------------------------------------------------------


def test_collateral_file_serves_its_platforms_quotes(tmp_path: Path) -> None:
    path = tmp_path / "collateral.json"
    path.write_bytes(TDX_COLLATERAL)
    source = CollateralSource.from_file(path)
    collateral = source.collateral_for(TDX_QUOTE)
    assert json.loads(collateral) == json.loads(TDX_COLLATERAL)
    assert TDX.verify(TDX_QUOTE, Endorsements(collateral=collateral), at=AT).tcb_status == "UpToDate"
    with pytest.raises(AttestationError, match="is for TDX FMSPC B0C06F000000, the quote is from SGX FMSPC "
                                               "00A067110000"):
        source.collateral_for(SGX_QUOTE)
    assert "B0C06F000000" in repr(source)


def test_a_collateral_files_saved_pck_chain_is_not_served_for_a_quote_with_its_own(tmp_path: Path) -> None:
    chain = dcap_qvl.parse_quote(TDX_QUOTE).cert_chain_pem_bytes()
    assert chain is not None
    saved = json.loads(TDX_COLLATERAL) | {"pck_certificate_chain": chain.decode()}  # as a PCCS fetch saves it
    path = tmp_path / "fetched.json"
    path.write_text(json.dumps(saved))
    collateral = CollateralSource.from_file(path).collateral_for(TDX_QUOTE)
    assert "pck_certificate_chain" not in json.loads(collateral)
    assert TDX.verify(TDX_QUOTE, Endorsements(collateral=collateral), at=AT).mrtd == MRTD


def test_bad_collateral_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="DCAP collateral file not found"):
        CollateralSource.from_file(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(InvalidArgumentError, match="collateral file is empty"):
        CollateralSource.from_file(empty)
    bad = tmp_path / "bad.json"
    bad.write_text('{"tcb_info": "x"}')
    with pytest.raises(InvalidArgumentError, match=r"not DCAP collateral JSON.*missing field"):
        CollateralSource.from_file(bad)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_COLLATERAL_SIZE + 1))
    with pytest.raises(InvalidArgumentError, match="larger than"):
        CollateralSource.from_file(big)
    with pytest.raises(InvalidArgumentError, match="not a regular file"):
        CollateralSource.from_file(tmp_path)


@pytest.mark.parametrize("url", [
    "https://pccs.example.com", "https://pccs.example.com:8081/", "https://api.trustedservices.intel.com",
    "http://127.0.0.1:8081", "http://localhost:8081", "http://[::1]:8081/sgx/certification/v4",
])
def test_pccs_urls_accepted(url: str) -> None:
    assert check_pccs_url(url) == url.rstrip("/")


@pytest.mark.parametrize(("url", "message"), [
    ("http://pccs.example.com", "plain http to pccs.example.com, which is not loopback"),
    ("http://10.0.0.1:8081", "not loopback"),
    ("ftp://pccs.example.com", "must be https"),
    ("pccs.example.com", "must be https"),
    ("https://user:secret@pccs.example.com", "no credentials"),
    ("https://pccs.example.com/?token=1", "no credentials, query or fragment"),
    ("https://pccs.example.com:99999", "not a URL"),
    ("", "at most"),
])
def test_pccs_urls_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        CollateralSource.from_pccs(url)


def test_pccs_refresh_bounds_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="refresh_after"):
        CollateralSource.from_pccs("https://pccs.example.com", refresh_after=0)
    with pytest.raises(InvalidArgumentError, match="refresh_after"):
        CollateralSource.from_pccs("https://pccs.example.com", refresh_after=7 * 24 * 3600)
    with pytest.raises(InvalidArgumentError, match="timeout"):
        CollateralSource.from_pccs("https://pccs.example.com", timeout=-1)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Pccs:
    """A PCCS on loopback serving the samples' collateral in the shape Intel's PCCS serves it (the shape
    dcap-qvl's get_collateral reads): CRLs as DER (the root CA CRL as hex text), TCB info and QE identity as
    JSON with their signatures, issuer chains URL-encoded in response headers."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.delay = 0.0
        self.fail = False
        by_fmspc = {}
        for raw in (TDX_COLLATERAL, SGX_COLLATERAL):
            collateral = json.loads(raw)
            by_fmspc[json.loads(collateral["tcb_info"])["fmspc"].upper()] = collateral
        tdx, sgx = by_fmspc["B0C06F000000"], by_fmspc["00A067110000"]
        self._collateral = {"tdx": tdx, "sgx": sgx, "platform": tdx, "processor": sgx}
        pccs = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                pccs.requests.append(self.path)
                time.sleep(pccs.delay)
                found = None if pccs.fail else pccs.answer(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, headers = found
                self.send_response(200)
                for name, value in headers.items():
                    self.send_header(name, urllib.parse.quote(value))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, target: str) -> tuple[bytes, dict[str, str]] | None:
        split = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(split.query))
        tee, _, _, *rest = split.path.strip("/").split("/")
        path = "/".join(rest)
        if path == "pckcrl":
            c = self._collateral[query["ca"]]
            return bytes.fromhex(c["pck_crl"]), {"SGX-PCK-CRL-Issuer-Chain": c["pck_crl_issuer_chain"]}
        if path == "rootcacrl":
            return self._collateral["tdx"]["root_ca_crl"].encode(), {}
        if path == "tcb":
            c = next(c for c in self._collateral.values() if json.loads(c["tcb_info"])["fmspc"] == query["fmspc"])
            body = f'{{"tcbInfo":{c["tcb_info"]},"signature":"{c["tcb_info_signature"]}"}}'
            return body.encode(), {"TCB-Info-Issuer-Chain": c["tcb_info_issuer_chain"]}
        if path == "qe/identity":
            c = self._collateral[tee]
            body = f'{{"enclaveIdentity":{c["qe_identity"]},"signature":"{c["qe_identity_signature"]}"}}'
            return body.encode(), {"SGX-Enclave-Identity-Issuer-Chain": c["qe_identity_issuer_chain"]}
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pccs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pccs]:
    # dcap-qvl's HTTP client honours the proxy variables; the loopback PCCS must be asked directly.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    server = Pccs()
    yield server
    server.close()


def test_pccs_collateral_is_fetched_cached_and_refreshed(pccs: Pccs) -> None:
    clock = FakeClock()
    source = PccsCollateral(pccs.url, refresh_after=60, clock=clock)
    collateral = source.collateral_for(TDX_QUOTE)
    # What dcap-qvl asks a PCCS for, in order, for the TDX sample (FMSPC B0C06F000000, PCK Platform CA).
    assert [r.split("?")[0] for r in pccs.requests] == [
        "/sgx/certification/v4/pckcrl", "/tdx/certification/v4/tcb", "/tdx/certification/v4/qe/identity",
        "/sgx/certification/v4/rootcacrl",
    ]
    assert "ca=platform" in pccs.requests[0] and "fmspc=B0C06F000000" in pccs.requests[1]
    assert "pck_certificate_chain" not in json.loads(collateral)  # the quote carries its own
    assert TDX.verify(TDX_QUOTE, Endorsements(collateral=collateral), at=AT).tcb_status == "UpToDate"

    assert source.collateral_for(TDX_QUOTE) == collateral
    assert len(pccs.requests) == 4  # reused

    sgx = source.collateral_for(SGX_QUOTE)  # another platform: its own entry
    assert len(pccs.requests) == 8
    assert "ca=processor" in pccs.requests[4] and pccs.requests[5].startswith("/sgx/certification/v4/tcb")
    assert SGX.verify(SGX_QUOTE, Endorsements(collateral=sgx), at=AT).tcb_status == SGX_STATUS

    clock.now += 61
    assert source.collateral_for(TDX_QUOTE) == collateral
    assert len(pccs.requests) == 12  # refreshed after refresh_after


def test_pccs_collateral_from_inside_an_event_loop(pccs: Pccs) -> None:
    async def proxy() -> bytes:
        return CollateralSource.from_pccs(pccs.url).collateral_for(SGX_QUOTE)

    collateral = asyncio.run(proxy())
    assert SGX.verify(SGX_QUOTE, Endorsements(collateral=collateral), at=AT).mrenclave == MRENCLAVE


def test_pccs_failures_are_attestation_errors(pccs: Pccs) -> None:
    pccs.fail = True
    with pytest.raises(AttestationError, match=r"fetching DCAP collateral from http://127\.0\.0\.1:\d+ failed: "
                                               r".*HTTP 404"):
        CollateralSource.from_pccs(pccs.url).collateral_for(TDX_QUOTE)
    pccs.fail = False
    pccs.delay = 1.0
    with pytest.raises(AttestationError, match=r"took more than 0\.2 s"):
        CollateralSource.from_pccs(pccs.url, timeout=0.2).collateral_for(TDX_QUOTE)
    with pytest.raises(AttestationError, match="no quote"):
        CollateralSource.from_pccs(pccs.url).collateral_for(b"")
