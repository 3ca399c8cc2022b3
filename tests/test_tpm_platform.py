"""The TPM platform end to end against a software TPM (swtpm: not hardware): enrollment, the quickstart over a real
TPM quote bound to its session, a provision server on `--platform tpm`, and the refusals the issue names.

Each test manufactures its own swtpm (tests/swtpm_helpers.py: state in a temporary directory, free loopback ports,
an EK certificate from swtpm's local CA) and stops it. Where swtpm or tpm2-pytss is missing they skip saying why,
except where ASYLO_REQUIRE_SWTPM=1 (CI), where they fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import asylo
from asylo.identity import AllOf, EvidenceVerifier, MeasurementIs
from asylo.identity.machine import PlatformOptions, open_platform
from asylo.proto import identity_pb2
from asylo.remote.devca import create_dev_ca
from tests.provision_helpers import ALICE, ServerProcess
from tests.swtpm_helpers import Swtpm, extend_pcr, running_swtpm, skip_unless_tss

REPORT = bytes(range(64))


def asylo_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asylo", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def enroll(tpm: Swtpm) -> str:
    done = asylo_cli("platform", "enroll", "--tpm-tcti", tpm.tcti, "--tpm-ek-ca", str(tpm.ca_certificate),
                     "--tpm-ek-intermediate", str(tpm.intermediate_certificate))
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("platform fingerprint"))
    return line.rsplit(" ", 1)[1]


@pytest.fixture
def tpm(tmp_path: Path) -> Iterator[Swtpm]:
    skip_unless_tss()
    with running_swtpm(tmp_path) as running:
        yield running


@pytest.fixture
def enrolled(tpm: Swtpm) -> str:
    return enroll(tpm)


def quickstart(tpm: Swtpm, *args: str) -> subprocess.CompletedProcess[str]:
    return asylo_cli("quickstart", "-m", "Asylo Rocks", "--platform", "tpm", "--tpm-tcti", tpm.tcti, *args)


def test_the_quickstart_runs_over_a_tpm_quote_bound_to_its_session(tpm: Swtpm, enrolled: str) -> None:
    done = quickstart(tpm, "--trust-platform", enrolled)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Encrypted message:\n")


def test_an_ak_that_was_not_enrolled_is_refused(tpm: Swtpm, enrolled: str, local_platform: str) -> None:
    done = quickstart(tpm, "--trust-platform", local_platform)  # another platform's fingerprint, not this AK's
    assert done.returncode == 1
    assert f"the TPM attestation key {enrolled}" in done.stderr or enrolled in done.stderr, done.stderr
    assert "--trust-platform" in done.stderr and "Encrypted message" not in done.stdout


def test_a_pcr_expectation_that_no_longer_holds_names_the_pcr(tpm: Swtpm, enrolled: str) -> None:
    provider = open_platform(PlatformOptions(kind="tpm", tpm_tcti=tpm.tcti))
    pcr7 = provider.platform(_tpm_identity()).evidence(REPORT)  # a quote now, to read PCR 7's value from
    values = {(v.hash_alg, v.index): v.value for v in _quote(pcr7).pcrs}
    expectation = f"tpm=pcr7={values[(0x000B, 7)].hex()}"
    assert quickstart(tpm, "--trust-platform", enrolled, "--expect-launch", expectation).returncode == 0
    extend_pcr(tpm.tcti, 7, b"a new boot component")  # the machine's boot state changed after enrollment
    done = quickstart(tpm, "--trust-platform", enrolled, "--expect-launch", expectation)
    assert done.returncode == 1 and "PCR 7" in done.stderr, done.stderr


def test_a_quote_from_another_session_and_tampered_quotes_are_refused(tpm: Swtpm, enrolled: str) -> None:
    provider = open_platform(PlatformOptions(kind="tpm", tpm_tcti=tpm.tcti))
    evidence = provider.platform(_tpm_identity()).evidence(REPORT)
    verifier = EvidenceVerifier([enrolled])
    expectation = MeasurementIs(_tpm_identity().measurement)
    assert verifier.verify(evidence, report_data=REPORT, expectation=expectation).launch is not None
    with pytest.raises(asylo.AttestationError, match="replayed from another session"):
        verifier.verify(evidence, report_data=bytes(64), expectation=expectation)
    # The same genuine quote moved into another session's evidence: its qualifying data binds the first session.
    moved = identity_pb2.Evidence.FromString(evidence)
    moved.report_data = bytes(64)
    with pytest.raises(asylo.AttestationError, match="does not bind this session"):
        verifier.verify(moved.SerializeToString(deterministic=True), report_data=bytes(64), expectation=expectation)
    for field in ("attest", "signature"):
        message = identity_pb2.Evidence.FromString(evidence)
        quote = _quote(evidence)
        raw = bytearray(getattr(quote, field))
        raw[len(raw) // 2] ^= 0x01
        setattr(quote, field, bytes(raw))
        message.quote = quote.SerializeToString(deterministic=True)
        with pytest.raises(asylo.AttestationError, match=r"does not verify|does not match"):
            verifier.verify(message.SerializeToString(deterministic=True), report_data=REPORT,
                            expectation=expectation)


def test_enrollment_refuses_an_ek_certificate_from_another_ca(tpm: Swtpm, tmp_path: Path) -> None:
    other = create_dev_ca(tmp_path / "other-ca")
    done = asylo_cli("platform", "enroll", "--tpm-tcti", tpm.tcti, "--tpm-ek-ca", str(other.ca_cert))
    assert done.returncode == 1 and "chain" in done.stderr and str(other.ca_cert) in done.stderr, done.stderr
    assert "platform fingerprint" not in done.stdout


@pytest.fixture(scope="module")
def tpm_server(tmp_path_factory: pytest.TempPathFactory,
               start_server: Callable[..., ServerProcess]) -> Iterator[tuple[ServerProcess, str]]:
    """A provision server whose proxies attest with an enrolled swtpm (module scope, started before each test's
    check for leftover processes)."""
    skip_unless_tss()
    with running_swtpm(tmp_path_factory.mktemp("server-swtpm")) as running:
        fingerprint = enroll(running)
        server = start_server("--platform", "tpm", "--tpm-tcti", running.tcti)
        yield server, fingerprint
        server.stop()


def test_the_same_session_through_a_provision_server_on_a_tpm(
        manager: asylo.EnclaveManager, tpm_server: tuple[ServerProcess, str], images_dir: Path,
        primitives_image: asylo.VerifiedImage) -> None:
    server, fingerprint = tpm_server
    assert server.platform == fingerprint  # its start-up line names the AK it attests with
    provision = asylo.RemoteProvision.instantiate(server.address, bearer_token=ALICE)
    proxy = asylo.RemoteProxyClientConfig(provision, trusted_platforms=(fingerprint,))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("primitives", remote=asylo.RemoteLoadConfig(
        images_dir / "primitives.aimg", proxy=proxy,
        expectation=AllOf(MeasurementIs(primitives_image.measurement)))))
    assert client.call("echo", b"over a TPM-attested session") == b"over a TPM-attested session"
    identity = client.loaded_enclave.identity  # type: ignore[attr-defined]
    assert identity.platform == "tpm" and identity.launch.ak_fingerprint == fingerprint
    manager.destroy_enclave(client)


def _tpm_identity() -> asylo.identity.EnclaveIdentity:
    return asylo.identity.EnclaveIdentity(measurement=bytes(32), signer=bytes(32), product_id=0, svn=0, debug=False,
                                          platform="tpm")


def _quote(evidence: bytes) -> identity_pb2.TpmQuote:
    return identity_pb2.TpmQuote.FromString(identity_pb2.Evidence.FromString(evidence).quote)



def test_platform_show_prints_the_enrolled_ak_and_the_pcrs_it_quotes(tpm: Swtpm, enrolled: str) -> None:
    done = asylo_cli("platform", "show", "--platform", "tpm", "--tpm-tcti", tpm.tcti)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["platform"] == "tpm" and shown["ak_fingerprint"] == enrolled
    assert sorted(shown["pcrs"]["sha256"]) == [str(index) for index in range(8)]
