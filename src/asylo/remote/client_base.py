"""What the host's end of a remote enclave is, whichever transport carries its session.

`RemoteEnclaveProxyClient` (gRPC) and `DirectEnclaveProxyClient` (the direct stream) are the same thing to the
`EnclaveManager`: a `LoadedEnclave` reached through a proxy, whose calls are matched to host threads by
`HostThreads`, and whose identity the welcome proved. That part lives here once.
"""

from __future__ import annotations

from asylo.identity import EnclaveIdentity
from asylo.primitives.matching import HostThreads
from asylo.remote.provision import ProvisionedProxy
from asylo.remote.welcome import Welcomed


class ProxiedEnclave:
    """The transport-neutral half of a host's remote enclave: its name, proxy, identity and thread matching."""

    _host: HostThreads

    def __init__(self, name: str, proxy: ProvisionedProxy) -> None:
        self._name = name
        self.proxy = proxy
        self._target = proxy.target
        self._measurement = b""
        self._signer = b""
        #: The enclave's identity as its platform's evidence proved it (None for an unattested session).
        self.identity: EnclaveIdentity | None = None

    def _welcomed(self, welcomed: Welcomed) -> None:
        self.identity, self._measurement, self._signer = welcomed.identity, welcomed.measurement, welcomed.signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def measurement(self) -> bytes:
        return self._measurement

    @property
    def signer(self) -> bytes:
        return self._signer

    @property
    def closed(self) -> bool:
        return self._host.closed

    @property
    def target(self) -> str:
        return self._target
