"""ProvisionServer: the provision server's parts put together, started and stopped in order.

Start-up: make the state directory private and lock it, kill proxies a previous run left behind (it may have been
SIGKILLed), open the image store, start the warm pool, then serve gRPC (ProvisionService, standard health checking,
server reflection) and, if asked, Prometheus metrics. Stop: report NOT_SERVING, stop taking RPCs, cut short the
launches in progress, wait for the work earlier RPCs began, release every session (each proxy finalizes its
enclave; all at once, so stopping takes seconds however many there are), empty the warm pool, close the metrics
endpoint, unlock the state directory.

The lock (an exclusive `flock` on `state_dir/lock`, held while the server runs) is what keeps a second server
from starting on the same state directory: it would take the first one's proxy records for orphans and kill them,
and the two stores would write into one image directory. The kernel drops the lock when the process dies however
it dies, so a crashed server never leaves a stale lock behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from asylo._files import private_directory
from asylo.identity import PlatformProvider
from asylo.identity.machine import PlatformOptions, open_platform
from asylo.provision_server.auth import ClientAuthenticator, ClientId
from asylo.provision_server.metrics import ProvisionMetrics
from asylo.provision_server.proxies import ProxyLauncher, ProxySettings, kill_orphans
from asylo.provision_server.service import MAX_UPLOAD_CHUNK, ProvisionServicer, UploadLimits
from asylo.provision_server.sessions import ServerLimits, SessionTable
from asylo.provision_server.store import DEFAULT_MAX_IMAGES, DEFAULT_MAX_STORE_SIZE, ImageStore
from asylo.remote.credentials import ServerCredentials, is_loopback_address
from asylo.remote.provision import ProxyTls
from asylo.remote.provision_api import PROVISION_SERVICE
from asylo.remote.transports import Transport, default_transport
from asylo.status import FailedPreconditionError, InvalidArgumentError

_log = logging.getLogger(__name__)

#: Asylo's provision server port.
DEFAULT_PORT = 4321
#: Seconds between looks for sessions whose proxy exited by itself.
_REAP_INTERVAL = 0.5
#: Hosts that name every interface: fine to listen on, useless to tell a client to connect to.
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - recognised, not bound
_LOCK_FILE = "lock"


@dataclass(frozen=True)
class ProvisionServerConfig:
    """Everything `asylo provision-server` is told. Paths are on the server's machine."""

    state_dir: Path
    trusted_signers: tuple[bytes, ...]
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    images_dir: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Clients must present a certificate from this CA (mutual TLS); it is also their identity.
    tls_client_ca: Path | None = None
    client_tokens: Mapping[bytes, ClientId] = field(default_factory=dict)
    allow_anonymous: bool = False
    limits: ServerLimits = field(default_factory=ServerLimits)
    max_image_size: int = 64 << 20
    #: Bytes all uploaded images (and uploads in progress) may take, and how many uploaded images there may be.
    max_store_size: int = DEFAULT_MAX_STORE_SIZE
    max_images: int = DEFAULT_MAX_IMAGES
    upload_limits: UploadLimits = field(default_factory=UploadLimits)
    idle_timeout: float | None = 600.0
    hello_timeout: float = 30.0
    warm: int = 0
    metrics_listen: str | None = None
    #: The platform the proxies attest with (`auto`: what the machine offers, resolved once at start).
    platform: PlatformOptions = field(default_factory=PlatformOptions)
    #: How the proxies take their sessions ("direct" or "grpc"); each provision answer says which.
    transport: Transport = field(default_factory=default_transport)
    #: The simulated platform's state directory: the same as platform=PlatformOptions(sim_state=...), kept for
    #: configurations written before `platform` existed.
    platform_state: Path | None = None
    #: The host clients should connect to for proxies; None: the listen host, or (wildcard) the host they used.
    advertise_host: str | None = None

    def __post_init__(self) -> None:
        if self.platform_state is not None:
            if self.platform.sim_state not in (None, self.platform_state):
                raise InvalidArgumentError("give the sim platform's state directory once: platform_state or "
                                           "platform=PlatformOptions(sim_state=...)")
            object.__setattr__(self, "platform", dataclasses.replace(self.platform, sim_state=self.platform_state))
        if not self.trusted_signers:
            raise InvalidArgumentError("give at least one trusted signer: the server runs only images they signed")
        ServerCredentials.check_files(self.tls_cert, self.tls_key, self.tls_client_ca)
        if self.allow_anonymous and not is_loopback_address(self.listen):
            raise InvalidArgumentError("anonymous clients are allowed only on a loopback address")
        if self.warm < 0 or self.max_image_size < 1:
            raise InvalidArgumentError("the warm pool size must be >= 0 and the image size limit >= 1")
        if self.advertise_host is not None and self.advertise_host.strip() in WILDCARD_HOSTS:
            raise InvalidArgumentError(f"advertise_host {self.advertise_host!r} is a wildcard, which no client can "
                                       f"connect to; give a host name or address clients can reach")

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def proxy_tls(self) -> ProxyTls | None:
        if self.tls_cert is None or self.tls_key is None:
            return None
        return ProxyTls(self.tls_cert, self.tls_key, client_ca_file=self.tls_client_ca)

    def answer_host(self) -> str:
        """The proxy host to put in answers; "" tells the client to use the host it reached this server at."""
        if self.advertise_host is not None:
            return self.advertise_host
        return "" if self.listen_host in WILDCARD_HOSTS else self.listen_host.strip("[]")


def lock_state_directory(state_dir: Path) -> int:
    """Take the state directory's lock (see the module's doc) and return its file descriptor, which holds it until
    closed. FailedPreconditionError naming the holder's pid if another provision server holds it."""
    path = state_dir / _LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise FailedPreconditionError(f"{path}: cannot open the state directory's lock: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise FailedPreconditionError(f"{state_dir}: state directory in use by another provision server "
                                          f"(pid {holder})") from None
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)  # for the message a second server gives
    except BaseException:
        os.close(fd)
        raise
    return fd


class ProvisionServer:
    """One provision server. `await start()`, then `await stop()`; `port`/`metrics_port` once started."""

    def __init__(self, config: ProvisionServerConfig) -> None:
        self.config = config
        self.metrics = ProvisionMetrics()
        self.port = 0
        self.metrics_port: int | None = None
        #: The platform the proxies attest with (set by `start`): hosts trust a sim platform by its fingerprint, a
        #: hardware one by its vendor's roots and the reference values of its launch.
        self.platform: PlatformProvider | None = None
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._launcher: ProxyLauncher | None = None
        self._servicer: ProvisionServicer | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self.sessions = SessionTable(config.limits)

    @property
    def proxy_dir(self) -> Path:
        return self.config.state_dir / "proxies"

    async def start(self) -> int:
        config = self.config
        credentials = ServerCredentials.from_files(config.tls_cert, config.tls_key, config.tls_client_ca)
        credentials.check_listen_address(config.listen)
        authenticator = ClientAuthenticator(tokens=dict(config.client_tokens), mutual_tls=credentials.mutual,
                                            allow_anonymous=config.allow_anonymous)
        private_directory(config.state_dir, "the provision server", parents=True)
        # Before anything else touches the directory: the orphans below would be another server's live proxies.
        self._lock_fd = lock_state_directory(config.state_dir)
        try:
            return await self._start(credentials, authenticator)
        except BaseException:
            self._unlock()
            raise

    async def _start(self, credentials: ServerCredentials, authenticator: ClientAuthenticator) -> int:
        config = self.config
        killed = kill_orphans(private_directory(self.proxy_dir, "the provision server"))
        if killed:
            _log.warning("killed %d proxies left behind by an earlier run", killed)
        store = ImageStore(config.state_dir, trusted_signers=config.trusted_signers, operator_dir=config.images_dir,
                           max_image_size=config.max_image_size, max_store_size=config.max_store_size,
                           max_images=config.max_images)
        every_interface = "0.0.0.0"  # noqa: S104 - what a listen address of ":4321" asks for
        # The platform the proxies attest with; opened now (a sim key made if new) so that a machine without the
        # platform asked for fails at start, and the start-up line can name it.
        self.platform = open_platform(config.platform)
        settings = ProxySettings(listen_host=config.listen_host or every_interface, tls=config.proxy_tls,
                                 hello_timeout=config.hello_timeout, idle_timeout=config.idle_timeout,
                                 platform=dataclasses.replace(config.platform, kind=self.platform.kind),
                                 transport=config.transport)
        self._launcher = ProxyLauncher(settings, warm=config.warm, pid_dir=self.proxy_dir)
        self._servicer = ProvisionServicer(authenticator=authenticator, store=store, sessions=self.sessions,
                                           launcher=self._launcher, metrics=self.metrics,
                                           advertise_host=config.answer_host(), upload_limits=config.upload_limits)
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_UPLOAD_CHUNK + (64 << 10))])
        server.add_generic_rpc_handlers((self._servicer.handler(),))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection((PROVISION_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            self.port = credentials.add_port(server, config.listen)
            self._launcher.start()
            await server.start()
            self._server = server
            for service in ("", PROVISION_SERVICE):
                await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
            if config.metrics_listen is not None:
                self.metrics_port = self.metrics.serve(config.metrics_listen)
        except BaseException:
            await server.stop(None)
            await self._servicer.close()
            self.metrics.close()
            raise
        self._reaper = asyncio.create_task(self._servicer.reap_ended(_REAP_INTERVAL), name="asylo-provision-reaper")
        _log.info("provision server listening on port %d (%d trusted signers, %d images)", self.port,
                  len(config.trusted_signers), len(store.images()))
        return self.port

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving and end every session: `grace` seconds for RPCs in progress, then a few more for every
        proxy at once to finalize its enclave. Idempotent."""
        if self._health is not None:
            with contextlib.suppress(Exception):
                await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)  # cancels the handlers still running after `grace`
            self._server = None
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        if self._servicer is not None:
            await self._servicer.close()
        self.metrics.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the last descriptor drops the flock
            self._lock_fd = None
