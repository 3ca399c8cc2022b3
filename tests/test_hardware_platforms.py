"""Hardware platforms end to end: proxy attester -> welcome -> host verifier -> expectation -> session keys.

Nothing here ran on hardware. The proxy runs `--platform snp` (or tdx) against a TEST DOUBLE of configfs-tsm (a
FUSE filesystem, tests/configfs_tsm_double.py) whose reports have the real SEV-SNP format and are signed by an
ARK/ASK/VCEK chain made at test time (tests/snp_test_chain.py), trusted only by the hosts of these tests. The
genuine samples from real machines (tests/vectors) are presented inside sessions too, to show that the binding
check runs: they verify as genuine, and are refused because their report data is not the session's.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import asylo
from asylo.identity import AllOf, EvidenceVerifier, MeasurementIs, SignerIs
from asylo.identity.hardware import HardwareEvidenceVerifier
from asylo.identity.machine import PlatformOptions
from asylo.identity.snp import SnpLaunch, SnpQuoteVerifier
from asylo.identity.tdx import TdxLaunch
from asylo.identity.verify import quote_verifiers
from asylo.proto import identity_pb2
from asylo.session import SessionLimits
from tests.provision_helpers import ALICE, ServerProcess
from tests.snp_test_chain import SnpTestChain
from tests.tsm_helpers import configfs_tsm_double

VECTORS = Path(__file__).parent / "vectors"
LAUNCH = hashlib.sha384(b"the confidential VM image of these tests").digest()


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("snp-test-chain")
    SnpTestChain.generate().save(directory)
    return directory


@pytest.fixture(scope="module")
def chain(chain_dir: Path) -> SnpTestChain:
    return SnpTestChain.load(chain_dir)


@pytest.fixture
def snp_double(tmp_path: Path, chain_dir: Path) -> Iterator[Path]:
    with configfs_tsm_double(tmp_path, "--provider", "sev_guest", "--snp-chain", str(chain_dir),
                             "--snp-measurement", LAUNCH.hex()) as root:
        yield root


def snp_test_verifier(chain: SnpTestChain) -> HardwareEvidenceVerifier:
    """The host's SNP verifier, trusting the test chain's ARK (and no other root)."""
    return HardwareEvidenceVerifier(SnpQuoteVerifier(pinned_roots=chain.pinned_roots))


def load(manager: asylo.EnclaveManager, image: Path, provision: asylo.RemoteProvision,
         expectation: asylo.identity.IdentityExpectation,
         verifiers: tuple[asylo.identity.PlatformVerifier, ...], trusted: tuple[str, ...] = (),
         limits: SessionLimits | None = None) -> asylo.EnclaveClient:
    proxy = asylo.RemoteProxyClientConfig(provision, platform_verifiers=verifiers, trusted_platforms=trusted,
                                          limits=limits or SessionLimits())
    return manager.load_enclave(asylo.EnclaveLoadConfig(
        "primitives", remote=asylo.RemoteLoadConfig(image, proxy=proxy, expectation=expectation)))


def test_an_snp_session_end_to_end_through_local_provisioning(
        manager: asylo.EnclaveManager, snp_double: Path, chain: SnpTestChain, primitives_image_file: Path,
        primitives_image: asylo.VerifiedImage) -> None:
    provision = asylo.LocalProvision(platform=PlatformOptions(kind="snp", configfs_tsm=snp_double))
    expectation = AllOf(SnpLaunch(LAUNCH), MeasurementIs(primitives_image.measurement))
    client = load(manager, primitives_image_file, provision, expectation, (snp_test_verifier(chain),))
    assert client.call("echo", b"over an attested SNP session") == b"over an attested SNP session"
    identity = client.loaded_enclave.identity  # type: ignore[attr-defined]
    assert identity.platform == "snp" and identity.measurement == primitives_image.measurement
    assert identity.launch is not None and identity.launch.measurement == LAUNCH
    manager.destroy_enclave(client)


def test_hardware_evidence_fits_a_session_with_small_frames(
        manager: asylo.EnclaveManager, snp_double: Path, chain: SnpTestChain, primitives_image_file: Path,
        primitives_image: asylo.VerifiedImage) -> None:
    """The welcome is never fragmented, and an SNP welcome (report, VCEK, ASK, ARK: about 5 KiB) is larger than the
    smallest max_frame_size a host may ask for: it still arrives, and every later frame keeps the small limit."""
    provision = asylo.LocalProvision(platform=PlatformOptions(kind="snp", configfs_tsm=snp_double))
    expectation = AllOf(SnpLaunch(LAUNCH), MeasurementIs(primitives_image.measurement))
    client = load(manager, primitives_image_file, provision, expectation, (snp_test_verifier(chain),),
                  limits=SessionLimits(max_frame_size=4096))
    payload = bytes(range(256)) * 64  # 16 KiB: fragmented into 4 KiB frames
    assert client.call("echo", payload) == payload
    manager.destroy_enclave(client)


@pytest.mark.parametrize(("case", "message"), [
    ("another launch", "measurement is"),
    ("no launch values", "for a hardware platform, expect its launch's reference values"),
    ("no launch values, a sim platform trusted", "sets no reference values for that launch"),
    ("another image", "measurement is"),
    ("test root not trusted", "not a root pinned by this pyasylo"),
])
def test_an_snp_session_is_refused(manager: asylo.EnclaveManager, snp_double: Path, chain: SnpTestChain,
                                   primitives_image_file: Path, primitives_image: asylo.VerifiedImage,
                                   local_platform: str, case: str, message: str) -> None:
    provision = asylo.LocalProvision(platform=PlatformOptions(kind="snp", configfs_tsm=snp_double))
    image = MeasurementIs(primitives_image.measurement)
    expectation: asylo.identity.IdentityExpectation = {
        "another launch": AllOf(SnpLaunch(bytes(48)), image),
        "no launch values": AllOf(image, SignerIs(primitives_image.signer, primitives_image.manifest.product_id)),
        "no launch values, a sim platform trusted": image,
        "another image": AllOf(SnpLaunch(LAUNCH), MeasurementIs(bytes(32))),
        "test root not trusted": AllOf(SnpLaunch(LAUNCH), image),
    }[case]
    verifiers = () if case == "test root not trusted" else (snp_test_verifier(chain),)
    # The host may trust a sim platform as well: that must not make the SNP launch's reference values optional.
    trusted = (local_platform,) if "sim platform trusted" in case else ()
    with pytest.raises(asylo.AttestationError, match=re.escape(message)):
        load(manager, primitives_image_file, provision, expectation, verifiers, trusted)


@pytest.fixture(scope="module")
def snp_server(tmp_path_factory: pytest.TempPathFactory, chain_dir: Path,
               start_server: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """A provision server whose proxies run `--platform snp` on a configfs-tsm double (module scope, as the other
    provision-server tests' servers: started before each test's check for leftover processes)."""
    with configfs_tsm_double(tmp_path_factory.mktemp("server-tsm"), "--provider", "sev_guest", "--snp-chain",
                             str(chain_dir), "--snp-measurement", LAUNCH.hex()) as root:
        server = start_server("--platform", "snp", "--configfs-tsm", str(root))
        yield server
        server.stop()


def test_an_snp_session_through_a_provision_server(
        manager: asylo.EnclaveManager, snp_server: ServerProcess, chain: SnpTestChain, images_dir: Path,
        primitives_image: asylo.VerifiedImage) -> None:
    server = snp_server
    assert server.platform == "snp"
    provision = asylo.RemoteProvision.instantiate(server.address, bearer_token=ALICE)
    expectation = AllOf(SnpLaunch(LAUNCH), MeasurementIs(primitives_image.measurement))
    client = load(manager, images_dir / "primitives.aimg", provision, expectation, (snp_test_verifier(chain),))
    assert client.call("echo", b"via the provision server") == b"via the provision server"
    manager.destroy_enclave(client)


# -- genuine evidence inside sessions: genuine, and refused for its report data --------------------------------

def _claim(primitives_image: asylo.VerifiedImage, kind: str) -> identity_pb2.EnclaveIdentity:
    return asylo.identity.EnclaveIdentity.from_image(primitives_image, kind).to_proto()


GENUINE = {
    # kind: (evidence file, endorsements, a time inside the sample's validity)
    "snp": ("sev-snp/attestation.bin", ("sev-snp/vcek.der",), None,
            datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)),
    "tdx": ("tdx-sgx-dcap/tdx_quote", (), "tdx-sgx-dcap/tdx_quote_collateral.json",
            datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC)),
    "sgx": ("tdx-sgx-dcap/sgx_quote", (), "tdx-sgx-dcap/sgx_quote_collateral.json",
            datetime.datetime(2025, 7, 1, tzinfo=datetime.UTC)),
    "nitro": ("nitro/nitro_attestation.b64", (), None,
              datetime.datetime(2024, 9, 7, 14, 37, 44, tzinfo=datetime.UTC)),
}


def _quote(kind: str, path: str) -> bytes:
    data = (VECTORS / path).read_bytes()
    if kind == "nitro":  # the vector is base64 text, as AWS's tools print documents
        from asylo.identity.nitro import decode_document_file  # noqa: PLC0415

        return decode_document_file(data)
    return data


@pytest.mark.parametrize("kind", sorted(GENUINE))
def test_genuine_evidence_in_a_session_is_refused_for_its_report_data(
        kind: str, primitives_image: asylo.VerifiedImage) -> None:
    path, certificates, collateral, at = GENUINE[kind]
    verifier = HardwareEvidenceVerifier(quote_verifiers()[kind], clock=lambda: at)
    transcript = bytes(range(64))
    evidence = identity_pb2.Evidence(
        version=1, platform=kind, identity=_claim(primitives_image, kind), report_data=transcript,
        quote=_quote(kind, path), certificates=[(VECTORS / c).read_bytes() for c in certificates],
        collateral=(VECTORS / collateral).read_bytes() if collateral else b"")
    with pytest.raises(asylo.AttestationError, match=r"is genuine but its report data .* does not bind this session"):
        EvidenceVerifier([], platform_verifiers=[verifier]).verify(
            evidence.SerializeToString(deterministic=True), report_data=transcript,
            expectation=MeasurementIs(primitives_image.measurement))


@pytest.mark.parametrize("kind", ["snp", "tdx"])
def test_a_genuine_sample_served_by_a_proxy_is_refused_for_its_report_data(
        kind: str, tmp_path: Path, manager: asylo.EnclaveManager, primitives_image_file: Path,
        primitives_image: asylo.VerifiedImage) -> None:
    """The whole path with genuine evidence: the proxy's attester reads a real machine's report from configfs-tsm
    (the double serves the sample whatever the request), the host verifies it as genuine at the sample's time, and
    refuses it because its report data is not this session's binding."""
    from asylo.identity.snp import build_cert_table  # noqa: PLC0415

    path, certificates, collateral, at = GENUINE[kind]
    args = ["--provider", "sev_guest" if kind == "snp" else "tdx_guest", "--fixed-outblob", str(VECTORS / path)]
    if certificates:
        table = tmp_path / "auxblob"
        table.write_bytes(build_cert_table({"vcek": (VECTORS / certificates[0]).read_bytes()}))
        args += ["--fixed-auxblob", str(table)]
    (tmp_path / "tsm").mkdir()
    with configfs_tsm_double(tmp_path / "tsm", *args) as root:
        options = PlatformOptions(kind=kind, configfs_tsm=root,
                                  collateral=VECTORS / collateral if collateral else None)
        verifier = HardwareEvidenceVerifier(quote_verifiers()[kind], clock=lambda: at)
        zeros = bytes(48)
        launch = (SnpLaunch(zeros, allow_debug=True) if kind == "snp"
                  else TdxLaunch(zeros, rtmrs={1: zeros, 2: zeros}))
        expectation = AllOf(launch, MeasurementIs(primitives_image.measurement))
        with pytest.raises(asylo.AttestationError,
                           match=f"the {kind} evidence is genuine but its report data .* does not bind this session"):
            load(manager, primitives_image_file, asylo.LocalProvision(platform=options), expectation, (verifier,))
