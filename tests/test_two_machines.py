"""Two machines: the provision server in one network namespace, the client in another, over TLS.

Two namespaces joined by a veth pair stand for the trusted machine (10.254.77.1) and the untrusted one
(10.254.77.2); they share nothing but that link, so the proxy the client reaches is on "the other machine", at an
address the answer named, through mutual TLS with certificates made for that address. The test needs root (or
CAP_NET_ADMIN) and `ip`; where namespaces cannot be made it skips and says why.
"""

from __future__ import annotations

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
from tests.provision_helpers import ServerProcess, wait_gone

SERVER_ADDRESS = "10.254.77.1"
CLIENT_ADDRESS = "10.254.77.2"


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
    images = tmp_path / "images"
    images.mkdir()
    image = images / "demo_enclave.aimg"
    write_image(image, build_image(QUICKSTART, signing_key))
    server = ServerProcess(tmp_path / "state", [
        "--images", str(images), "--trusted-signer", signer_id(public_key_bytes(signing_key)).hex(),
        "--tls-cert", str(ca.server_cert), "--tls-key", str(ca.server_key), "--tls-client-ca", str(ca.ca_cert)],
        listen=f"{SERVER_ADDRESS}:4321", netns=trusted)
    try:
        client = ["ip", "netns", "exec", untrusted, sys.executable, "-m", "asylo"]
        done = subprocess.run([*client, "quickstart", "--message", "Asylo Rocks",
                               "--provision-server", f"{SERVER_ADDRESS}:4321", "--image", str(image),
                               "--ca", str(ca.ca_cert), "--client-cert", str(ca.client_cert),
                               "--client-key", str(ca.client_key)],
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
        assert server.process.poll() is None
    finally:
        pids = server.proxy_pids()
        server.stop(signal.SIGTERM)
        assert not wait_gone(pids)
