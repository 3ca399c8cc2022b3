"""Provisioning: how a host gets a proxy to talk to (Asylo's RemoteProvision).

`RemoteProvision.instantiate()` gives the embedded default, `LocalProvision`: it starts `asylo proxy` as a child
process on loopback with an ephemeral port (reported back over a pipe, so parallel hosts never collide), hands it
the one-time session token on its standard input (never on the command line, where other users could read it), and
reaps it when the enclave is destroyed. The proxy watches that pipe too: when the host process dies, the pipe closes
and the proxy finalizes the enclave and exits. `DirectProvision` connects to a proxy someone started by hand.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import secrets
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asylo.remote.credentials import ClientCredentials
from asylo.status import EnclaveUnavailable, UnimplementedError

_log = logging.getLogger(__name__)
_proxy_log = logging.getLogger("asylo.proxy")

#: The line `asylo proxy` prints on standard output once it listens: the prefix, then the port.
READY_PREFIX = "ASYLO-PROXY-READY port="


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class ProvisionedProxy:
    """A proxy ready for one session: where it listens, its one-time token, how to reach it, how to let it go."""

    target: str
    token: bytes = field(repr=False)
    credentials: ClientCredentials
    release: Callable[[], None] = _nothing
    #: The proxy's process id when it runs on this machine as our child (local provisioning), else None.
    pid: int | None = None


class RemoteProvision(ABC):
    """Gets a proxy for one enclave session. Subclasses decide where the proxy runs."""

    @abstractmethod
    def provision(self, image_path: Path) -> ProvisionedProxy:
        """Start (or find) a proxy hosting the image at `image_path`; the caller must call `release` when done."""

    @staticmethod
    def instantiate(address: str | None = None) -> RemoteProvision:
        """The default provisioning: `LocalProvision` (proxies on this machine, the embedded default).

        A provision server's address ("host:4321") selects remote provisioning, which this release does not have.
        """
        if address is None:
            return LocalProvision()
        raise UnimplementedError(f"provisioning through a provision server ({address}) is not available in this "
                                 f"release; use LocalProvision or DirectProvision")


@dataclass(frozen=True)
class ProxyTls:
    """TLS for locally provisioned proxies: the server's certificate and key, and optionally a CA whose client
    certificates the proxy requires (mutual TLS). The host side passes matching ClientCredentials."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    def args(self) -> list[str]:
        args = ["--tls-cert", str(self.cert_file), "--tls-key", str(self.key_file)]
        if self.client_ca_file is not None:
            args += ["--tls-client-ca", str(self.client_ca_file)]
        return args


class LocalProvision(RemoteProvision):
    """Starts each proxy as a child process of this one, listening on 127.0.0.1 only."""

    def __init__(self, *, tls: ProxyTls | None = None, credentials: ClientCredentials | None = None,
                 startup_timeout: float = 30.0, hello_timeout: float = 30.0,
                 python: str = sys.executable) -> None:
        if (tls is None) != (credentials is None or credentials.insecure):
            raise ValueError("LocalProvision: give tls= (for the proxy) and TLS credentials= (for the host) together")
        self._tls = tls
        self._credentials = credentials or ClientCredentials.insecure_loopback()
        self._startup_timeout = startup_timeout
        self._hello_timeout = hello_timeout
        self._python = python

    def provision(self, image_path: Path) -> ProvisionedProxy:
        token = secrets.token_bytes(32)
        args = [self._python, "-m", "asylo", "proxy", "--image", os.fspath(image_path), "--listen", "127.0.0.1:0",
                "--token-stdin", "--exit-with-parent", "--hello-timeout", str(self._hello_timeout)]
        if self._tls is not None:
            args += self._tls.args()
        process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, close_fds=True)
        proxy = _ProxyProcess(process)
        try:
            port = proxy.start(token, self._startup_timeout)
        except BaseException:
            proxy.release()
            raise
        return ProvisionedProxy(f"127.0.0.1:{port}", token, self._credentials, proxy.release, process.pid)


class _ProxyProcess:
    """One child `asylo proxy`: its pipes, the threads that read them, and its reaping."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stdout_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"asylo-proxy-{process.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"asylo-proxy-{process.pid}-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._released = False
        self._lock = threading.Lock()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._stdout_lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._stdout_lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr_tail.append(line)
            _proxy_log.info("[pid %d] %s", self.process.pid, line)

    def start(self, token: bytes, timeout: float) -> int:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(token.hex().encode("ascii") + b"\n")
            self.process.stdin.flush()
        except OSError:
            pass  # it died already; reported below with what it said
        while True:
            try:
                line = self._stdout_lines.get(timeout=timeout)
            except queue.Empty:
                raise EnclaveUnavailable(f"the enclave's proxy did not start within {timeout:.0f} s"
                                         f"{self._said()}") from None
            if line is None:
                code = self.process.wait()
                raise EnclaveUnavailable(f"the enclave's proxy failed to start (exit code {code}){self._said()}")
            if line.startswith(READY_PREFIX):
                return int(line.removeprefix(READY_PREFIX))
            _proxy_log.info("[pid %d] %s", self.process.pid, line)

    def _said(self) -> str:
        for reader in self._readers[1:]:
            reader.join(1)
        tail = "\n".join(self._stderr_tail)
        return f"; it said:\n{tail}" if tail else ""

    def release(self) -> None:
        """Let the proxy go: close its pipe (it finalizes and exits), and reap it, forcibly if it lingers."""
        with self._lock:
            if self._released:
                return
            self._released = True
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            # Closing its pipe is the proxy's signal to finalize and exit; one that does not (stopped, wedged in
            # enclave code) is killed: SIGTERM would not reach a stopped process either.
            self.process.wait(8.0)
        except subprocess.TimeoutExpired:
            _log.warning("the enclave's proxy (pid %d) did not exit; killing it", self.process.pid)
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


class DirectProvision(RemoteProvision):
    """A proxy that is already running (started by hand with `asylo proxy`): its address and token."""

    def __init__(self, target: str, token: bytes, *, credentials: ClientCredentials | None = None) -> None:
        self._proxy = ProvisionedProxy(target, token, credentials or ClientCredentials.insecure_loopback())

    def provision(self, image_path: Path) -> ProvisionedProxy:
        return self._proxy
