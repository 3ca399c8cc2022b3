"""The SEV-SNP verifier against genuine AMD evidence (tests/vectors/sev-snp, see its PROVENANCE.md) and a test
double of AMD's chain (tests/snp_test_chain.py) for what no genuine vector shows: a debug policy, VLEK-signed
reports, Turin, other versions, a report whose contents the test chooses.

VLEK: AMD's ASVK/ARK chains (bundled, and copied in tests/vectors/sev-snp) are genuine, and tested here against the
pinned ARKs; every VLEK certificate and VLEK-signed report is the test double's, since no genuine one is among the
vectors. So the VLEK path is shown consistent with go-sev-guest's reading of AMD's VLEK certificate definition, not
with a real EC2 report.

Times: the genuine vectors carry no timestamp; they are verified at 2024-01-01T00:00Z, inside the validity of
both VCEKs (go-sev-guest's 2022-09-24..2029-09-24, virtee's 2023-04-03..2030-04-03) and of AMD's Milan ASK and
ARK (2020-10-22..2045-10-22), and refused at 2029-10-01 (after go-sev-guest's VCEK expired) and at 2022-09-01
(before it was issued).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import struct
from importlib import resources
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asylo.identity.identity import EnclaveIdentity
from asylo.identity.launch import Endorsements
from asylo.identity.snp import (
    AMD_ARK_ROOTS,
    ARK_GENOA_SHA256,
    ARK_MILAN_SHA256,
    ARK_TURIN_SHA256,
    CERT_TABLE_GUIDS,
    MAX_CERT_TABLE_ENTRIES,
    REPORT_SIZE,
    SnpLaunch,
    SnpLaunchIdentity,
    SnpQuoteVerifier,
    SnpTcb,
    build_cert_table,
    cert_table_endorsements,
    decode_report_file,
    parse_cert_table,
    parse_report,
)
from asylo.identity.snp.certs import (
    BUNDLED_VLEK_CHAIN_FILES,
    bundled_chain_for,
    bundled_chains,
    certificate_signing_key,
    read_vek_extensions,
)
from asylo.identity.x509chain import certificate_sha256, check_chain
from asylo.status import AttestationError, InvalidArgumentError
from tests.snp_test_chain import (
    DEBUG_POLICY,
    DEFAULT_CSP_ID,
    VALID_AT,
    SnpTestChain,
    der_ia5,
    der_spl,
    vcek_extensions,
    vlek_extensions,
)

# AMD's VCEKs have serial number 0, which cryptography warns about on loading (RFC 5280 wants it positive); the
# certificates are AMD's as they are, and the warning says nothing about the verifier.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")

VECTORS = Path(__file__).parent / "vectors" / "sev-snp"
AT = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
GO_REPORT = (VECTORS / "attestation.bin").read_bytes()
GO_VCEK = (VECTORS / "vcek.der").read_bytes()
VIRTEE_REPORT_HEX = (VECTORS / "virtee_report_milan.hex").read_bytes()
VIRTEE_REPORT = decode_report_file(VIRTEE_REPORT_HEX)
VIRTEE_VCEK = (VECTORS / "virtee_vcek_milan.der").read_bytes()
GO_MEASUREMENT = bytes.fromhex("b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
                               "6bdf8a9ece31a5a608eb0cf2e4872b01")
VIRTEE_MEASUREMENT = bytes.fromhex("7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
                                   "3e1a0dc39b2c60bd95b9c480cd81841f")
MEASUREMENT = bytes(range(48))
REPORT_DATA = bytes(range(64, 128))


def _chain_der(name: str) -> tuple[bytes, bytes]:
    ask, ark = x509.load_pem_x509_certificates((VECTORS / name).read_bytes())
    return ask.public_bytes(Encoding.DER), ark.public_bytes(Encoding.DER)


MILAN = _chain_der("ask_ark_milan.pem")
GENOA = _chain_der("ask_ark_genoa.pem")
VERIFIER = SnpQuoteVerifier()


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1 << bit]) + data[offset + 1:]


def patch_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<I", value) + data[offset + 4:]


@pytest.fixture(scope="module")
def chain() -> SnpTestChain:
    return SnpTestChain.generate()


@pytest.fixture(scope="module")
def turin_chain() -> SnpTestChain:
    return SnpTestChain.generate(product="Turin")


def pinned_verifier(chain: SnpTestChain) -> SnpQuoteVerifier:
    return SnpQuoteVerifier(pinned_roots=chain.pinned_roots)


def verify_test(chain: SnpTestChain, report: bytes) -> SnpLaunchIdentity:
    return SnpQuoteVerifier(pinned_roots=chain.pinned_roots).verify(
        report, Endorsements(chain.certificates()), at=VALID_AT)


# --- Genuine evidence accepted -----------------------------------------------------------------------------------

def test_go_sev_guest_report_verifies_with_the_milan_chain() -> None:
    launch = VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK, *MILAN)), at=AT)
    assert launch.kind == "snp" and launch.product == "Milan" and launch.signing_key == "vcek"
    assert launch.measurement == GO_MEASUREMENT
    assert launch.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert launch.policy == 0xB0000 and launch.debug  # go-sev-guest's test guest allows debugging
    assert launch.vmpl == 0 and launch.version == 2 and launch.guest_svn == 0
    assert launch.reported_tcb == SnpTcb(bootloader=2, tee=0, snp=5, microcode=0x44)
    assert launch.chip_id.hex().startswith("3ac3fe21e13fb099")
    as_json = launch.to_json()
    assert next(iter(as_json)) == "kind" and as_json["measurement"] == GO_MEASUREMENT.hex()
    assert "Milan" in launch.describe() and GO_MEASUREMENT.hex() in launch.describe()


def test_virtee_report_verifies_with_the_milan_chain() -> None:
    launch = VERIFIER.verify(VIRTEE_REPORT, Endorsements((VIRTEE_VCEK, *MILAN)), at=AT)
    assert launch.product == "Milan" and launch.measurement == VIRTEE_MEASUREMENT
    assert launch.policy == 0x30000 and not launch.debug
    assert launch.reported_tcb == SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)
    assert launch.chip_id.hex().startswith("d49554ec717f4e5b")


@pytest.mark.parametrize(("report", "vcek"), [(GO_REPORT, GO_VCEK), (VIRTEE_REPORT, VIRTEE_VCEK)],
                         ids=["go-sev-guest", "virtee"])
def test_genuine_reports_verify_with_the_bundled_chain(report: bytes, vcek: bytes) -> None:
    full = VERIFIER.verify(report, Endorsements((vcek, *MILAN)), at=AT)
    assert VERIFIER.verify(report, Endorsements((vcek,)), at=AT) == full
    assert VERIFIER.verify(report, Endorsements((vcek, MILAN[0])), at=AT) == full  # VCEK and ASK: ARK bundled


def test_only_the_vcek_needs_the_bundled_chains() -> None:
    verifier = SnpQuoteVerifier(bundled_chains=False)
    with pytest.raises(AttestationError, match=r"only the VCEK.*bundled chains are off"):
        verifier.verify(GO_REPORT, Endorsements((GO_VCEK,)), at=AT)
    assert verifier.verify(GO_REPORT, Endorsements((GO_VCEK, *MILAN)), at=AT).product == "Milan"


def test_report_files_as_tools_write_them() -> None:
    assert len(VIRTEE_REPORT) == REPORT_SIZE
    assert decode_report_file(VIRTEE_REPORT_HEX.lower()) == VIRTEE_REPORT
    wrapped = b"\n".join(VIRTEE_REPORT_HEX[i:i + 64] for i in range(0, len(VIRTEE_REPORT_HEX), 64))
    assert decode_report_file(b"  " + wrapped.replace(b"00", b"0 0") + b"\r\n") == VIRTEE_REPORT
    assert decode_report_file(GO_REPORT) == GO_REPORT
    with pytest.raises(AttestationError, match=r"2366 digits, expected 2368"):
        decode_report_file(VIRTEE_REPORT_HEX[:-2])
    with pytest.raises(AttestationError, match=r"neither"):
        decode_report_file(GO_REPORT[:-1])
    with pytest.raises(AttestationError, match=r"over the limit"):
        decode_report_file(b" " * 70_000)


def test_the_bundled_chains_are_amds() -> None:
    folder = resources.files("asylo.identity.snp").joinpath("amd")
    for name, digest in (("ask_ark_milan.pem", ARK_MILAN_SHA256), ("ask_ark_genoa.pem", ARK_GENOA_SHA256),
                         ("ask_ark_turin_vcek.pem", ARK_TURIN_SHA256)):
        bundled = folder.joinpath(name).read_bytes()
        assert bundled == (VECTORS / name).read_bytes()
        ark = x509.load_pem_x509_certificates(bundled)[1]
        assert certificate_sha256(ark) == digest
        assert AMD_ARK_ROOTS[digest] == ark.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def test_genuine_vcek_extensions() -> None:
    extensions = read_vek_extensions(x509.load_der_x509_certificate(VIRTEE_VCEK), turin=False)
    assert extensions.product_name == "Milan-B0" and extensions.product_line == "Milan"
    assert extensions.tcb == SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)
    assert extensions.hwid == parse_report(VIRTEE_REPORT).chip_id and extensions.csp_id is None


# --- Genuine evidence refused ------------------------------------------------------------------------------------

def test_a_flipped_bit_in_the_signature_is_refused() -> None:
    with pytest.raises(AttestationError, match=r"signature does not verify"):
        VERIFIER.verify(flip(GO_REPORT, 0x2A0 + 5), Endorsements((GO_VCEK, *MILAN)), at=AT)
    with pytest.raises(AttestationError, match=r"signature does not verify"):
        VERIFIER.verify(flip(GO_REPORT, 0x2E8 + 71, 7), Endorsements((GO_VCEK, *MILAN)), at=AT)  # S's top byte


def test_a_flipped_bit_in_the_measurement_is_refused() -> None:
    altered = flip(GO_REPORT, 0x90 + 17, 3)
    assert parse_report(altered).measurement != GO_MEASUREMENT
    with pytest.raises(AttestationError, match=r"signature does not verify"):
        VERIFIER.verify(altered, Endorsements((GO_VCEK, *MILAN)), at=AT)


def test_a_root_not_pinned_is_refused(chain: SnpTestChain) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    with pytest.raises(AttestationError, match=r"ARK certificate .* is not a root pinned by this pyasylo"):
        VERIFIER.verify(report, Endorsements(chain.certificates()), at=VALID_AT)
    with pytest.raises(AttestationError, match=r"no bundled AMD chain issued it"):
        VERIFIER.verify(report, Endorsements(chain.certificates()[:1]), at=VALID_AT)
    # And the other way round: a verifier pinning only the test root refuses AMD's.
    with pytest.raises(AttestationError, match=r"not a root pinned.*trusted: ARK-Milan \(test double\)"):
        pinned_verifier(chain).verify(GO_REPORT, Endorsements((GO_VCEK, *MILAN)), at=AT)


def test_a_genuine_milan_vcek_under_genoas_chain_is_refused() -> None:
    with pytest.raises(AttestationError, match=r"VCEK certificate is not signed by the ASK"):
        VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK, *GENOA)), at=AT)
    with pytest.raises(AttestationError, match=r"VCEK certificate is not signed by the ASK"):
        VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK, GENOA[0])), at=AT)  # Genoa's ARK completed from bundle


@pytest.mark.parametrize("when", [datetime.datetime(2029, 10, 1, tzinfo=datetime.UTC),
                                  datetime.datetime(2022, 9, 1, tzinfo=datetime.UTC)], ids=["after", "before"])
def test_a_time_outside_the_vceks_validity_is_refused(when: datetime.datetime) -> None:
    with pytest.raises(AttestationError, match=r"VCEK certificate is not valid at .*valid from 2022-09-24"):
        VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK, *MILAN)), at=when)


def test_a_vcek_of_another_chip_is_refused() -> None:
    with pytest.raises(AttestationError, match=r"VCEK's hwID d49554ec.* is not the report's CHIP_ID 3ac3fe21"):
        VERIFIER.verify(GO_REPORT, Endorsements((VIRTEE_VCEK, *MILAN)), at=AT)


def test_a_vcek_for_another_tcb_is_refused(chain: SnpTestChain) -> None:
    older = SnpTcb(bootloader=4, tee=0, snp=21, microcode=213)
    with pytest.raises(AttestationError, match=r"VCEK certifies TCB bl=4 tee=0 snp=22 .*REPORTED_TCB is bl=4 "
                                               r"tee=0 snp=21"):
        verify_test(chain, chain.make_report(REPORT_DATA, measurement=MEASUREMENT, reported_tcb=older))


def test_wrong_length_and_unknown_versions_are_refused() -> None:
    for data in (b"", GO_REPORT[:-1], GO_REPORT + b"\0"):
        with pytest.raises(AttestationError, match=f"is 1184 bytes, got {len(data)}"):
            VERIFIER.verify(data, Endorsements((GO_VCEK, *MILAN)), at=AT)
    for version in (0, 1, 6, 2**32 - 1):
        with pytest.raises(AttestationError, match=f"version {version} is not one this verifier reads"):
            parse_report(patch_u32(GO_REPORT, 0, version))


def test_a_bad_signature_algorithm_is_refused(chain: SnpTestChain) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, signature_algo=2)
    with pytest.raises(AttestationError, match=r"SIGNATURE_ALGO is 2, expected 1"):
        verify_test(chain, report)
    with pytest.raises(AttestationError, match=r"SIGNATURE_ALGO is 0, expected 1"):
        VERIFIER.verify(patch_u32(GO_REPORT, 0x34, 0), Endorsements((GO_VCEK, *MILAN)), at=AT)


def test_vlek_selected_unsigned_and_reserved_key_selections_are_refused(chain: SnpTestChain) -> None:
    # The report selects the VLEK (SIGNING_KEY 1) and comes with the VCEK chain: VLEK reports are verified now,
    # but only against a VLEK certificate.
    with pytest.raises(AttestationError, match=r"KEY_INFO selects the VLEK \(signing key 1\), but the endorsements' "
                                               r"leaf certificate is a VCEK"):
        verify_test(chain, chain.make_report(REPORT_DATA, measurement=MEASUREMENT, key_info=1 << 2))
    with pytest.raises(AttestationError, match=r"not signed"):
        verify_test(chain, chain.make_report(REPORT_DATA, measurement=MEASUREMENT, key_info=7 << 2))
    with pytest.raises(AttestationError, match=r"reserved SIGNING_KEY value 3"):
        parse_report(chain.make_report(REPORT_DATA, measurement=MEASUREMENT, key_info=3 << 2))


def test_a_masked_chip_id_is_refused(chain: SnpTestChain) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, chip_id=bytes(64), key_info=1 << 1)
    with pytest.raises(AttestationError, match=r"CHIP_ID is masked"):
        verify_test(chain, report)


def test_bytes_in_the_unsigned_signature_tail_are_refused() -> None:
    with pytest.raises(AttestationError, match=r"reserved bytes after the signature's R and S are not zero"):
        parse_report(flip(GO_REPORT, REPORT_SIZE - 1))


def test_malformed_endorsements_are_refused() -> None:
    with pytest.raises(AttestationError, match=r"no VCEK certificate"):
        VERIFIER.verify(GO_REPORT, Endorsements(()), at=AT)
    with pytest.raises(AttestationError, match=r"4 certificates, at most 3"):
        VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK, *MILAN, MILAN[1])), at=AT)
    with pytest.raises(AttestationError, match=r"VCEK is not a DER X.509 certificate"):
        VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK[:-1], *MILAN)), at=AT)
    with pytest.raises(AttestationError, match=r"VCEK's key is not an EC P-384 key"):  # the ASK where the VCEK goes
        VERIFIER.verify(GO_REPORT, Endorsements((MILAN[0], MILAN[1], MILAN[1])), at=AT)


# --- The expectation ---------------------------------------------------------------------------------------------

def _virtee_launch() -> SnpLaunchIdentity:
    return VERIFIER.verify(VIRTEE_REPORT, Endorsements((VIRTEE_VCEK,)), at=AT)


def test_a_measurement_that_differs_is_refused() -> None:
    launch = _virtee_launch()
    assert SnpLaunch(VIRTEE_MEASUREMENT).launch_mismatch(launch) is None
    reason = SnpLaunch(GO_MEASUREMENT).launch_mismatch(launch)
    assert reason == f"SNP measurement is {VIRTEE_MEASUREMENT.hex()}, expected {GO_MEASUREMENT.hex()}"
    identity = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                               platform="snp", launch=launch)
    with pytest.raises(AttestationError, match=f"SNP measurement is {VIRTEE_MEASUREMENT.hex()}"):
        SnpLaunch(GO_MEASUREMENT).check(identity)
    SnpLaunch(VIRTEE_MEASUREMENT).check(identity)
    sim = EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False, platform="sim")
    assert SnpLaunch(VIRTEE_MEASUREMENT).mismatch(sim) == ("expected a verified snp launch, the enclave has no "
                                                           "hardware launch (platform 'sim')")


def test_a_tcb_floor_above_the_reports_is_refused() -> None:
    launch = _virtee_launch()
    assert SnpLaunch(VIRTEE_MEASUREMENT, min_tcb=SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)).launch_mismatch(
        launch) is None
    reason = SnpLaunch(VIRTEE_MEASUREMENT, min_tcb=SnpTcb(bootloader=2, tee=0, snp=9, microcode=200)
                       ).launch_mismatch(launch)
    assert reason == ("SNP reported TCB bl=3 tee=0 snp=8 ucode=115 is below the minimum bl=2 tee=0 snp=9 ucode=200 "
                      "(snp 8 < 9, microcode 115 < 200)")


def test_debug_is_refused_unless_allowed(chain: SnpTestChain) -> None:
    launch = verify_test(chain, chain.make_report(REPORT_DATA, measurement=MEASUREMENT, policy=DEBUG_POLICY))
    assert launch.debug and launch.policy == DEBUG_POLICY
    reason = SnpLaunch(MEASUREMENT).launch_mismatch(launch)
    assert reason is not None and "policy 0xb0000 allows debugging" in reason and "allow_debug=True" in reason
    assert SnpLaunch(MEASUREMENT, allow_debug=True).launch_mismatch(launch) is None
    genuine = VERIFIER.verify(GO_REPORT, Endorsements((GO_VCEK,)), at=AT)
    assert "allows debugging" in (SnpLaunch(GO_MEASUREMENT).launch_mismatch(genuine) or "")
    assert SnpLaunch(GO_MEASUREMENT, allow_debug=True).launch_mismatch(genuine) is None


def test_every_failed_field_is_listed(chain: SnpTestChain) -> None:
    launch = verify_test(chain, chain.make_report(REPORT_DATA, measurement=MEASUREMENT, vmpl=2, guest_svn=3,
                                                  host_data=b"h" * 32, family_id=b"f" * 16, image_id=b"i" * 16,
                                                  id_key_digest=b"k" * 48))
    assert launch.vmpl == 2 and launch.guest_svn == 3
    expectation = SnpLaunch(MEASUREMENT, vmpl=0, min_guest_svn=4, host_data=bytes(32), family_id=bytes(16),
                            image_id=bytes(16), id_key_digest=bytes(48))
    reason = expectation.launch_mismatch(launch) or ""
    for part in ("SNP VMPL is 2, expected 0", "guest SVN is 3, below the minimum 4",
                 f"host_data is {(b'h' * 32).hex()}, expected {bytes(32).hex()}", "family_id is", "image_id is",
                 "id_key_digest is"):
        assert part in reason
    assert SnpLaunch(MEASUREMENT, vmpl=None, min_guest_svn=3, host_data=b"h" * 32, family_id=b"f" * 16,
                     image_id=b"i" * 16, id_key_digest=b"k" * 48).launch_mismatch(launch) is None


def test_expectation_arguments_and_description() -> None:
    for bad in (bytes(32), bytes(49), "00" * 48):
        with pytest.raises(InvalidArgumentError, match=r"measurement must be 48 bytes"):
            SnpLaunch(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"vmpl"):
        SnpLaunch(MEASUREMENT, vmpl=4)
    with pytest.raises(InvalidArgumentError, match=r"min_tcb"):
        SnpLaunch(MEASUREMENT, min_tcb=0x44)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"must be hex"):
        SnpLaunch.from_hex("zz")
    expectation = SnpLaunch.from_hex(VIRTEE_MEASUREMENT.hex().upper(), min_tcb=SnpTcb(3, 0, 8, 115))
    assert expectation.measurement == VIRTEE_MEASUREMENT
    assert expectation.describe() == (f"SNP launch measurement {VIRTEE_MEASUREMENT.hex()}, VMPL 0, TCB >= bl=3 "
                                      "tee=0 snp=8 ucode=115, no debug")
    assert expectation.constrains_launch("snp") and expectation.constrains_launch("tdx")
    # Without a measurement or ID key nothing pins the guest image, so the expectation does not constrain an SNP
    # launch (the host would accept whatever guest the hypervisor chose to start).
    assert not SnpLaunch(min_tcb=SnpTcb(3, 0, 8, 115)).constrains_launch("snp")
    assert SnpLaunch(id_key_digest=bytes(range(48))).constrains_launch("snp")
    # All zeros is what a guest launched without an ID block reports: it pins nothing.
    assert not SnpLaunch(id_key_digest=bytes(48)).constrains_launch("snp")


def test_verifier_arguments() -> None:
    with pytest.raises(InvalidArgumentError, match=r"non-empty mapping"):
        SnpQuoteVerifier(pinned_roots={})
    with pytest.raises(InvalidArgumentError, match=r"32 bytes"):
        SnpQuoteVerifier(pinned_roots={b"short": "ARK-Milan"})
    with pytest.raises(InvalidArgumentError, match=r"must be 'ARK-Milan'"):
        SnpQuoteVerifier(pinned_roots={bytes(32): "my root"})


# --- The test double's reports -----------------------------------------------------------------------------------

def test_the_test_chain_round_trip(chain: SnpTestChain) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, guest_svn=7)
    launch = verify_test(chain, report)
    assert launch.product == "Milan" and launch.measurement == MEASUREMENT and launch.report_data == REPORT_DATA
    assert launch.reported_tcb == chain.tcb and launch.chip_id == chain.chip_id and launch.guest_svn == 7
    assert not launch.debug and SnpLaunch(MEASUREMENT).launch_mismatch(launch) is None
    parsed = parse_report(report)
    assert parsed.current_version == (1, 55, 22) and parsed.report_id_ma == b"\xff" * 32
    # Through the hypervisor's certificate table, as configfs-tsm's auxblob carries it.
    endorsements = cert_table_endorsements(chain.cert_table())
    assert endorsements.certificates == chain.certificates()
    assert SnpQuoteVerifier(pinned_roots=chain.pinned_roots).verify(report, endorsements, at=VALID_AT) == launch


@pytest.mark.parametrize("version", [3, 4, 5])
def test_later_report_versions(chain: SnpTestChain, version: int) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=version)
    parsed = parse_report(report)
    assert (parsed.cpuid_family, parsed.cpuid_model, parsed.cpuid_stepping) == (0x19, 0x01, 0x01)
    assert (parsed.launch_mit_vector is not None) == (version >= 5)
    assert verify_test(chain, report).version == version
    with pytest.raises(AttestationError, match=r"CPUID_FAM_ID 0x17 is not a family this verifier knows"):
        parse_report(chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=version, cpuid=(0x17, 1, 0)))


def test_turin(turin_chain: SnpTestChain) -> None:
    for version in (2, 3):  # v2: known by its 8-byte chip id; v3: by CPUID family 0x1A
        launch = verify_test(turin_chain, turin_chain.make_report(REPORT_DATA, measurement=MEASUREMENT,
                                                                  version=version))
        assert launch.product == "Turin" and launch.reported_tcb == turin_chain.tcb and launch.reported_tcb.fmc == 1
    floor = SnpLaunch(MEASUREMENT, min_tcb=SnpTcb(bootloader=1, tee=1, snp=3, microcode=72, fmc=2))
    assert floor.launch_mismatch(launch) == ("SNP reported TCB fmc=1 bl=1 tee=1 snp=3 ucode=72 is below the minimum "
                                             "fmc=2 bl=1 tee=1 snp=3 ucode=72 (fmc 1 < 2)")
    # A report that names the Milan/Genoa family under a Turin root would have its TCB misread: refused, by the
    # parser when Turin's bytes land in Milan's reserved ones, else by the verifier.
    misnamed = turin_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=3, cpuid=(0x19, 1, 1))
    with pytest.raises(AttestationError, match=r"CURRENT_TCB: TCB_VERSION .* nonzero reserved bytes \[2, 3\] in "
                                               r"the Milan/Genoa layout"):
        verify_test(turin_chain, misnamed)
    misnamed = turin_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=3, cpuid=(0x19, 1, 1),
                                       reported_tcb=SnpTcb(bootloader=1, tee=0, snp=0, microcode=72, fmc=1))
    with pytest.raises(AttestationError, match=r"TCB fields are in Milan's/Genoa's layout, but its VCEK chains to "
                                               r"ARK-Turin"):
        verify_test(turin_chain, misnamed)


def test_a_turin_report_under_a_milan_root_is_refused(chain: SnpTestChain) -> None:
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=3, cpuid=(0x1A, 2, 0),
                               reported_tcb=SnpTcb(bootloader=0, tee=0, snp=0, microcode=213))
    assert parse_report(report).turin_tcb_layout
    with pytest.raises(AttestationError, match=r"TCB fields are in Turin's layout, but its VCEK chains to ARK-Milan "
                                               r"\(test double\)"):
        verify_test(chain, report)


def _replace_extension(chain: SnpTestChain, suffix: str, value: bytes | None) -> SnpTestChain:
    """The chain with the VCEK's AMD extension 1.3.6.1.4.1.3704.1.<suffix> set to `value` (None: removed)."""
    oid = f"1.3.6.1.4.1.3704.1.{suffix}"
    extensions = [e for e in vcek_extensions(chain.product, chain.tcb, chain.chip_id) if e.oid.dotted_string != oid]
    if value is not None:
        extensions.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value))
    return chain.with_vcek_extensions(extensions)


@pytest.mark.parametrize(("suffix", "value", "message"), [
    ("4", None, r"VCEK has no hwID extension"),
    ("4", bytes(63), r"hwID is not a DER element of type 0x04"),
    ("4", bytes([0x04, 64]) + bytes(64), r"hwID 0{128} is not the report's CHIP_ID"),
    ("3.8", None, r"VCEK certificate has no microcode SPL extension \(1.3.6.1.4.1.3704.1.3.8\)"),
    ("3.1", bytes([0x02, 0x02, 0x00, 0x04]), r"bootloader SPL is not a DER integer in 0..255"),
    ("3.1", bytes([0x02, 0x01, 0x04, 0x00]), r"DER length 1 that is not the 2 bytes it holds"),
    ("3.4", der_spl(1), r"nonzero reserved SPL 1.3.6.1.4.1.3704.1.3.4"),
    ("2", der_ia5("Genoa-B0"), r"VCEK is for product 'Genoa-B0' but chains to ARK-Milan \(test double\)"),
    ("2", bytes([0x0C, 8]) + b"Milan-B0", r"product name is not a DER element of type 0x16"),
    ("5", der_ia5("a cloud"), r"VCEK certificate has both a hwID and a CSP id"),
], ids=["no-hwid", "short-hwid", "other-wrapped-hwid", "no-ucode", "non-minimal-int", "bad-length", "reserved-spl",
        "other-product", "utf8-product", "csp-id"])
def test_malformed_vcek_extensions_are_refused(chain: SnpTestChain, suffix: str, value: bytes | None,
                                                message: str) -> None:
    altered = _replace_extension(chain, suffix, value)
    with pytest.raises(AttestationError, match=message):
        verify_test(altered, altered.make_report(REPORT_DATA, measurement=MEASUREMENT))


def test_a_tagged_hwid_is_read_like_a_bare_one(chain: SnpTestChain) -> None:
    altered = _replace_extension(chain, "4", bytes([0x04, 64]) + chain.chip_id)
    assert verify_test(altered, altered.make_report(REPORT_DATA, measurement=MEASUREMENT)).chip_id == chain.chip_id


def test_save_and_load(chain: SnpTestChain, tmp_path: Path) -> None:
    chain.save(tmp_path / "chain")
    loaded = SnpTestChain.load(tmp_path / "chain")
    assert loaded.certificates() == chain.certificates() and loaded.tcb == chain.tcb
    assert loaded.pinned_roots == chain.pinned_roots
    assert (tmp_path / "chain" / "vcek-key.pem").stat().st_mode & 0o77 == 0
    assert verify_test(chain, loaded.make_report(REPORT_DATA, measurement=MEASUREMENT)).chip_id == chain.chip_id


# --- VLEK-signed reports (test doubles only: no genuine VLEK report is among the vectors) ------------------------

@pytest.fixture(scope="module")
def vlek_chain() -> SnpTestChain:
    return SnpTestChain.generate_vlek()


def _amd_name(common_name: str) -> x509.Name:
    """A subject as the double names its certificates, with the common name chosen."""
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyasylo test double (not AMD)"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def test_the_bundled_vlek_chains_are_amds() -> None:
    """AMD's ASVK/ARK chains (go-sev-guest's copies of what AMD's KDS serves at /vlek/v1/<product>/cert_chain):
    bundled byte for byte as in the vectors, each ARK the pinned one and the VCEK chain's own, each ASVK signed by
    it, named as AMD names its ASVKs, and not the ASK."""
    folder = resources.files("asylo.identity.snp").joinpath("amd")
    vcek_chains = {chain.product: chain for chain in bundled_chains()}
    vlek_chains = {chain.product: chain for chain in bundled_chains("vlek")}
    assert set(vlek_chains) == set(BUNDLED_VLEK_CHAIN_FILES) == {"Milan", "Genoa", "Turin"}
    for product, name in BUNDLED_VLEK_CHAIN_FILES.items():
        bundled = folder.joinpath(name).read_bytes()
        assert bundled == (VECTORS / name).read_bytes()
        asvk, ark = x509.load_pem_x509_certificates(bundled)
        chain = vlek_chains[product]
        assert chain.signing_key == "vlek" and chain.ask == asvk and chain.ark == ark
        assert certificate_sha256(ark) == {"Milan": ARK_MILAN_SHA256, "Genoa": ARK_GENOA_SHA256,
                                           "Turin": ARK_TURIN_SHA256}[product]
        assert ark == vcek_chains[product].ark  # the same root as the VCEK's chain
        assert asvk != vcek_chains[product].ask
        assert asvk.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"SEV-VLEK-{product}"
        assert check_chain((asvk, ark), ("ASVK", "ARK"), at=AT, pinned_roots=AMD_ARK_ROOTS) == f"ARK-{product}"
    with pytest.raises(InvalidArgumentError, match=r"one of vcek, vlek"):
        bundled_chains("ask")


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
def test_a_vlek_report_verifies(product: str) -> None:
    vlek_chain = SnpTestChain.generate_vlek(product=product, csp_id="a cloud provider")
    version = 3 if product == "Turin" else 2
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, version=version)
    assert parse_report(report).signing_key == "vlek"
    launch = verify_test(vlek_chain, report)
    assert launch.signing_key == "vlek" and launch.csp_id == "a cloud provider" and launch.product == product
    assert launch.reported_tcb == vlek_chain.tcb and launch.measurement == MEASUREMENT
    assert launch.chip_id == vlek_chain.chip_id  # what the firmware signed; no certificate names it
    as_json = launch.to_json()
    assert as_json["signing_key"] == "vlek" and as_json["csp_id"] == "a cloud provider"
    assert "VLEK of CSP 'a cloud provider'" in launch.describe()
    assert SnpLaunch(MEASUREMENT, min_tcb=vlek_chain.tcb).launch_mismatch(launch) is None
    extensions = read_vek_extensions(vlek_chain.vlek, turin=product == "Turin", what="VLEK")
    assert extensions.hwid is None and extensions.csp_id == "a cloud provider" and extensions.product_name == product
    assert extensions.signing_key == "vlek" and certificate_signing_key(vlek_chain.vlek) == "vlek"


def test_a_vlek_report_through_the_certificate_table(vlek_chain: SnpTestChain) -> None:
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    table = vlek_chain.cert_table()
    assert set(parse_cert_table(table)) == {"vlek", "ask", "ark"}  # the ASVK travels under the ASK's GUID
    endorsements = cert_table_endorsements(table)
    assert endorsements.certificates == vlek_chain.certificates()
    assert cert_table_endorsements(table, signing_key="vlek") == endorsements
    launch = pinned_verifier(vlek_chain).verify(report, endorsements, at=VALID_AT)
    assert launch == verify_test(vlek_chain, report) and launch.csp_id == DEFAULT_CSP_ID
    # The leaf and the ASVK, the ARK left out: not AMD's, so no bundled ARK completes it.
    with pytest.raises(AttestationError, match=r"carry the VLEK and ASVK but no ARK, and no bundled AMD ARK issued "
                                               r"the ASVK"):
        pinned_verifier(vlek_chain).verify(report, Endorsements(vlek_chain.certificates()[:2]), at=VALID_AT)


def test_a_table_with_both_a_vcek_and_a_vlek_gives_the_one_asked_for(chain: SnpTestChain,
                                                                      vlek_chain: SnpTestChain) -> None:
    table = build_cert_table({"vcek": chain.certificates()[0], "vlek": vlek_chain.certificates()[0]})
    assert cert_table_endorsements(table).certificates == chain.certificates()[:1]
    assert cert_table_endorsements(table, signing_key="vcek").certificates == chain.certificates()[:1]
    assert cert_table_endorsements(table, signing_key="vlek").certificates == vlek_chain.certificates()[:1]
    only_vcek = build_cert_table({"vcek": chain.certificates()[0]})
    with pytest.raises(AttestationError, match=r"the certificate table has no VLEK \(it has: vcek\)"):
        cert_table_endorsements(only_vcek, signing_key="vlek")
    with pytest.raises(InvalidArgumentError, match=r"one of vcek, vlek"):
        cert_table_endorsements(only_vcek, signing_key="none")


def test_a_vlek_report_with_a_masked_chip_id_verifies(vlek_chain: SnpTestChain) -> None:
    """The VLEK names no chip, so a host that masks the chip id (MASK_CHIP_ID: KEY_INFO bit 1 set, CHIP_ID zero)
    still has its VLEK reports verified; a VCEK report so masked is refused (test_a_masked_chip_id_is_refused)."""
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, chip_id=bytes(64),
                                    key_info=1 << 2 | 1 << 1)
    assert parse_report(report).chip_id_masked
    launch = verify_test(vlek_chain, report)
    assert launch.chip_id == bytes(64) and launch.signing_key == "vlek"


def test_vcek_launches_have_no_csp_id() -> None:
    launch = _virtee_launch()
    assert launch.signing_key == "vcek" and launch.csp_id is None and launch.to_json()["csp_id"] is None
    assert "VLEK" not in launch.describe()
    with pytest.raises(InvalidArgumentError, match=r"VCEK-signed SNP launch has no CSP id"):
        dataclasses.replace(launch, csp_id="a cloud")
    with pytest.raises(InvalidArgumentError, match=r"VLEK-signed SNP launch names its CSP id"):
        dataclasses.replace(launch, signing_key="vlek")
    with pytest.raises(InvalidArgumentError, match=r"signing_key must be one of vcek, vlek"):
        dataclasses.replace(launch, signing_key="none")


def test_a_vlek_report_with_a_vcek_certificate_is_refused(chain: SnpTestChain, vlek_chain: SnpTestChain) -> None:
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    message = r"KEY_INFO selects the VLEK \(signing key 1\), but the endorsements' leaf certificate is a VCEK"
    for endorsements in (chain.certificates(), chain.certificates()[:1], (GO_VCEK, *MILAN), (GO_VCEK,)):
        with pytest.raises(AttestationError, match=message):
            pinned_verifier(vlek_chain).verify(report, Endorsements(endorsements), at=VALID_AT)
    # A VCEK-signed report (the double's) relabelled as VLEK-signed, with its own VCEK chain: the same refusal.
    relabelled = chain.make_report(REPORT_DATA, measurement=MEASUREMENT, key_info=1 << 2)
    with pytest.raises(AttestationError, match=message):
        verify_test(chain, relabelled)


def test_a_vcek_report_with_a_vlek_certificate_is_refused(chain: SnpTestChain, vlek_chain: SnpTestChain) -> None:
    message = r"KEY_INFO selects the VCEK \(signing key 0\), but the endorsements' leaf certificate is a VLEK"
    # A report the VLEK signed but that selects the VCEK, with the VLEK chain (whole, or the VLEK alone).
    relabelled = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, key_info=0)
    for endorsements in (vlek_chain.certificates(), vlek_chain.certificates()[:1]):
        with pytest.raises(AttestationError, match=message):
            pinned_verifier(vlek_chain).verify(relabelled, Endorsements(endorsements), at=VALID_AT)
    # A VCEK report with the VLEK chain in place of its own.
    report = chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    with pytest.raises(AttestationError, match=message):
        pinned_verifier(vlek_chain).verify(report, Endorsements(vlek_chain.certificates()), at=VALID_AT)


def test_intermediates_of_the_other_kind_are_refused() -> None:
    """A VLEK issued by an intermediate named as an ASK, or a VCEK by one named as an ASVK (AMD's ARK signs both
    kinds, so the name it signed is what tells them apart)."""
    vlek_under_an_ask = SnpTestChain.generate_vlek(intermediate_name=_amd_name("SEV-Milan"))
    with pytest.raises(AttestationError, match=r"ASVK certificate's common name is \['SEV-Milan'\], expected "
                                               r"\['SEV-VLEK-Milan'\]"):
        verify_test(vlek_under_an_ask, vlek_under_an_ask.make_report(REPORT_DATA, measurement=MEASUREMENT))
    vcek_under_an_asvk = SnpTestChain.generate(intermediate_name=_amd_name("SEV-VLEK-Milan"))
    with pytest.raises(AttestationError, match=r"ASK certificate's common name is \['SEV-VLEK-Milan'\], expected "
                                               r"\['SEV-Milan'\]"):
        verify_test(vcek_under_an_asvk, vcek_under_an_asvk.make_report(REPORT_DATA, measurement=MEASUREMENT))


def test_a_vlek_for_another_tcb_is_refused(vlek_chain: SnpTestChain) -> None:
    other = SnpTcb(bootloader=4, tee=0, snp=23, microcode=213)
    with pytest.raises(AttestationError, match=r"VLEK certifies TCB bl=4 tee=0 snp=22 ucode=213, the report's "
                                               r"REPORTED_TCB is bl=4 tee=0 snp=23 ucode=213 \(the VLEK is for "
                                               r"another TCB\)"):
        verify_test(vlek_chain, vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT, reported_tcb=other))


def test_a_vlek_report_signed_by_another_key_is_refused(vlek_chain: SnpTestChain) -> None:
    other = SnpTestChain.generate_vlek()
    report = other.make_report(REPORT_DATA, measurement=MEASUREMENT, chip_id=vlek_chain.chip_id)
    with pytest.raises(AttestationError, match=r"signature does not verify with the VLEK's key"):
        verify_test(vlek_chain, report)


def test_a_vlek_chain_to_a_root_not_pinned_is_refused(vlek_chain: SnpTestChain) -> None:
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    with pytest.raises(AttestationError, match=r"ARK certificate .* is not a root pinned by this pyasylo"):
        VERIFIER.verify(report, Endorsements(vlek_chain.certificates()), at=VALID_AT)
    with pytest.raises(AttestationError, match=r"only the VLEK, and no bundled AMD chain issued it .*bundled ASVKs"):
        VERIFIER.verify(report, Endorsements(vlek_chain.certificates()[:1]), at=VALID_AT)
    with pytest.raises(AttestationError, match=r"no bundled AMD ARK issued the ASVK"):
        VERIFIER.verify(report, Endorsements(vlek_chain.certificates()[:2]), at=VALID_AT)
    with pytest.raises(AttestationError, match=r"only the VLEK.*bundled chains are off"):
        SnpQuoteVerifier(bundled_chains=False).verify(report, Endorsements(vlek_chain.certificates()[:1]),
                                                      at=VALID_AT)
    # And the double's own root does not make AMD's ASVK chain trusted.
    amd_asvk, amd_ark = (certificate.public_bytes(Encoding.DER) for certificate in
                         x509.load_pem_x509_certificates((VECTORS / "ask_ark_milan_vlek.pem").read_bytes()))
    with pytest.raises(AttestationError, match=r"not a root pinned.*trusted: ARK-Milan \(test double\)"):
        pinned_verifier(vlek_chain).verify(report, Endorsements((vlek_chain.certificates()[0], amd_asvk, amd_ark)),
                                           at=VALID_AT)


def test_a_vlek_claiming_amds_asvk_is_refused() -> None:
    """A test VLEK whose issuer is named as AMD's Milan ASVK: the bundled ASVK chain is picked for it (the VLEK
    alone in the endorsements) and the ASVK's signature is then missing; with AMD's ASVK and ARK sent along, the
    same."""
    amd_asvk = bundled_chains("vlek")[0].ask
    forged = SnpTestChain.generate_vlek(intermediate_name=amd_asvk.subject)
    vlek_der = forged.certificates()[0]
    picked = bundled_chain_for(forged.vlek, "vlek")
    assert picked is not None and picked.ask == amd_asvk and bundled_chain_for(forged.vlek) is None
    report = forged.make_report(REPORT_DATA, measurement=MEASUREMENT)
    amd = tuple(certificate.public_bytes(Encoding.DER) for certificate in (picked.ask, picked.ark))
    for endorsements in ((vlek_der,), (vlek_der, amd[0]), (vlek_der, *amd)):
        with pytest.raises(AttestationError, match=r"the VLEK certificate is not signed by the ASVK"):
            VERIFIER.verify(report, Endorsements(endorsements), at=VALID_AT)


def _replace_vlek_extension(chain: SnpTestChain, suffix: str, value: bytes | None) -> SnpTestChain:
    oid = f"1.3.6.1.4.1.3704.1.{suffix}"
    extensions = [e for e in vlek_extensions(chain.product, chain.tcb, DEFAULT_CSP_ID) if e.oid.dotted_string != oid]
    if value is not None:
        extensions.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value))
    return chain.with_vcek_extensions(extensions)


@pytest.mark.parametrize(("suffix", "value", "message"), [
    ("5", None, r"VLEK has no CSP id extension \(1.3.6.1.4.1.3704.1.5\)"),
    ("5", bytes([0x0C, 7]) + b"a cloud", r"VLEK certificate's CSP id is not a DER element of type 0x16"),
    ("5", bytes([0x16, 0]), r"VLEK certificate's CSP id is not a printable IA5String"),
    ("5", bytes([0x16, 7]) + b"a\ncloud", r"VLEK certificate's CSP id is not a printable IA5String"),
    ("5", bytes([0x16, 0x81, 200]) + b"x" * 200, r"1.3.6.1.4.1.3704.1.5 is 203 bytes, over the limit of 128"),
    ("4", bytes(64), r"VLEK certificate has both a hwID and a CSP id"),
    ("3.3", der_spl(21), r"VLEK certifies TCB bl=4 tee=0 snp=21"),
    ("2", der_ia5("Genoa"), r"VLEK is for product 'Genoa' but chains to ARK-Milan \(test double\)"),
], ids=["no-csp-id", "utf8-csp-id", "empty-csp-id", "control-csp-id", "long-csp-id", "hwid-too", "other-tcb",
        "other-product"])
def test_malformed_vlek_extensions_are_refused(vlek_chain: SnpTestChain, suffix: str, value: bytes | None,
                                               message: str) -> None:
    altered = _replace_vlek_extension(vlek_chain, suffix, value)
    with pytest.raises(AttestationError, match=message):
        verify_test(altered, altered.make_report(REPORT_DATA, measurement=MEASUREMENT))


def test_a_vlek_chain_saves_and_loads(vlek_chain: SnpTestChain, tmp_path: Path) -> None:
    vlek_chain.save(tmp_path / "vlek")
    loaded = SnpTestChain.load(tmp_path / "vlek")
    assert loaded.signing_key == "vlek" and loaded.csp_id == DEFAULT_CSP_ID
    assert loaded.certificates() == vlek_chain.certificates()
    assert verify_test(vlek_chain, loaded.make_report(REPORT_DATA, measurement=MEASUREMENT)).csp_id == DEFAULT_CSP_ID


# --- SnpTcb ------------------------------------------------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
       st.one_of(st.none(), st.integers(0, 255)))
def test_tcb_round_trip(bootloader: int, tee: int, snp: int, microcode: int, fmc: int | None) -> None:
    tcb = SnpTcb(bootloader, tee, snp, microcode, fmc)
    assert SnpTcb.from_u64(tcb.to_u64(), turin=tcb.turin) == tcb
    assert tcb.at_least(tcb) and tcb.at_least(SnpTcb(0, 0, 0, 0))


def test_tcb_layouts_and_bounds() -> None:
    assert SnpTcb.from_u64(0x4405000000000002) == SnpTcb(2, 0, 5, 0x44)
    assert SnpTcb.from_u64(0x4800000003010101, turin=True) == SnpTcb(1, 1, 3, 0x48, fmc=1)
    with pytest.raises(InvalidArgumentError, match=r"nonzero reserved bytes \[2\]"):
        SnpTcb.from_u64(0x0000000000010000)
    with pytest.raises(InvalidArgumentError, match=r"microcode must be an integer in 0..255"):
        SnpTcb(0, 0, 0, 256)
    assert not SnpTcb(9, 9, 9, 9).at_least(SnpTcb(0, 0, 0, 0, fmc=0))  # a Turin floor is not met without FMC
    assert SnpTcb(9, 9, 9, 9, fmc=0).at_least(SnpTcb(1, 1, 1, 1))  # a Milan floor says nothing of FMC


# --- The certificate table ---------------------------------------------------------------------------------------

def _entry(name: str, offset: int, length: int) -> bytes:
    return CERT_TABLE_GUIDS[name].bytes + struct.pack("<II", offset, length)


def test_cert_table_round_trip() -> None:
    entries = {"vcek": GO_VCEK, "ask": MILAN[0], "ark": MILAN[1]}
    table = build_cert_table(entries)
    assert parse_cert_table(table) == entries
    assert table[:16] == bytes.fromhex("63da758de6644564adc5f4b93be8accd")  # GUIDs in the order their text has
    assert parse_cert_table(b"") == {}
    assert parse_cert_table(build_cert_table({"vlek": b"x"})) == {"vlek": b"x"}
    # Unknown GUIDs are bounds-checked and left out; data may be padded.
    unknown = bytes(range(16)) + struct.pack("<II", 72, 2)
    assert parse_cert_table(_entry("vcek", 74, 3) + unknown + bytes(24) + b"ab" + b"xyz" + bytes(10)) == {
        "vcek": b"xyz"}
    with pytest.raises(InvalidArgumentError, match=r"unknown certificate table name"):
        build_cert_table({"crl": b"x"})
    with pytest.raises(AttestationError, match=r"no VCEK or VLEK"):
        cert_table_endorsements(build_cert_table({"ask": b"x"}))


@pytest.mark.parametrize(("table", "message"), [
    (_entry("vcek", 72, 4) + _entry("ask", 74, 4) + bytes(24) + bytes(8), "entries for vcek and ask overlap"),
    (_entry("vcek", 48, 100) + bytes(24) + bytes(4), "spans 48..148, outside the data area 48..52"),
    (_entry("vcek", 10, 4) + bytes(24) + bytes(4), "spans 10..14, outside the data area 48..52"),
    (_entry("vcek", 2**32 - 1, 2**32 - 1) + bytes(24), "outside the data area"),
    (_entry("vcek", 24, 4) + b"abcd", "ends before its all-zero terminator"),
    (_entry("vcek", 24, 4)[:20], "ends before its all-zero terminator"),
    (_entry("vcek", 48, 0) + bytes(24), "entry 0 \\(vcek\\) is empty"),
    (_entry("vcek", 72, 1) + _entry("vcek", 73, 1) + bytes(24) + b"ab", "two entries for vcek"),
    (bytes(16) + struct.pack("<II", 1, 0), "zero GUID but offset 1"),
    (b"".join(bytes([i + 1]) * 16 + struct.pack("<II", 0, 0) for i in range(MAX_CERT_TABLE_ENTRIES + 1))
     + bytes(24), "more than 32 entries"),
    (bytes(33 * 1024), "over the limit"),
], ids=["overlap", "past-the-end", "in-the-header", "u32-overflow", "no-terminator", "partial-entry", "empty",
        "duplicate", "bad-terminator", "too-many", "too-large"])
def test_malformed_cert_tables_are_refused(table: bytes, message: str) -> None:
    with pytest.raises(AttestationError, match=message):
        parse_cert_table(table)


# --- Properties --------------------------------------------------------------------------------------------------

_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_random_bytes_never_parse_into_anything_but_a_refusal(data: bytes) -> None:
    with contextlib.suppress(AttestationError):
        parse_report(data)
    with pytest.raises(AttestationError):
        VERIFIER.verify(data, Endorsements((GO_VCEK, *MILAN)), at=AT)
    try:
        decoded = decode_report_file(data)
    except AttestationError:
        pass
    else:
        assert len(decoded) == REPORT_SIZE


@_PROPERTY
@given(st.integers(0, REPORT_SIZE - 1), st.binary(max_size=64))
def test_truncated_or_extended_genuine_reports_are_refused(cut: int, tail: bytes) -> None:
    for data in (GO_REPORT[:cut], GO_REPORT + tail + b"\0", GO_REPORT[:cut] + tail):
        if len(data) == REPORT_SIZE:
            continue
        with pytest.raises(AttestationError, match=r"1184 bytes"):
            parse_report(data)
        with pytest.raises(AttestationError, match=r"1184 bytes"):
            VERIFIER.verify(data, Endorsements((GO_VCEK, *MILAN)), at=AT)


@_PROPERTY
@given(st.integers(0, REPORT_SIZE - 1), st.integers(0, 7))
def test_any_flipped_bit_of_a_genuine_report_is_refused(offset: int, bit: int) -> None:
    with pytest.raises(AttestationError):
        VERIFIER.verify(flip(VIRTEE_REPORT, offset, bit), Endorsements((VIRTEE_VCEK, *MILAN)), at=AT)


@_PROPERTY
@given(st.one_of(st.binary(max_size=512),
                 st.lists(st.tuples(st.sampled_from(sorted(CERT_TABLE_GUIDS)), st.integers(0, 300),
                                    st.integers(0, 300)), max_size=5).map(
                     lambda entries: b"".join(_entry(*entry) for entry in entries) + bytes(24) + bytes(200))))
def test_random_cert_tables_never_raise_anything_but_a_refusal(data: bytes) -> None:
    try:
        table = parse_cert_table(data)
    except AttestationError:
        return
    assert set(table) <= set(CERT_TABLE_GUIDS) and all(table.values())


@_PROPERTY
@given(st.sampled_from([0, 1]), st.integers(0, 2000), st.integers(0, 7))
def test_any_flipped_bit_of_a_genuine_certificate_is_refused(which: int, offset: int, bit: int) -> None:
    certificates = [VIRTEE_VCEK, *MILAN]
    certificates[which] = flip(certificates[which], offset % len(certificates[which]), bit)
    try:
        launch = VERIFIER.verify(VIRTEE_REPORT, Endorsements(tuple(certificates)), at=AT)
    except AttestationError:
        return
    # `cryptography` accepts a few non-canonical encodings outside what is signed (the BIT STRING's unused-bits
    # count before the signature), so an altered certificate may still verify, but only to the same launch.
    assert launch == _virtee_launch()


@_PROPERTY
@given(st.integers(1, 2), st.integers(0, 2000), st.integers(0, 7))
def test_a_flipped_certificate_bit_is_refused_with_the_bundled_chain_too(count: int, offset: int, bit: int) -> None:
    """With only the VCEK (or VCEK and ASK) in the endorsements, the verifier completes the chain from its bundled
    AMD chains, reading the given certificates' names on the way: a malformed one is a refusal there too."""
    certificates = [VIRTEE_VCEK, *MILAN][:count]
    which = offset % count
    certificates[which] = flip(certificates[which], offset % len(certificates[which]), bit)
    try:
        launch = VERIFIER.verify(VIRTEE_REPORT, Endorsements(tuple(certificates)), at=AT)
    except AttestationError:
        return
    assert launch == _virtee_launch()


@_PROPERTY
@given(st.integers(0, REPORT_SIZE - 1), st.integers(0, 7))
def test_any_flipped_bit_of_a_vlek_report_is_refused(vlek_chain: SnpTestChain, offset: int, bit: int) -> None:
    """The VLEK path refuses every altered byte as the VCEK path does (a test double's VLEK report: there is no
    genuine one)."""
    report = vlek_chain.make_report(REPORT_DATA, measurement=MEASUREMENT)
    with pytest.raises(AttestationError):
        verify_test(vlek_chain, flip(report, offset, bit))
