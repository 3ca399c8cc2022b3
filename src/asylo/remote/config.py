"""RemoteProxyClientConfig and RemoteLoadConfig: load an enclave through a proxy, as in Asylo's remote backend.

Loading verifies the enclave before anything is sent to it: the host's hello offers a key share, the proxy's welcome
carries platform evidence for the enclave's key share, and the host checks it against the platforms it trusts and
the identity it expects (by default: exactly the image it asked for). Only then is the session open, and every
frame after it is encrypted end to end between the host and the enclave.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from asylo.backends.base import LoadedEnclave
from asylo.identity import (
    EnclaveIdentity,
    EvidenceVerifier,
    IdentityExpectation,
    PlatformVerifier,
    expectation_for_image,
)
from asylo.identity.verify import HARDWARE_KINDS
from asylo.image import VerifiedImage, load_image
from asylo.primitives.matching import Handler
from asylo.proto import enclave_pb2
from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.credentials import ClientCredentials
from asylo.remote.direct_client import DirectEnclaveProxyClient
from asylo.remote.provision import ProvisionedProxy, RemoteProvision
from asylo.remote.transports import Transport, check_transport
from asylo.session import SessionLimits
from asylo.session.handshake import HostHandshake
from asylo.status import AttestationError, FailedPreconditionError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteProxyClientConfig:
    """How the host reaches a proxy: who provisions it, with which credentials, with which limits, and which
    platforms' evidence it believes."""

    provision: RemoteProvision
    #: Overrides the credentials the provisioning hands out (None: use those).
    credentials: ClientCredentials | None = None
    #: Seconds to wait for the proxy's welcome.
    connect_timeout: float = 10.0
    limits: SessionLimits = field(default_factory=SessionLimits)
    #: Fingerprints of the simulated platforms (`asylo platform show`) whose evidence the host believes, besides
    #: those the provisioning vouches for (local provisioning: this machine's own simulated platform). Hardware
    #: platforms need none: their vendors' roots are pinned, and the expectation gives the launch's reference values.
    trusted_platforms: tuple[str, ...] = ()
    #: Verifiers that add to or replace (by platform kind) the host's own, e.g. a hardware verifier that trusts
    #: another root (`HardwareEvidenceVerifier(SnpQuoteVerifier(pinned_roots=...))`).
    platform_verifiers: tuple[PlatformVerifier, ...] = ()
    #: False only to measure what attestation and record encryption cost: nothing is verified and nothing is
    #: encrypted end to end. Never for real use.
    attestation: bool = True
    #: How the session travels: "direct" (a TCP/TLS/vsock stream, the default) or "grpc" (one gRPC stream, for
    #: networks that pass only HTTP/2). None: what the provisioning serves (local proxies: direct; a provision
    #: server: what its answer says). Named, it is asked of the provisioning, which refuses one it cannot serve.
    transport: Transport | None = None

    def __post_init__(self) -> None:
        if self.transport is not None:
            check_transport(self.transport)

    @classmethod
    def defaults_with_provision(cls, provision: RemoteProvision | None = None) -> RemoteProxyClientConfig:
        """Asylo's RemoteProxyClientConfig::DefaultsWithProvision: default settings, the given provisioning
        (`RemoteProvision.instantiate()`, local proxies, if none)."""
        return cls(provision or RemoteProvision.instantiate())


@dataclass(frozen=True)
class RemoteLoadConfig:
    """Load the enclave in a proxy: `image` is the image file (on this machine for local provisioning), `debug`
    must be set for a debug enclave, `proxy` says how to get and reach the proxy. `expectation` is what the
    enclave's attested identity must satisfy (default: the measurement of `image`, debug only if `debug`)."""

    image: str | os.PathLike[str]
    proxy: RemoteProxyClientConfig = field(default_factory=RemoteProxyClientConfig.defaults_with_provision)
    debug: bool = False
    expectation: IdentityExpectation | None = None

    def open(self, name: str, exit_handler: Handler) -> LoadedEnclave:
        # Verified here too: the host knows which measurement to demand of the proxy's welcome.
        image = load_image(self.image)
        transport = self.proxy.transport
        provision = self.proxy.provision
        # Asked for only when named: a RemoteProvision written before transports existed takes no such argument.
        proxy = (provision.provision(Path(self.image)) if transport is None
                 else provision.provision(Path(self.image), transport=transport))
        # The proxy must host exactly this image, unless the host gave an expectation of its own (say, any build
        # of a signer): then the attested identity decides, and the proxy may host another build.
        pin = None if self.expectation is not None and self.proxy.attestation else image.measurement
        load_config = enclave_pb2.EnclaveLoadConfig(name=name, debug=self.debug, measurement=pin or b"")
        credentials = self.proxy.credentials or proxy.credentials
        try:
            credentials.check_target(proxy.target)  # plaintext off loopback: refused before anything else
            if transport is not None and proxy.transport != transport:
                raise FailedPreconditionError(f"the provisioned proxy serves the {proxy.transport} transport, not "
                                              f"the {transport} asked for")
            client = DirectEnclaveProxyClient if proxy.transport == "direct" else RemoteEnclaveProxyClient
            return client.connect(
                name, proxy, load_config, exit_handler, credentials=credentials,
                expected_measurement=pin, limits=self.proxy.limits,
                connect_timeout=self.proxy.connect_timeout, handshake=self._handshake(image, proxy))
        except BaseException:
            proxy.release()
            raise

    def _handshake(self, image: VerifiedImage, proxy: ProvisionedProxy) -> HostHandshake | None:
        if not self.proxy.attestation:
            _log.warning("attestation is off: the enclave is not verified and the session is not encrypted end "
                         "to end (RemoteProxyClientConfig(attestation=False) is for measurements only)")
            return None
        trusted = (*proxy.trusted_platforms, *self.proxy.trusted_platforms)
        expectation = self.expectation or expectation_for_image(image, allow_debug=self.debug)
        on_hardware = any(expectation.constrains_launch(kind) for kind in HARDWARE_KINDS)
        if not trusted and not on_hardware:
            raise AttestationError("no trusted platform for the enclave's evidence: trust the proxy machine's "
                                   "simulated platform with RemoteProxyClientConfig(trusted_platforms=(FINGERPRINT,)) "
                                   "or --trust-platform FINGERPRINT (`asylo platform show` on that machine prints "
                                   "it), or, for a hardware platform, expect its launch's reference values "
                                   "(expectation=AllOf(SnpLaunch(...), MeasurementIs(...)))")
        verifier = EvidenceVerifier(trusted, platform_verifiers=self.proxy.platform_verifiers)

        def verify(evidence: bytes, report_data: bytes) -> EnclaveIdentity:
            return verifier.verify(evidence, report_data=report_data, expectation=expectation)

        return HostHandshake(verify)
