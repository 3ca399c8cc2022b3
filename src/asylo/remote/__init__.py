"""The remote backend: an enclave that runs in a proxy process, here or on another machine, over one stream.

Host side: `RemoteLoadConfig` (in `EnclaveLoadConfig(remote=...)`), `RemoteProxyClientConfig`, provisioning
(`RemoteProvision.instantiate()`, `LocalProvision`, `DirectProvision`) and credentials. Proxy side:
`RemoteEnclaveProxyServer`, run by `asylo proxy`. The session travels over one of two transports
(`asylo.remote.transports`): the direct stream (TCP, TLS or vsock; `DirectEnclaveProxyClient` and
`DirectEnclaveProxyServer`, the default) or one gRPC stream (`RemoteEnclaveProxyClient` and
`RemoteEnclaveProxyServer`).
"""

from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.config import RemoteLoadConfig, RemoteProxyClientConfig
from asylo.remote.credentials import ClientCredentials, ServerCredentials
from asylo.remote.direct_client import DirectEnclaveProxyClient
from asylo.remote.direct_server import DirectEnclaveProxyServer
from asylo.remote.provision import DirectProvision, LocalProvision, ProvisionedProxy, ProxyTls, RemoteProvision
from asylo.remote.server import RemoteEnclaveProxyServer
from asylo.remote.transports import DEFAULT_TRANSPORT, TRANSPORTS, Transport

__all__ = [
    "DEFAULT_TRANSPORT",
    "TRANSPORTS",
    "ClientCredentials",
    "DirectEnclaveProxyClient",
    "DirectEnclaveProxyServer",
    "DirectProvision",
    "LocalProvision",
    "ProvisionedProxy",
    "ProxyTls",
    "RemoteEnclaveProxyClient",
    "RemoteEnclaveProxyServer",
    "RemoteLoadConfig",
    "RemoteProvision",
    "RemoteProxyClientConfig",
    "ServerCredentials",
    "Transport",
]
