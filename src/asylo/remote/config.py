"""RemoteProxyClientConfig and RemoteLoadConfig: load an enclave through a proxy, as in Asylo's remote backend."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from asylo.backends.base import LoadedEnclave
from asylo.image import load_image
from asylo.primitives.matching import Handler
from asylo.proto import enclave_pb2
from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.credentials import ClientCredentials
from asylo.remote.provision import RemoteProvision
from asylo.session import SessionLimits


@dataclass(frozen=True)
class RemoteProxyClientConfig:
    """How the host reaches a proxy: who provisions it, with which credentials, with which limits."""

    provision: RemoteProvision
    #: Overrides the credentials the provisioning hands out (None: use those).
    credentials: ClientCredentials | None = None
    #: Seconds to wait for the proxy's welcome.
    connect_timeout: float = 10.0
    limits: SessionLimits = field(default_factory=SessionLimits)

    @classmethod
    def defaults_with_provision(cls, provision: RemoteProvision | None = None) -> RemoteProxyClientConfig:
        """Asylo's RemoteProxyClientConfig::DefaultsWithProvision: default settings, the given provisioning
        (`RemoteProvision.instantiate()`, local proxies, if none)."""
        return cls(provision or RemoteProvision.instantiate())


@dataclass(frozen=True)
class RemoteLoadConfig:
    """Load the enclave in a proxy: `image` is the image file (on this machine for local provisioning), `debug`
    must be set for a debug enclave, `proxy` says how to get and reach the proxy."""

    image: str | os.PathLike[str]
    proxy: RemoteProxyClientConfig = field(default_factory=RemoteProxyClientConfig.defaults_with_provision)
    debug: bool = False

    def open(self, name: str, exit_handler: Handler) -> LoadedEnclave:
        # Verified here too: the host knows which measurement to demand of the proxy's welcome.
        image = load_image(self.image)
        proxy = self.proxy.provision.provision(Path(self.image))
        load_config = enclave_pb2.EnclaveLoadConfig(name=name, debug=self.debug, measurement=image.measurement)
        try:
            return RemoteEnclaveProxyClient.connect(
                name, proxy, load_config, exit_handler, credentials=self.proxy.credentials or proxy.credentials,
                expected_measurement=image.measurement, limits=self.proxy.limits,
                connect_timeout=self.proxy.connect_timeout)
        except BaseException:
            proxy.release()
            raise
