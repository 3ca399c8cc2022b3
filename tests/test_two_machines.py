"""Two machines: the provision server in one network namespace, the client in another, over TLS.

Two namespaces joined by a veth pair stand for the trusted machine (10.254.77.1) and the untrusted one
(10.254.77.2); they share nothing but that link, so the proxy the client reaches is on "the other machine", at an
address the answer named, through mutual TLS with certificates made for that address. While a session is live, a
second client (bob, another certificate of the same CA) tries alice's proxy and is refused; the proxies seen then
must all be gone once the server stops. The test needs root (or CAP_NET_ADMIN) and `ip`; where namespaces cannot
be made it skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asylo.image import build_image, public_key_bytes, signer_id, write_image
from asylo.remote.devca import create_dev_ca
from tests.conftest import QUICKSTART
from tests.provision_helpers import ServerProcess, asylo_proxies_in_namespace, make_client_certificate, wait_gone

SERVER_ADDRESS = "10.254.77.1"
CLIENT_ADDRESS = "10.254.77.2"

#: Alice, on the untrusted machine: provision, say where the proxy is, wait for the word, then use it.
ALICE_SCRIPT = """
import os
import json, sys
import asylo
from asylo.remote.provision_client import ServerProvision
server, ca, cert, key, image = sys.argv[1:]
credentials = asylo.ClientCredentials.tls(ca, cert_file=cert, key_file=key)
provision = ServerProvision(server, credentials=credentials)
answer = provision.provision_by_name("demo_enclave")
print(json.dumps({"port": answer.proxy_port, "token": answer.token.hex()}), flush=True)
sys.stdin.readline()
direct = asylo.DirectProvision(server.rsplit(":", 1)[0] + f":{answer.proxy_port}", answer.token,
                               credentials=credentials, trusted_platforms=[os.environ["TRUST_PLATFORM"]])
manager = asylo.EnclaveManager()
client = manager.load_enclave(asylo.EnclaveLoadConfig("demo", remote=asylo.RemoteLoadConfig(
    image, debug=True, proxy=asylo.RemoteProxyClientConfig.defaults_with_provision(direct))))
print("alice:", client.measurement.hex(), flush=True)
manager.destroy_enclave(client)
try:
    provision.release(answer.session_id)
except asylo.NotFoundError:
    pass  # the session ended with the enclave
"""

#: Bob, on the same machine, with a certificate of the same CA: alice's token (leaked) with his certificate, and
#: alice's certificate (stolen) with a guessed token. Prints the error of each.
BOB_SCRIPT = """
import os
import sys
import asylo

target, token, ca, cert, key, alice_cert, alice_key, image = sys.argv[1:]
for what, (c, k, t) in {"bob-cert": (cert, key, bytes.fromhex(token)),
                        "wrong-token": (alice_cert, alice_key, bytes(32))}.items():
    direct = asylo.DirectProvision(target, t, credentials=asylo.ClientCredentials.tls(ca, cert_file=c, key_file=k),
                                   trusted_platforms=[os.environ["TRUST_PLATFORM"]])
    manager = asylo.EnclaveManager()
    try:
        manager.load_enclave(asylo.EnclaveLoadConfig("x", remote=asylo.RemoteLoadConfig(
            image, debug=True, proxy=asylo.RemoteProxyClientConfig.defaults_with_provision(direct))))
        print(what, "GOT IN", flush=True)
    except asylo.AsyloError as exc:
        print(what, exc.code.name, exc.message.replace(chr(10), " "), flush=True)
    finally:
        manager.shutdown()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _why_no_namespaces() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"asylo-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return f"cannot create a network namespace (needs root or CAP_NET_ADMIN): {detail}"
    _ip("netns", "del", probe)
    return None


#: Both session transports, each with TLS between the machines (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture(scope="module")
def machines() -> Iterator[tuple[str, str]]:
    """Namespaces (trusted, untrusted) joined by a veth pair; removed afterwards."""
    why = _why_no_namespaces()
    if why is not None:
        pytest.skip(why)
    trusted, untrusted = f"asylo-trusted-{os.getpid()}", f"asylo-untrusted-{os.getpid()}"
    veth_a, veth_b = f"asy{os.getpid() % 100000}a", f"asy{os.getpid() % 100000}b"
    try:
        _ip("netns", "add", trusted)
        _ip("netns", "add", untrusted)
        _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        _ip("link", "set", veth_a, "netns", trusted)
        _ip("link", "set", veth_b, "netns", untrusted)
        for namespace, device, address in ((trusted, veth_a, SERVER_ADDRESS), (untrusted, veth_b, CLIENT_ADDRESS)):
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", device)
            _ip("-n", namespace, "link", "set", device, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield trusted, untrusted
    finally:
        for namespace in (trusted, untrusted):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10, check=False)


def test_quickstart_across_two_machines_with_tls(machines: tuple[str, str], tmp_path: Path,
                                                 signing_key: Ed25519PrivateKey) -> None:
    trusted, untrusted = machines
    ca = create_dev_ca(tmp_path / "ca", hosts=[SERVER_ADDRESS])
    bob_cert, bob_key = make_client_certificate(ca, tmp_path, "bob")
    images = tmp_path / "images"
    images.mkdir()
    image = images / "demo_enclave.aimg"
    write_image(image, build_image(QUICKSTART, signing_key))
    server = ServerProcess(tmp_path / "state", [
        "--images", str(images), "--trusted-signer", signer_id(public_key_bytes(signing_key)).hex(),
        "--tls-cert", str(ca.server_cert), "--tls-key", str(ca.server_key), "--tls-client-ca", str(ca.ca_cert)],
        listen=f"{SERVER_ADDRESS}:4321", netns=trusted)
    live: set[int] = set()
    try:
        python = ["ip", "netns", "exec", untrusted, sys.executable]
        client = [*python, "-m", "asylo"]
        done = subprocess.run([*client, "quickstart", "--message", "Asylo Rocks",
                               "--provision-server", f"{SERVER_ADDRESS}:4321", "--image", str(image),
                               "--ca", str(ca.ca_cert), "--client-cert", str(ca.client_cert),
                               "--client-key", str(ca.client_key), "--trust-platform", server.platform],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "Encrypted message:" and bytes.fromhex(lines[1])
        # Plaintext to the other machine is refused before anything is sent, and says how to enable TLS.
        refused = subprocess.run([*client, "provision", "images", "--server", f"{SERVER_ADDRESS}:4321"],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert refused.returncode == 1 and "TLS" in refused.stderr
        # Without a client certificate the server's mutual TLS refuses the connection.
        no_cert = subprocess.run([*client, "provision", "images", "--server", f"{SERVER_ADDRESS}:4321",
                                  "--ca", str(ca.ca_cert)], capture_output=True, text=True, timeout=60, check=False)
        assert no_cert.returncode == 1 and "UNAVAILABLE" in no_cert.stderr
        # A live session of alice's: bob cannot use her proxy, with her token or without it.
        tls = [str(ca.ca_cert), str(ca.client_cert), str(ca.client_key)]
        trust = {**os.environ, "TRUST_PLATFORM": server.platform}
        alice = subprocess.Popen([*python, "-c", ALICE_SCRIPT, f"{SERVER_ADDRESS}:4321", *tls, str(image)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=trust)
        assert alice.stdin is not None and alice.stdout is not None
        answer = json.loads(alice.stdout.readline() or "{}")
        live = server.proxy_pids()
        assert live and live <= asylo_proxies_in_namespace(trusted), "no proxy runs for the live session"
        bob = subprocess.run([*python, "-c", BOB_SCRIPT, f"{SERVER_ADDRESS}:{answer['port']}", answer["token"],
                              str(ca.ca_cert), str(bob_cert), str(bob_key), str(ca.client_cert), str(ca.client_key),
                              str(image)], capture_output=True, text=True, timeout=60, check=False, env=trust)
        outcomes = dict(line.split(" ", 1) for line in bob.stdout.splitlines())
        assert outcomes.get("bob-cert", "").startswith("PERMISSION_DENIED"), bob.stdout + bob.stderr
        assert "serves another client" in outcomes["bob-cert"]
        assert outcomes.get("wrong-token", "").startswith("PERMISSION_DENIED"), bob.stdout + bob.stderr
        # Alice herself still gets in: the refusals used up nothing.
        out, err = alice.communicate("go\n", timeout=60)
        assert alice.returncode == 0, err
        assert out.startswith("alice: ")
        assert server.process.poll() is None
    finally:
        live |= server.proxy_pids()
        server.stop(signal.SIGTERM)
        assert not wait_gone(live), "a proxy outlived the server"
        assert server.proxy_pids() == set(), "proxy records were left in the state directory"
        assert asylo_proxies_in_namespace(trusted) == set(), "an asylo proxy still runs on the trusted machine"
