"""The provision server, as a real `asylo provision-server` process with real proxies, over real gRPC.

Clients authenticate with bearer tokens here (mutual TLS in test_provision_tls); two clients, alice and bob, check
tenancy. Every bad input of the issue's table gets its status code and leaves the state directory as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import asylo
from asylo.cli.provision_command import provision as provision_cli
from asylo.cli.provision_server_command import provision_server
from asylo.cli.quickstart import backend_config, run_quickstart
from asylo.identity import SimPlatformKey
from asylo.image import build_image, generate_signing_key, write_image
from asylo.proto import provision_pb2
from asylo.remote.devca import DevCaFiles, create_dev_ca
from asylo.remote.provision_client import ServerProvision
from tests.conftest import ENCLAVES, eventually, u64
from tests.provision_helpers import (
    ALICE,
    BOB,
    ServerProcess,
    make_client_certificate,
    pid_alive,
    tree_listing,
    wait_gone,
)


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server("--max-image-size", "1")


def alice(server: ServerProcess, **options: object) -> ServerProvision:
    return ServerProvision(server.address, bearer_token=ALICE, **options)  # type: ignore[arg-type]


def bob(server: ServerProvision | ServerProcess) -> ServerProvision:
    assert isinstance(server, ServerProcess)
    return ServerProvision(server.address, bearer_token=BOB)


def run_platform() -> str:
    """The platform the test run's provision servers attest with (they and the tests share its state directory)."""
    return SimPlatformKey.load_or_create().fingerprint


def load(manager: asylo.EnclaveManager, image: Path, provision: asylo.RemoteProvision) -> asylo.EnclaveClient:
    proxy = asylo.RemoteProxyClientConfig(provision, trusted_platforms=(run_platform(),))
    return manager.load_enclave(asylo.EnclaveLoadConfig(
        "primitives", remote=asylo.RemoteLoadConfig(image, proxy=proxy)))


# -- the happy paths ---------------------------------------------------------------------------------------------

def test_quickstart_through_the_provision_server(server: ServerProcess, images_dir: Path,
                                                 manager: asylo.EnclaveManager) -> None:
    provision = asylo.RemoteProvision.instantiate(server.address, bearer_token=ALICE)
    result = run_quickstart("Asylo Rocks", backend_config("remote", images_dir / "quickstart.aimg",
                                                          provision=provision, trusted_platforms=(server.platform,)),
                            manager=manager, echo=False)
    assert len(bytes.fromhex(result.encrypted_hex)) > len("Asylo Rocks")
    assert eventually(lambda: not server.proxy_pids(), 10), "the proxy outlived its session"


def test_quickstart_command_with_provision_server(server: ServerProcess, images_dir: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(BOB + "\n")
    done = subprocess.run([sys.executable, "-m", "asylo", "quickstart", "--message", "Asylo Rocks",
                           "--provision-server", server.address, "--image", str(images_dir / "quickstart.aimg"),
                           "--token-file", str(token_file), "--trust-platform", server.platform],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "Encrypted message:" and bytes.fromhex(lines[1])


def test_calls_sessions_and_release(server: ServerProcess, images_dir: Path, manager: asylo.EnclaveManager) -> None:
    provision = alice(server)
    client = load(manager, images_dir / "primitives.aimg", provision)
    for value in range(20):
        assert client.call("square", u64(value)) == u64(value * value)
    [session] = provision.sessions()
    assert session.image.name == "primitives"
    assert bob(server).sessions() == []  # bob sees none of alice's sessions
    [pid] = server.proxy_pids()
    assert pid_alive(pid)
    manager.destroy_enclave(client)
    assert not wait_gone({pid}), "the proxy outlived destroy_enclave"
    assert eventually(lambda: provision.sessions() == [], 5)


def test_answer_names_a_reachable_proxy_and_a_fresh_token(server: ServerProcess) -> None:
    first = alice(server).provision_by_name("primitives")
    second = alice(server).provision_by_name("primitives")
    try:
        assert first.proxy_host == "127.0.0.1" and first.proxy_port not in (0, server.port)
        assert len(first.token) == 32 and first.token != second.token
        assert first.session_id != second.session_id
    finally:
        alice(server).release(first.session_id)
        alice(server).release(second.session_id)
    assert not wait_gone(server.proxy_pids())


@pytest.mark.parametrize("served", ["direct", "grpc"])
def test_the_answer_names_the_transport_and_another_is_refused(
        start_server: Callable[..., ServerProcess], images_dir: Path, manager: asylo.EnclaveManager,
        served: str) -> None:
    """A provision server's proxies serve one transport (`--transport`): its answer says which, a host that asks
    for it gets a session over it, and one that asks for the other is refused."""
    server = start_server("--transport", served)
    try:
        answer = alice(server).provision_by_name("primitives")
        alice(server).release(answer.session_id)
        assert answer.transport == served
        other = "grpc" if served == "direct" else "direct"
        image = images_dir / "primitives.aimg"
        with pytest.raises(asylo.FailedPreconditionError,
                           match=f"proxies serve the {served} transport, not '{other}'"):
            alice(server).provision(image, transport=other)  # type: ignore[arg-type]
        config = asylo.RemoteProxyClientConfig(alice(server), trusted_platforms=(run_platform(),),
                                               transport=served)  # type: ignore[arg-type]
        client = manager.load_enclave(asylo.EnclaveLoadConfig(
            "named", remote=asylo.RemoteLoadConfig(image, proxy=config)))
        assert type(client.loaded_enclave).__name__ == ("DirectEnclaveProxyClient" if served == "direct"
                                                         else "RemoteEnclaveProxyClient")
        assert client.call("square", u64(7)) == u64(49)
        manager.destroy_enclave(client)
    finally:
        server.stop()


def test_list_images(server: ServerProcess) -> None:
    names = {image.name for image in alice(server).images()}
    assert names == {"primitives", "quickstart"}


def test_upload_then_provision(server: ServerProcess, signing_key: Ed25519PrivateKey, tmp_path: Path,
                               manager: asylo.EnclaveManager) -> None:
    source = tmp_path / "primitives-v2"
    shutil.copytree(ENCLAVES / "primitives", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "extra.txt").write_text("a different measurement")
    image = tmp_path / "primitives-v2.aimg"
    write_image(image, build_image(source, signing_key))
    provision = alice(server, upload=True)
    client = load(manager, image, provision)  # not in the store: uploaded, then provisioned
    assert client.enter_and_run(asylo.EnclaveInput(data=b"v2")).data == b"ran:v2"
    manager.destroy_enclave(client)
    uploaded = server.state_dir / "images" / "primitives-v2.aimg"
    assert stat.S_IMODE(uploaded.stat().st_mode) == 0o600
    assert "primitives-v2" in {i.name for i in bob(server).images()}


def test_state_directory_is_private(server: ServerProcess) -> None:
    assert stat.S_IMODE(server.state_dir.stat().st_mode) == 0o700
    for path in server.state_dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_health_and_reflection(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "asylo.provision.ProvisionService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        [answer] = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                   timeout=5)
        names = {s.name for s in answer.list_services_response.service}
        assert "asylo.provision.ProvisionService" in names and "grpc.health.v1.Health" in names


def metrics(server: ServerProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_metrics(server: ServerProcess) -> None:
    before = metrics(server)
    answer = alice(server).provision_by_name("primitives")
    during = metrics(server)
    alice(server).release(answer.session_id)
    with pytest.raises(asylo.NotFoundError):
        alice(server).provision_by_name("no-such-image")
    after = metrics(server)
    assert during["asylo_provision_active_enclaves"] == before["asylo_provision_active_enclaves"] + 1
    assert during["asylo_provision_provisions_total"] == before["asylo_provision_provisions_total"] + 1
    assert after["asylo_provision_active_enclaves"] == before["asylo_provision_active_enclaves"]
    reason = 'asylo_provision_rejects_total{reason="not_found"}'
    assert after[reason] == before[reason] + 1


# -- bad input: each gets its status and changes nothing on disk ---------------------------------------------------

def _upload_bytes(server: ServerProcess, name: str, data: bytes, *, size: int | None = None,
                  digest: bytes | None = None, token: str | None = ALICE) -> None:
    header = provision_pb2.UploadImageHeader(name=name, size=len(data) if size is None else size,
                                             sha256=hashlib.sha256(data).digest() if digest is None else digest)
    chunks = [provision_pb2.UploadImageChunk(header=header)]
    chunks += [provision_pb2.UploadImageChunk(data=data[i:i + 65536]) for i in range(0, len(data), 65536)]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(server.address) as channel:
        upload = channel.stream_unary("/asylo.provision.ProvisionService/UploadImage",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=provision_pb2.ImageInfo.FromString)
        upload(iter(chunks), timeout=10, metadata=metadata)


@pytest.fixture(scope="module")
def untrusted_image() -> bytes:
    return build_image(ENCLAVES / "primitives", generate_signing_key())


@pytest.fixture(scope="module")
def trusted_image(images_dir: Path) -> bytes:
    return (images_dir / "primitives.aimg").read_bytes()


def _tampered(image: bytes) -> bytes:
    data = bytearray(image)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


BAD_INPUTS: list[tuple[str, Callable[[ServerProcess, bytes, bytes], None], grpc.StatusCode]] = [
    ("unknown image", lambda s, t, u: alice(s).provision_by_name("no-such-image"), grpc.StatusCode.NOT_FOUND),
    ("unknown measurement", lambda s, t, u: alice(s)._call(
        "Provision", provision_pb2.ProvisionRequest(measurement=bytes(32)), provision_pb2.ProvisionResponse),
     grpc.StatusCode.NOT_FOUND),
    ("unsigned upload", lambda s, t, u: _upload_bytes(s, "junk", b"not an image at all"),
     grpc.StatusCode.PERMISSION_DENIED),
    ("tampered upload", lambda s, t, u: _upload_bytes(s, "tampered", _tampered(t)),
     grpc.StatusCode.PERMISSION_DENIED),
    ("untrusted signer", lambda s, t, u: _upload_bytes(s, "untrusted", u), grpc.StatusCode.PERMISSION_DENIED),
    ("name with /", lambda s, t, u: _upload_bytes(s, "a/b", t), grpc.StatusCode.INVALID_ARGUMENT),
    ("name with ..", lambda s, t, u: _upload_bytes(s, "..", t), grpc.StatusCode.INVALID_ARGUMENT),
    ("name with NUL", lambda s, t, u: _upload_bytes(s, "a\0b", t), grpc.StatusCode.INVALID_ARGUMENT),
    ("provision name with /", lambda s, t, u: alice(s).provision_by_name("../images/primitives"),
     grpc.StatusCode.INVALID_ARGUMENT),
    ("over the size limit (declared)", lambda s, t, u: _upload_bytes(s, "big", t, size=2 << 20),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("over the size limit (sent)", lambda s, t, u: _upload_bytes(s, "big", t + bytes(2 << 20), size=len(t)),
     grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("wrong digest", lambda s, t, u: _upload_bytes(s, "digest", t, digest=bytes(32)), grpc.StatusCode.DATA_LOSS),
    ("no credentials", lambda s, t, u: _upload_bytes(s, "anon", t, token=None), grpc.StatusCode.UNAUTHENTICATED),
    ("no credentials (provision)", lambda s, t, u: ServerProvision(s.address).provision_by_name("primitives"),
     grpc.StatusCode.UNAUTHENTICATED),
    ("a wrong token", lambda s, t, u: ServerProvision(s.address, bearer_token="x" * 20).images(),
     grpc.StatusCode.UNAUTHENTICATED),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input(server: ServerProcess, trusted_image: bytes, untrusted_image: bytes,
                   case: tuple[str, Callable[[ServerProcess, bytes, bytes], None], grpc.StatusCode]) -> None:
    _, attempt, code = case
    before = tree_listing(server.state_dir)
    with pytest.raises((grpc.RpcError, asylo.AsyloError)) as raised:
        attempt(server, trusted_image, untrusted_image)
    error = raised.value
    got = error.code() if isinstance(error, grpc.RpcError) else grpc.StatusCode[error.code.name]
    assert got == code, error
    assert tree_listing(server.state_dir) == before
    assert not server.proxy_pids()


def test_another_clients_session_is_permission_denied(server: ServerProcess) -> None:
    answer = alice(server).provision_by_name("primitives")
    try:
        before = tree_listing(server.state_dir)
        with pytest.raises(asylo.PermissionDeniedError, match="another client"):
            bob(server).release(answer.session_id)
        assert tree_listing(server.state_dir) == before
        assert [s.session_id for s in alice(server).sessions()] == [answer.session_id]
    finally:
        alice(server).release(answer.session_id)


# -- limits ----------------------------------------------------------------------------------------------------

def test_limits_are_resource_exhausted_naming_the_limit(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server("--max-enclaves", "3", "--max-enclaves-per-client", "2")
    held = [alice(server).provision_by_name("primitives") for _ in range(2)]
    try:
        with pytest.raises(asylo.ResourceExhaustedError, match="per-client limit of 2"):
            alice(server).provision_by_name("primitives")
        held.append(bob(server).provision_by_name("primitives"))
        with pytest.raises(asylo.ResourceExhaustedError, match="server's limit of 3"):
            bob(server).provision_by_name("primitives")
        values = metrics(server)
        assert values['asylo_provision_rejects_total{reason="client_limit"}'] == 1
        assert values['asylo_provision_rejects_total{reason="server_limit"}'] == 1
    finally:
        alice(server).release(held[0].session_id)
        alice(server).release(held[1].session_id)
        bob(server).release(held[2].session_id)
    assert not wait_gone(server.proxy_pids())
    server.stop()


def test_idle_session_is_ended_and_its_slot_freed(start_server: Callable[..., ServerProcess], images_dir: Path,
                                                  manager: asylo.EnclaveManager) -> None:
    server = start_server("--idle-timeout", "1")
    client = load(manager, images_dir / "primitives.aimg", alice(server))
    assert client.enter_and_run(asylo.EnclaveInput(data=b"x")).data == b"ran:x"
    assert eventually(lambda: alice(server).sessions() == [], 10), "the idle session was not ended"
    with pytest.raises(asylo.AsyloError, match="idle"):
        client.enter_and_run(asylo.EnclaveInput())
    manager.destroy_enclave(client)
    assert not wait_gone(server.proxy_pids())
    server.stop()


# -- hygiene ---------------------------------------------------------------------------------------------------

def test_a_crashing_proxy_does_not_take_the_server_down(server: ServerProcess, images_dir: Path,
                                                        manager: asylo.EnclaveManager) -> None:
    doomed = alice(server).provision_by_name("primitives")
    [pid] = server.proxy_pids()
    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: alice(server).sessions() == [], 10), "the crashed proxy's session stayed"
    assert server.process.poll() is None
    client = load(manager, images_dir / "primitives.aimg", alice(server))
    assert client.enter_and_run(asylo.EnclaveInput(data=b"x")).data == b"ran:x"
    manager.destroy_enclave(client)
    assert doomed.session_id not in {s.session_id for s in alice(server).sessions()}


def test_proxies_die_with_the_server_and_a_restart_leaves_no_orphans(
        start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    answers = [alice(server).provision_by_name("primitives") for _ in range(2)]
    pids = server.proxy_pids()
    assert len(pids) == 2 and len(answers) == 2
    stopped, running = sorted(pids)
    os.kill(stopped, signal.SIGSTOP)  # a wedged proxy hears neither its pipe nor the parent-death signal
    server.stop(signal.SIGKILL)
    assert not wait_gone({running}), "a proxy outlived its server"
    assert pid_alive(stopped)
    restarted = start_server(state_dir=server.state_dir)
    assert not wait_gone({stopped}), "the restarted server left the orphan alive"
    assert restarted.proxy_pids() == set()
    restarted.stop()


def test_sigterm_ends_every_session(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    alice(server).provision_by_name("primitives")
    pids = server.proxy_pids()
    assert pids
    server.stop(signal.SIGTERM)
    assert server.process.returncode == 0
    assert not wait_gone(pids)
    assert server.proxy_pids() == set()


def test_a_client_that_gives_up_leaves_no_proxy(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    with pytest.raises(asylo.DeadlineExceededError):
        ServerProvision(server.address, bearer_token=ALICE, timeout=0.05).provision_by_name("primitives")
    assert eventually(lambda: alice(server).sessions() == [] and not server.proxy_pids(), 15), \
        "the proxy started for a client that gave up was not let go"
    server.stop()


# -- warm pool and mutual TLS ----------------------------------------------------------------------------------

def test_warm_pool_serves_provisions(start_server: Callable[..., ServerProcess], images_dir: Path,
                                     manager: asylo.EnclaveManager) -> None:
    server = start_server("--warm", "2")
    assert eventually(lambda: len(server.proxy_pids()) == 2, 30), "the warm pool did not fill"
    standby = server.proxy_pids()
    assert eventually(lambda: metrics(server)["asylo_provision_warm_proxies"] == 2, 5)
    client = load(manager, images_dir / "primitives.aimg", alice(server))
    assert client.call("square", u64(12)) == u64(144)
    [session] = alice(server).sessions()
    assert session.image.name == "primitives"
    assert standby & server.proxy_pids(), "no pre-started proxy took the session"
    manager.destroy_enclave(client)
    assert eventually(lambda: len(server.proxy_pids()) == 2, 30), "the pool did not refill"
    pids = server.proxy_pids()
    server.stop()
    assert not wait_gone(pids), "standby proxies outlived the server"


def test_mutual_tls_certificate_is_the_clients_identity(start_server: Callable[..., ServerProcess],
                                                        tmp_path: Path) -> None:
    ca = create_dev_ca(tmp_path / "ca")
    server = start_server("--tls-cert", str(ca.server_cert), "--tls-key", str(ca.server_key),
                          "--tls-client-ca", str(ca.ca_cert))
    credentials = asylo.ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key)
    by_certificate = ServerProvision(server.address, credentials=credentials)
    answer = by_certificate.provision_by_name("primitives")
    assert [s.session_id for s in by_certificate.sessions()] == [answer.session_id]
    # The same connection with bob's token is bob, who owns nothing and may release nothing of the certificate's.
    as_bob = ServerProvision(server.address, credentials=credentials, bearer_token=BOB)
    assert as_bob.sessions() == []
    with pytest.raises(asylo.PermissionDeniedError):
        as_bob.release(answer.session_id)
    # Without a client certificate the TLS handshake itself fails.
    with pytest.raises(asylo.EnclaveUnavailable):
        ServerProvision(server.address, credentials=asylo.ClientCredentials.tls(ca.ca_cert),
                        bearer_token=ALICE, timeout=5).images()
    by_certificate.release(answer.session_id)
    assert not wait_gone(server.proxy_pids())
    server.stop()


# -- what runs is what the store checked (S1), and only for the client that asked (S5) ----------------------------

def wait_warm(server: ServerProcess, count: int) -> None:
    """Until `count` standby proxies are ready (not only started), so that the next provision is a warm one."""
    assert eventually(lambda: metrics(server)["asylo_provision_warm_proxies"] == count, 30), "the pool did not fill"


@pytest.fixture
def own_images(tmp_path: Path, images_dir: Path) -> Path:
    """A copy of the operator's image directory that a test may change under a running server."""
    directory = tmp_path / "operator-images"
    shutil.copytree(images_dir, directory)
    return directory


@pytest.mark.parametrize("warm", ["0", "1"], ids=["cold", "warm"])
def test_an_image_swapped_after_start_up_is_refused(start_server: Callable[..., ServerProcess], own_images: Path,
                                                    tmp_path: Path, warm: str) -> None:
    """The store checked primitives.aimg at start-up; then someone with access to the operator's directory puts
    other code, validly signed by a key nobody trusts, in its place. The proxy must not run it."""
    server = start_server("--images", str(own_images), "--warm", warm)
    wait_warm(server, int(warm))
    standby = server.proxy_pids()
    source = tmp_path / "evil"
    shutil.copytree(ENCLAVES / "primitives", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "extra.txt").write_text("not what the operator deployed")
    (own_images / "primitives.aimg").write_bytes(build_image(source, generate_signing_key()))
    failures = metrics(server)["asylo_provision_failures_total"]
    with pytest.raises(asylo.EnclaveUnavailable, match=r"(?s)measurement [0-9a-f]{64}, not the expected"):
        alice(server).provision_by_name("primitives")
    assert alice(server).sessions() == []
    assert metrics(server)["asylo_provision_failures_total"] == failures + 1
    assert not wait_gone(standby - server.proxy_pids()), "the proxy that refused the image is still running"
    # Nothing is left but the warm pool (refilled with a fresh standby); the session slot was given back.
    assert eventually(lambda: len(server.proxy_pids()) == int(warm) and not server.proxy_pids() & standby, 30)
    assert alice(server).provision_by_name("quickstart").image.name == "quickstart"
    server.stop()


@pytest.fixture
def mtls(tmp_path: Path) -> tuple[DevCaFiles, tuple[Path, Path]]:
    """A development CA, and a second client certificate from it (the CA's own is the first)."""
    ca = create_dev_ca(tmp_path / "ca")
    return ca, make_client_certificate(ca, tmp_path, "second-client")


def connect_to_proxy(manager: asylo.EnclaveManager, image: Path, answer: provision_pb2.ProvisionResponse,
                     ca: DevCaFiles, cert: Path, key: Path, *, token: bytes | None = None) -> asylo.EnclaveClient:
    """Load the enclave through the proxy an answer names, presenting client certificate `cert`."""
    credentials = asylo.ClientCredentials.tls(ca.ca_cert, cert_file=cert, key_file=key)
    provision = asylo.DirectProvision(f"127.0.0.1:{answer.proxy_port}", token or answer.token,
                                      credentials=credentials, trusted_platforms=[run_platform()])
    return manager.load_enclave(asylo.EnclaveLoadConfig("primitives", remote=asylo.RemoteLoadConfig(
        image, proxy=asylo.RemoteProxyClientConfig.defaults_with_provision(provision))))


@pytest.mark.parametrize("warm", ["0", "1"], ids=["cold", "warm"])
def test_another_client_cannot_use_a_provisioned_proxy(
        start_server: Callable[..., ServerProcess], images_dir: Path, manager: asylo.EnclaveManager,
        mtls: tuple[DevCaFiles, tuple[Path, Path]], warm: str) -> None:
    """Alice (the CA's client certificate) provisions; bob holds another certificate of the same CA. Neither bob's
    certificate with alice's token (a token that leaked) nor alice's certificate with a wrong token gets in; alice
    still does afterwards. A bearer-token client's proxy is bound by its token alone."""
    ca, (bob_cert, bob_key) = mtls
    server = start_server("--tls-cert", str(ca.server_cert), "--tls-key", str(ca.server_key),
                          "--tls-client-ca", str(ca.ca_cert), "--warm", warm)
    wait_warm(server, int(warm))
    image = images_dir / "primitives.aimg"
    alice_by_cert = ServerProvision(server.address, credentials=asylo.ClientCredentials.tls(
        ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key))
    answer = alice_by_cert.provision_by_name("primitives")
    with pytest.raises(asylo.PermissionDeniedError, match="serves another client"):
        connect_to_proxy(manager, image, answer, ca, bob_cert, bob_key)
    with pytest.raises(asylo.PermissionDeniedError, match="wrong session token"):
        connect_to_proxy(manager, image, answer, ca, ca.client_cert, ca.client_key, token=bytes(32))
    client = connect_to_proxy(manager, image, answer, ca, ca.client_cert, ca.client_key)
    assert client.call("square", u64(9)) == u64(81)
    manager.destroy_enclave(client)
    # Bob with a bearer token (over his certificate): the token is his identity, and his proxy serves his token.
    bob_by_token = ServerProvision(server.address, credentials=asylo.ClientCredentials.tls(
        ca.ca_cert, cert_file=bob_cert, key_file=bob_key), bearer_token=BOB)
    answer = bob_by_token.provision_by_name("primitives")
    client = connect_to_proxy(manager, image, answer, ca, bob_cert, bob_key)
    assert client.call("square", u64(3)) == u64(9)
    manager.destroy_enclave(client)
    assert eventually(lambda: len(server.proxy_pids()) == int(warm), 15)
    server.stop()


# -- limits that cancelled requests, uploads and disks must not get around ---------------------------------------

def test_cancelled_provisions_never_run_more_proxies_than_the_limit(
        start_server: Callable[..., ServerProcess]) -> None:
    """Clients that give up while their proxy starts free their slot only once that proxy is gone: sampled all
    along, the server never runs more proxies than --max-enclaves."""
    server = start_server("--max-enclaves", "2", "--max-enclaves-per-client", "2")
    running = True
    most = 0

    def sample() -> None:
        nonlocal most
        while running:
            most = max(most, len(server.proxy_pids()))
            time.sleep(0.005)

    answers: list[tuple[ServerProvision, str]] = []

    def impatient(index: int) -> None:
        provision = ServerProvision(server.address, bearer_token=ALICE if index % 2 else BOB,
                                    timeout=0.05 + 0.1 * (index % 5))
        for _ in range(4):
            with contextlib.suppress(asylo.DeadlineExceededError, asylo.ResourceExhaustedError):
                answers.append((provision, provision.provision_by_name("primitives").session_id))

    sampler = threading.Thread(target=sample)
    sampler.start()
    clients = [threading.Thread(target=impatient, args=(index,)) for index in range(10)]
    try:
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(60)
    finally:
        running = False
        sampler.join()
    for provision, session_id in answers:
        with contextlib.suppress(asylo.NotFoundError):
            provision.release(session_id)
    assert most <= 2, f"{most} proxies ran at once under --max-enclaves 2"
    assert most >= 1, "no proxy ever started: the test proved nothing"
    assert eventually(lambda: not server.proxy_pids(), 15), "the proxies of cancelled provisions were not reaped"
    assert alice(server).sessions() == [] and bob(server).sessions() == []
    server.stop()


def test_store_quota_and_image_count(start_server: Callable[..., ServerProcess], images_dir: Path) -> None:
    primitives = (images_dir / "primitives.aimg").read_bytes()
    quickstart = (images_dir / "quickstart.aimg").read_bytes()
    server = start_server("--max-store-size", f"{(len(primitives) + len(quickstart)) // 1024}K",
                          "--max-images", "3")
    _upload_bytes(server, "a", primitives)
    _upload_bytes(server, "a-alias", primitives)  # the same bytes again: a hard link, no more space
    stored = server.state_dir / "images"
    assert (stored / "a.aimg").stat().st_ino == (stored / "a-alias.aimg").stat().st_ino
    before = tree_listing(server.state_dir)
    with pytest.raises(grpc.RpcError) as refused:
        _upload_bytes(server, "b", quickstart)  # other bytes: over the quota
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "quota of" in str(refused.value.details())
    _upload_bytes(server, "a-again", primitives)  # the third image, still no more space
    with pytest.raises(grpc.RpcError) as refused:
        _upload_bytes(server, "a-fourth", primitives)  # a fourth name: over --max-images
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 3 uploaded images" in str(refused.value.details())
    _upload_bytes(server, "a", primitives)  # an image already stored, uploaded again: fine
    assert {name for name, _ in tree_listing(server.state_dir)} - {name for name, _ in before} == {
        "images/a-again.aimg"}
    values = metrics(server)
    assert values['asylo_provision_rejects_total{reason="store_quota"}'] == 1
    assert values['asylo_provision_rejects_total{reason="image_count"}'] == 1
    assert values['asylo_provision_rejects_total{reason="image_too_large"}'] == 0
    server.stop()


def _stalled_upload(server: ServerProcess, token: str, data: bytes, *, gap: float | None,
                    release: threading.Event) -> grpc.Future:
    """An upload that sends its header and then one 64-byte chunk every `gap` seconds (None: nothing more)
    until `release` is set: the slow uploader. Returns the RPC's future."""
    header = provision_pb2.UploadImageHeader(name=f"slow-{token[:3]}", size=len(data),
                                             sha256=hashlib.sha256(data).digest())

    def chunks() -> Iterator[provision_pb2.UploadImageChunk]:
        yield provision_pb2.UploadImageChunk(header=header)
        offset = 0
        while not release.wait(gap if gap is not None else 60):
            yield provision_pb2.UploadImageChunk(data=data[offset:offset + 64])
            offset += 64

    channel = grpc.insecure_channel(server.address)
    upload = channel.stream_unary("/asylo.provision.ProvisionService/UploadImage",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=provision_pb2.ImageInfo.FromString)
    future: grpc.Future = upload.future(chunks(), timeout=30, metadata=(("authorization", f"Bearer {token}"),))
    future.add_done_callback(lambda _: (release.set(), channel.close()))
    return future


def test_slow_uploaders_cannot_hold_the_upload_slots(start_server: Callable[..., ServerProcess],
                                                     trusted_image: bytes) -> None:
    server = start_server("--max-uploads-per-client", "1", "--upload-idle-timeout", "0.5", "--upload-timeout",
                          "1.5")
    stalled_release, trickle_release = threading.Event(), threading.Event()
    started = time.monotonic()
    stalled = _stalled_upload(server, ALICE, trusted_image, gap=None, release=stalled_release)
    trickle = _stalled_upload(server, BOB, trusted_image, gap=0.2, release=trickle_release)
    try:
        assert eventually(lambda: len(list((server.state_dir / "uploads").iterdir())) == 2, 5)
        # One upload in progress is alice's limit; bob's are counted apart.
        with pytest.raises(grpc.RpcError) as refused:
            _upload_bytes(server, "second", trusted_image)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per-client limit" in str(refused.value.details())
        # The stalled upload is abandoned after the idle limit, the trickling one at the total limit.
        with pytest.raises(grpc.RpcError) as idle:
            stalled.result(timeout=10)
        assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "sent nothing for 0.5 s" in str(idle.value.details())
        assert time.monotonic() - started < 1.4
        with pytest.raises(grpc.RpcError) as slow:
            trickle.result(timeout=10)
        assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "longer than the limit of 1.5 s" in str(slow.value.details())
    finally:
        stalled_release.set()
        trickle_release.set()
    assert eventually(lambda: not list((server.state_dir / "uploads").iterdir()), 5), "a partial upload was left"
    _upload_bytes(server, "second", trusted_image)  # alice's slot is hers again
    values = metrics(server)
    assert values['asylo_provision_rejects_total{reason="client_uploads"}'] == 1
    assert values['asylo_provision_rejects_total{reason="upload_timeout"}'] == 2
    server.stop()


# -- one server per state directory; stopping; the command line ---------------------------------------------------

def test_a_second_server_on_the_same_state_directory_is_refused(start_server: Callable[..., ServerProcess]) -> None:
    first = start_server()
    answer = alice(first).provision_by_name("primitives")
    [pid] = first.proxy_pids()
    with pytest.raises(RuntimeError, match=rf"state directory in use by another provision server "
                                           rf"\(pid {first.process.pid}\)"):
        start_server(state_dir=first.state_dir)
    # The refused server touched nothing: the first one's proxy is alive and its session still there.
    assert pid_alive(pid) and first.proxy_pids() == {pid}
    assert [s.session_id for s in alice(first).sessions()] == [answer.session_id]
    first.stop()
    assert not wait_gone({pid})
    start_server(state_dir=first.state_dir).stop()  # the lock went with the first server


def test_stop_with_launches_in_flight_leaves_nothing(start_server: Callable[..., ServerProcess]) -> None:
    """SIGTERM while sessions run, provisions start proxies (most of whose clients give up), and one proxy is
    wedged in its start-up (stopped) past the server's grace period: the launch it holds is cut short rather than
    waited out, the work left by the given-up provisions is finished, not dropped, and the server exits 0 without
    an error, every proxy reaped and no record left."""
    server = start_server("--max-enclaves", "32", "--max-enclaves-per-client", "32")
    for _ in range(2):
        alice(server).provision_by_name("primitives")
    sessions = server.proxy_pids()

    def provision(timeout: float) -> None:
        with contextlib.suppress(asylo.AsyloError):
            ServerProvision(server.address, bearer_token=ALICE, timeout=timeout).provision_by_name("primitives")

    wedged_client = threading.Thread(target=provision, args=(30.0,))
    wedged_client.start()
    assert eventually(lambda: len(server.proxy_pids()) > 2, 10)
    [wedged] = server.proxy_pids() - sessions
    os.kill(wedged, signal.SIGSTOP)  # before its ready line, almost always: a process start takes far longer
    clients = [threading.Thread(target=provision, args=(0.2,)) for _ in range(12)]
    for thread in clients:
        thread.start()
    assert eventually(lambda: len(server.proxy_pids()) > 4, 10), "no launch was in flight"
    seen = server.proxy_pids()
    server.process.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # past the server's 2 s grace for RPCs: the wedged launch is still in progress
    os.kill(wedged, signal.SIGCONT)
    err = server.stop(timeout=20)
    for thread in [wedged_client, *clients]:
        thread.join(30)
    assert server.process.returncode == 0, err
    assert "Traceback" not in err and "Exception in callback" not in err and "was destroyed" not in err, err
    assert not wait_gone(seen), "a proxy outlived the server"
    assert server.proxy_pids() == set()


@pytest.mark.parametrize(("args", "message"), [
    (["--idle-timeout", "0.05"], "0 (never) or at least 0.1"),
    (["--advertise-host", "0.0.0.0"], "is a wildcard"),
    (["--advertise-host", "[::]"], "is a wildcard"),
    (["--advertise-host", ""], "is a wildcard"),
    (["--max-store-size", "lots"], "is not a size"),
])
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(provision_server, ["--trusted-signer", "ab" * 32, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("kind", ["not-utf8", "fifo", "huge"])
def test_a_bad_bearer_token_file_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    token_file = tmp_path / "token"
    if kind == "fifo":
        os.mkfifo(token_file)  # nobody writes to it: read plainly, it would wait forever
    else:
        token_file.write_bytes(b"\xff\xfe token" if kind == "not-utf8" else b"x" * 5000)
    result = CliRunner().invoke(provision_cli, ["images", "--server", "127.0.0.1:1", "--token-file", str(token_file)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"error: INVALID_ARGUMENT: {token_file}: " in result.output
    assert {"not-utf8": "must be UTF-8 text", "fifo": "not a regular file",
            "huge": "larger than 4096 bytes"}[kind] in result.output
