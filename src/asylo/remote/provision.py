"""Provisioning: how a host gets a proxy to talk to (Asylo's RemoteProvision).

`RemoteProvision.instantiate()` gives the embedded default, `LocalProvision`: it starts `asylo proxy` as a child
process on loopback with an ephemeral port (reported back over a pipe, so parallel hosts never collide), hands it
the one-time session token on its standard input (never on the command line, where other users could read it), and
reaps it when the enclave is destroyed. The proxy watches that pipe too: when the host process dies, the pipe closes
and the proxy finalizes the enclave and exits. `DirectProvision` connects to a proxy someone started by hand.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asylo._malloc import with_huge_pages
from asylo.identity import SimPlatformKey
from asylo.identity.machine import PlatformOptions
from asylo.remote.child_process import ListeningChild
from asylo.remote.credentials import ClientCredentials
from asylo.remote.transports import DEFAULT_TRANSPORT, Transport, check_transport, default_transport
from asylo.status import FailedPreconditionError, InvalidArgumentError

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
    #: Fingerprints of platforms the provisioning vouches for (local provisioning: this machine's simulated
    #: platform, which the proxy it starts uses). The host believes evidence signed by these.
    trusted_platforms: tuple[str, ...] = ()
    #: How the proxy takes its session: "direct" (a TCP/TLS/vsock stream) or "grpc" (see `asylo.remote.transports`).
    transport: Transport = DEFAULT_TRANSPORT


class RemoteProvision(ABC):
    """Gets a proxy for one enclave session. Subclasses decide where the proxy runs."""

    @abstractmethod
    def provision(self, image_path: Path, *, transport: Transport | None = None) -> ProvisionedProxy:
        """Start (or find) a proxy hosting the image at `image_path`, serving `transport` (None: the provisioning's
        own choice; a provisioning that cannot serve the one asked for raises FailedPreconditionError); the caller
        must call `release` when done. (The host passes `transport` only when its config names one.)"""

    @staticmethod
    def instantiate(address: str | None = None, *, credentials: ClientCredentials | None = None,
                    bearer_token: str | None = None, upload: bool = False) -> RemoteProvision:
        """Asylo's RemoteProvision::Instantiate: `LocalProvision` (proxies on this machine, the embedded default)
        without an address; with a provision server's address ("host:4321"), `ServerProvision` through it, with
        `credentials` (TLS; needed for any non-loopback address) and/or a `bearer_token`. With `upload`, an image
        the server lacks is uploaded first."""
        if address is None:
            if credentials is not None or bearer_token is not None or upload:
                raise InvalidArgumentError("credentials, bearer_token and upload apply to a provision server address")
            return LocalProvision()
        from asylo.remote.provision_client import ServerProvision  # noqa: PLC0415 - it builds on this module

        return ServerProvision(address, credentials=credentials, bearer_token=bearer_token, upload=upload)


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
                 python: str = sys.executable, platform_state: Path | None = None,
                 platform: PlatformOptions | None = None, transport: Transport | None = None) -> None:
        if (tls is None) != (credentials is None or credentials.insecure):
            raise ValueError("LocalProvision: give tls= (for the proxy) and TLS credentials= (for the host) together")
        self._tls = tls
        self._transport = check_transport(transport) if transport is not None else None
        self._credentials = credentials or ClientCredentials.insecure_loopback()
        self._startup_timeout = startup_timeout
        self._hello_timeout = hello_timeout
        self._python = python
        # The proxies started here run on this machine's platform: `platform` (default: the simulated one, whose
        # key is then the one to trust, made on first use; `platform_state` None: the default place, which the
        # proxies use too). On hardware the host trusts the vendor's roots and its expectation's reference values.
        if platform is not None and platform_state is not None:
            raise InvalidArgumentError("give the sim platform's state in platform= (PlatformOptions(sim_state=...))")
        self._platform_options = platform or PlatformOptions(sim_state=platform_state)
        self._platform_state = self._platform_options.sim_state

    @functools.cached_property
    def _trusted_platforms(self) -> tuple[str, ...]:
        """The fingerprint of the sim platform the proxies run on, read once (on first use); none on hardware."""
        if self._platform_options.resolved_kind() != "sim":
            return ()
        return (SimPlatformKey.load_or_create(self._platform_state).fingerprint,)

    def provision(self, image_path: Path, *, transport: Transport | None = None) -> ProvisionedProxy:
        chosen = check_transport(transport or self._transport or default_transport())
        token = secrets.token_bytes(32)
        args = [self._python, "-m", "asylo", "proxy", "--image", os.fspath(image_path), "--listen", "127.0.0.1:0",
                "--token-stdin", "--exit-with-parent", "--hello-timeout", str(self._hello_timeout),
                "--transport", chosen]
        if self._tls is not None:
            args += self._tls.args()
        args += self._platform_options.proxy_args()
        proxy = ListeningChild(args, ready_prefix=READY_PREFIX, what="the enclave's proxy", log=_proxy_log,
                               env=with_huge_pages(os.environ))
        try:
            port = proxy.start(token.hex().encode("ascii") + b"\n", self._startup_timeout)
        except BaseException:
            proxy.release()
            raise
        return ProvisionedProxy(f"127.0.0.1:{port}", token, self._credentials, proxy.release, proxy.pid,
                                self._trusted_platforms, chosen)


class DirectProvision(RemoteProvision):
    """A proxy that is already running (started by hand with `asylo proxy`): its address and token, the
    fingerprints of the platforms to trust for its evidence (`asylo platform show` on its machine), and the
    transport it was started with (its `--transport`)."""

    def __init__(self, target: str, token: bytes, *, credentials: ClientCredentials | None = None,
                 trusted_platforms: Sequence[str] = (), transport: Transport | None = None) -> None:
        self._proxy = ProvisionedProxy(target, token, credentials or ClientCredentials.insecure_loopback(),
                                       trusted_platforms=tuple(trusted_platforms),
                                       transport=check_transport(transport or default_transport()))

    def provision(self, image_path: Path, *, transport: Transport | None = None) -> ProvisionedProxy:
        if transport is not None and transport != self._proxy.transport:
            raise FailedPreconditionError(f"the proxy at {self._proxy.target} serves the {self._proxy.transport} "
                                          f"transport, not {transport} (DirectProvision(..., transport=...) says "
                                          f"which it was started with)")
        return self._proxy
