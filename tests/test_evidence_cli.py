"""`asylo evidence verify` against the genuine evidence in tests/vectors (real machines' reports, quotes and
documents; see each directory's PROVENANCE.md): accepted at its time, refused when tampered with, out of its time,
or against another expectation. One subprocess run shows the command is wired into `asylo`; the rest run in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from asylo.cli.main import cli

VECTORS = Path(__file__).parent / "vectors"
SNP = VECTORS / "sev-snp"
DCAP = VECTORS / "tdx-sgx-dcap"
NITRO = VECTORS / "nitro"
#: Inside both genuine VCEKs' validity (and the Milan ASK/ARK's); SNP reports carry no time of their own.
SNP_AT = "2024-01-01T00:00:00Z"
#: Inside the dcap-qvl samples' collateral window (2025-06-19T10:56Z .. 2025-07-19T10:00Z).
DCAP_AT = "2025-07-01T00:00:00Z"
#: A few seconds after the genuine Nitro document's own timestamp (2024-09-07T14:37:39.545Z).
NITRO_AT = "2024-09-07T14:37:44Z"
NITRO_DEBUG_AT = "2024-09-07T14:38:10Z"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["evidence", "verify", *args])


def accepted(result: Result) -> dict[str, object]:
    assert result.exit_code == 0, result.output
    report: dict[str, object] = json.loads(result.stdout)
    assert report["verified"] is True
    return report


def refused(result: Result, reason: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "refused: " in result.stderr and reason in result.stderr, result.stderr


def flipped(tmp_path: Path, source: Path, offset: int, *, text: bool = False) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x01 if not text else 0
    if text:  # base64: swap one character for another valid one
        data[offset] = ord("A") if data[offset] != ord("A") else ord("B")
    target = tmp_path / f"flipped-{source.name}"
    target.write_bytes(bytes(data))
    return target


# -- SEV-SNP -------------------------------------------------------------------------------------------------------

def test_the_genuine_snp_report_is_accepted_and_its_launch_printed() -> None:
    report = accepted(run(str(SNP / "attestation.bin"), "--kind", "snp", "--vcek", str(SNP / "vcek.der"),
                          "--at", SNP_AT, "--allow-debug"))
    assert report["kind"] == "snp" and report["product"] == "Milan"
    measurement = report["measurement"]
    assert isinstance(measurement, str) and len(measurement) == 96
    # The printed measurement is what an operator pastes into an expectation: it is accepted as one.
    accepted(run(str(SNP / "attestation.bin"), "--kind", "snp", "--vcek", str(SNP / "vcek.der"), "--at", SNP_AT,
                 "--allow-debug", "--expect-measurement", measurement))


def test_the_virtee_report_as_hex_with_the_ask_ark_given() -> None:
    report = accepted(run(str(SNP / "virtee_report_milan.hex"), "--kind", "snp", "--vcek",
                          str(SNP / "virtee_vcek_milan.der"), "--ask-ark", str(SNP / "ask_ark_milan.pem"),
                          "--at", SNP_AT, "--allow-debug"))
    assert report["kind"] == "snp"


@pytest.mark.parametrize(("case", "reason"), [
    ("signature", "signature"),
    ("body", "signature"),
    ("another root", "not signed by the ASK"),
    ("after the VCEK", "is not valid at 2029-10-01"),
    ("another measurement", "measurement is"),
    ("TCB floor above", "is below the minimum"),
    ("debug", "allows debugging (bit 19: the hypervisor can read its memory) and debug guests are not allowed "
              "(--allow-debug accepts them)"),
    ("another chip's VCEK", "chip"),
])
def test_the_genuine_snp_report_is_refused(tmp_path: Path, case: str, reason: str) -> None:
    report, vcek, extra = SNP / "attestation.bin", SNP / "vcek.der", ["--allow-debug"]
    at = SNP_AT
    if case == "signature":
        report = flipped(tmp_path, report, 0x2A0 + 10)
    elif case == "body":
        report = flipped(tmp_path, report, 0x90)  # the measurement
    elif case == "another root":
        extra += ["--ask-ark", str(SNP / "ask_ark_genoa.pem")]
    elif case == "after the VCEK":
        at = "2029-10-01T00:00:00Z"
    elif case == "another measurement":
        extra += ["--expect-measurement", "00" * 48]
    elif case == "TCB floor above":
        extra += ["--min-tcb", "bootloader=2,tee=0,snp=6,microcode=68"]  # the sample's, with snp 5 -> 6
    elif case == "debug":
        extra = []  # the sample's policy has the debug bit set
    elif case == "another chip's VCEK":
        vcek = SNP / "virtee_vcek_milan.der"
    refused(run(str(report), "--kind", "snp", "--vcek", str(vcek), "--at", at, *extra), reason)


# -- TDX and SGX ---------------------------------------------------------------------------------------------------

def test_the_genuine_tdx_quote_is_accepted_up_to_date() -> None:
    report = accepted(run(str(DCAP / "tdx_quote"), "--kind", "tdx", "--collateral",
                          str(DCAP / "tdx_quote_collateral.json"), "--at", DCAP_AT))
    assert report["kind"] == "tdx" and report["tcb_status"] == "UpToDate"
    mrtd = report["mrtd"]
    assert isinstance(mrtd, str)
    rtmrs = report["rtmrs"]
    assert isinstance(rtmrs, list)
    accepted(run(str(DCAP / "tdx_quote"), "--kind", "tdx", "--collateral", str(DCAP / "tdx_quote_collateral.json"),
                 "--at", DCAP_AT, "--expect-measurement", mrtd, "--expect-rtmr", f"2={rtmrs[2]}"))


def test_the_genuine_sgx_quote_needs_its_tcb_status_named() -> None:
    args = [str(DCAP / "sgx_quote"), "--kind", "sgx", "--collateral", str(DCAP / "sgx_quote_collateral.json"),
            "--at", DCAP_AT]
    result = run(*args)
    refused(result, "ConfigurationAndSWHardeningNeeded")
    assert "INTEL-SA-00289" in result.stderr and "INTEL-SA-00615" in result.stderr
    # It names the option that accepts it, not the Python argument.
    assert "--accept-tcb-status ConfigurationAndSWHardeningNeeded accepts it" in result.stderr
    report = accepted(run(*args, "--accept-tcb-status", "ConfigurationAndSWHardeningNeeded"))
    assert report["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]


@pytest.mark.parametrize(("case", "reason"), [
    ("signature", ""),
    ("body", ""),
    ("after the collateral", "2025-08-01"),
    ("another mrtd", "mrtd is"),
])
def test_the_genuine_tdx_quote_is_refused(tmp_path: Path, case: str, reason: str) -> None:
    quote, at, extra = DCAP / "tdx_quote", DCAP_AT, []
    if case == "signature":
        quote = flipped(tmp_path, quote, 48 + 584 + 4 + 10)  # inside the ECDSA signature after the TD report
    elif case == "body":
        quote = flipped(tmp_path, quote, 48 + 136)  # MRTD
    elif case == "after the collateral":
        at = "2025-08-01T00:00:00Z"
    elif case == "another mrtd":
        extra = ["--expect-measurement", "00" * 48]
    result = run(str(quote), "--kind", "tdx", "--collateral", str(DCAP / "tdx_quote_collateral.json"), "--at", at,
                 *extra)
    refused(result, reason)
    if case == "after the collateral":
        assert "expired" in result.stderr.lower() or "not valid" in result.stderr.lower(), result.stderr


# -- Nitro ---------------------------------------------------------------------------------------------------------

def test_the_genuine_nitro_document_is_accepted_with_its_pcrs() -> None:
    report = accepted(run(str(NITRO / "nitro_attestation.b64"), "--kind", "nitro", "--at", NITRO_AT))
    assert report["kind"] == "nitro" and report["debug"] is False
    pcrs = report["pcrs"]
    assert isinstance(pcrs, dict)
    pcr0 = pcrs["0"]
    assert isinstance(pcr0, str) and len(pcr0) == 96
    accepted(run(str(NITRO / "nitro_attestation.b64"), "--kind", "nitro", "--at", NITRO_AT,
                 "--expect-measurement", pcr0))
    refused(run(str(NITRO / "nitro_attestation.b64"), "--kind", "nitro", "--at", NITRO_AT,
                "--expect-pcr", f"1={'00' * 48}"), "PCR1")


@pytest.mark.parametrize(("case", "reason"), [
    ("signature", "signature"),
    ("debug", "debug"),
    ("stale", "old"),
    ("after the leaf", "leaf certificate expired"),
])
def test_the_genuine_nitro_document_is_refused(tmp_path: Path, case: str, reason: str) -> None:
    document, at, extra = NITRO / "nitro_attestation.b64", NITRO_AT, []
    if case == "signature":
        text = document.read_text().strip()
        document = flipped(tmp_path, document, len(text) - 10, text=True)
    elif case == "debug":
        document, at = NITRO / "nitro_attestation_debug.b64", NITRO_DEBUG_AT
    elif case == "stale":
        at = "2024-09-07T15:00:00Z"
    elif case == "after the leaf":
        at, extra = "2024-09-07T18:00:00Z", ["--max-age", "36000"]
    refused(run(str(document), "--kind", "nitro", "--at", at, *extra), reason)


# -- usage -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--kind", "snp"], "--kind snp needs --vcek"),
    (["--kind", "tdx"], "--kind tdx needs --collateral"),
    (["--kind", "nitro", "--vcek", str(SNP / "vcek.der")], "--vcek do(es) not apply to --kind nitro"),
    (["--kind", "nitro", "--at", "yesterday"], "not an ISO-8601 time"),
    (["--kind", "nitro", "--expect-pcr", "zero=00"], "takes N=HEX"),
    (["--kind", "snp", "--vcek", str(SNP / "vcek.der"), "--expect-measurement", "zz"], "not hex digits"),
])
def test_usage_errors_say_what_is_wrong(args: list[str], message: str) -> None:
    result = run(str(NITRO / "nitro_attestation.b64"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_tcb_floor_at_the_reported_tcb_is_met_and_a_malformed_one_is_a_usage_error() -> None:
    args = [str(SNP / "attestation.bin"), "--kind", "snp", "--vcek", str(SNP / "vcek.der"), "--at", SNP_AT,
            "--allow-debug"]
    accepted(run(*args, "--min-tcb", "bootloader=2,tee=0,snp=5,microcode=68"))
    result = run(*args, "--min-tcb", "snp=five")
    assert result.exit_code == 2 and "--min-tcb takes bootloader=N" in result.stderr


def test_a_file_that_is_not_evidence_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00" * 100)
    refused(run(str(junk), "--kind", "nitro", "--at", NITRO_AT), "")
    result = run(str(junk), "--kind", "snp", "--vcek", str(SNP / "vcek.der"))
    assert result.exit_code in (1, 2) and "1184" in result.stderr


def test_asylo_evidence_verify_runs_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "asylo", "evidence", "verify", str(NITRO / "nitro_attestation.b64"),
                           "--kind", "nitro", "--at", NITRO_AT], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["module_id"]
