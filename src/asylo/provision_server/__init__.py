"""The provision server (`asylo provision-server`): start enclaves on a trusted machine on demand, for many clients.

One concept per module: `store` (the images it may run: the operator's directory and signed uploads), `auth` (who
a caller is: mutual-TLS certificate or bearer token), `sessions` (which client owns which proxy; the enclave limits),
`limits` (the errors a limit raises, each with its reason for the metrics), `proxies` (starting, pre-starting and
reaping `asylo proxy` processes), `metrics` (Prometheus), `service` (the gRPC API of asylo/proto/provision.proto)
and `server` (all of it started and stopped in order). The client side is
`asylo.remote.provision_client.ServerProvision`, which `RemoteProvision.instantiate("host:4321")` returns.
"""

from asylo.provision_server.auth import ANONYMOUS, ClientAuthenticator, ClientId, load_client_tokens
from asylo.provision_server.limits import LimitExceededError, TimeLimitExceededError
from asylo.provision_server.metrics import ProvisionMetrics
from asylo.provision_server.proxies import ProxyLauncher, ProxySettings, RunningProxy, kill_orphans
from asylo.provision_server.server import DEFAULT_PORT, ProvisionServer, ProvisionServerConfig
from asylo.provision_server.service import UploadLimits
from asylo.provision_server.sessions import ServerLimits, SessionTable
from asylo.provision_server.store import ImageStore, StoredImage, check_image_name, load_trusted_signer

__all__ = [
    "ANONYMOUS",
    "DEFAULT_PORT",
    "ClientAuthenticator",
    "ClientId",
    "ImageStore",
    "LimitExceededError",
    "ProvisionMetrics",
    "ProvisionServer",
    "ProvisionServerConfig",
    "ProxyLauncher",
    "ProxySettings",
    "RunningProxy",
    "ServerLimits",
    "SessionTable",
    "StoredImage",
    "TimeLimitExceededError",
    "UploadLimits",
    "check_image_name",
    "kill_orphans",
    "load_client_tokens",
    "load_trusted_signer",
]
