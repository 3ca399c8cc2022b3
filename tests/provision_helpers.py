"""A real `asylo provision-server` process for tests: started on an ephemeral port, stopped and reaped after."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asylo.remote.devca import DevCaFiles

READY_PREFIX = "ASYLO-PROVISION-SERVER-READY"
#: The bearer tokens of the two clients the provision-server fixtures know.
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef01"


class ServerProcess:
    """`asylo provision-server ARGS --listen 127.0.0.1:0` with a state directory of its own."""

    def __init__(self, state_dir: Path, args: list[str], *, listen: str = "127.0.0.1:0",
                 netns: str | None = None) -> None:
        self.state_dir = state_dir
        command = [sys.executable, "-m", "asylo", "provision-server", "--listen", listen,
                   "--state-dir", str(state_dir), *args]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"the provision server did not start: {line!r} {err}")
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        self.port = int(fields["port"])
        self.metrics_port = int(fields["metrics_port"]) if "metrics_port" in fields else None
        #: The fingerprint of the platform its proxies attest with: what its clients must trust.
        self.platform = fields["platform"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def proxy_pids(self) -> set[int]:
        """The proxies the server has running (it records each one's pid in its state directory)."""
        directory = self.state_dir / "proxies"
        return {int(p.name) for p in directory.iterdir() if p.name.isdigit()} if directory.is_dir() else set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        """Stop the server with `sig`, reap it, and return what it wrote on standard error."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=timeout)
        return err


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: it runs nothing and its parent (the server) reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """The pids still alive after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    alive = {pid for pid in pids if pid_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if pid_alive(pid)}
    return alive


def tree_listing(root: Path) -> list[tuple[str, int]]:
    """Every path under `root` with its mode: what "nothing changed on disk" compares."""
    return sorted((str(p.relative_to(root)), p.stat().st_mode) for p in root.rglob("*"))


def make_client_certificate(ca: DevCaFiles, directory: Path, name: str) -> tuple[Path, Path]:
    """Another client certificate signed by the development CA (which makes only one): (certificate, key) files.
    Two clients of one CA are what mutual-TLS tenancy must tell apart."""
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


def asylo_proxies_in_namespace(netns: str) -> set[int]:
    """The `asylo proxy` processes running in the named network namespace (`ip netns add NAME`), from /proc: what
    a provision server in that namespace may have left running, whoever their parent is by now."""
    namespace = os.stat(f"/run/netns/{netns}").st_ino
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            in_namespace = os.stat(entry / "ns" / "net").st_ino == namespace
        except OSError:
            continue
        if in_namespace and b"asylo" in command and b"proxy" in command and pid_alive(int(entry.name)):
            found.add(int(entry.name))
    return found
