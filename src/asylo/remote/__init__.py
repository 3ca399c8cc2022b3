"""The remote backend: an enclave that runs in a proxy process, here or on another machine, over one gRPC stream.

Host side: `RemoteLoadConfig` (in `EnclaveLoadConfig(remote=...)`), `RemoteProxyClientConfig`, provisioning
(`RemoteProvision.instantiate()`, `LocalProvision`, `DirectProvision`) and credentials. Proxy side:
`RemoteEnclaveProxyServer`, run by `asylo proxy`.
"""

from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.config import RemoteLoadConfig, RemoteProxyClientConfig
from asylo.remote.credentials import ClientCredentials, ServerCredentials
from asylo.remote.provision import DirectProvision, LocalProvision, ProvisionedProxy, ProxyTls, RemoteProvision
from asylo.remote.server import RemoteEnclaveProxyServer

__all__ = [
    "ClientCredentials",
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
]
