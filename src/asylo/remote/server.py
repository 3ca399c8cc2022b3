"""RemoteEnclaveProxyServer: the proxy that hosts exactly one enclave for exactly one host session.

It serves one gRPC method, a bidirectional stream. The first stream that says hello with the right one-time token
gets the enclave: the proxy checks the requested image against the one it hosts, loads it, welcomes the host, and
from then on runs entry calls on enclave worker threads and sends their exit calls back up the stream. A stream with
a wrong token is refused (PERMISSION_DENIED) and the proxy keeps waiting for the right one; a second session is
refused. When the session ends — goodbye, a broken stream, unanswered keepalives or session pings, frames lost on the
way, the host process gone — the proxy
finalizes the enclave if the host did not, unloads it, and reports that it is done (`wait_done`).

A proxy can also start without its enclave (`standby`): it listens, refusing every stream, until `assign` gives it
the image and the token. A provision server keeps such proxies running, so that a request does not wait for a
Python process to start and import gRPC.

With an idle timeout, a session in which the host sent nothing and no entry call ran for that long is ended
(DEADLINE_EXCEEDED): a provision server gets back the enclaves that hosts abandoned without closing them.

A provision server whose client authenticated with a certificate (mutual TLS) pins the proxy to it
(`client_cert_sha256`): a stream from any other certificate is refused (PERMISSION_DENIED) whatever token its
hello carries, so a token that leaked is of no use to another client of the same CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import grpc

from asylo.backends.sim import HostedEnclave
from asylo.identity import EnclaveIdentity, Platform, PlatformProvider
from asylo.image import VerifiedImage
from asylo.primitives.matching import DEFAULT_MAX_THREADS, Call, Message, Result, Send, ThreadGone
from asylo.remote import batching
from asylo.remote.credentials import ServerCredentials
from asylo.remote.link import Outbox, SessionLink, keep_alive, write_fairly
from asylo.remote.provision_api import CERTIFICATE_SHA256_SIZE, certificate_sha256, peer_certificate
from asylo.remote.service import CONNECT, SERVICE, grpc_status_code, server_options
from asylo.session import HelloReceived, Role, Session, SessionEnded, SessionLimits
from asylo.session.handshake import EnclaveHandshake
from asylo.status import AsyloError, FailedPreconditionError, InvalidArgumentError, Status, StatusCode

_log = logging.getLogger(__name__)

#: How long a standby proxy waits for a host's hello before refusing it (it refuses either way).
_REFUSAL_READ_TIMEOUT = 5.0


class _Activity:
    """When the host last did something, and how many of its entry calls are running in the enclave.

    The proxy is the transport, so it sees both halves of every entry call: the Call arriving and its Result
    leaving. Counting them here needs nothing from the enclave side, and nested calls (an entry call made from an
    exit handler) count like any other. A long computation is not idle; neither is an exit call the host is
    still working on, since the entry call that made it is still running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._since = time.monotonic()

    def touch(self) -> None:
        self._since = time.monotonic()

    def call_started(self) -> None:
        with self._lock:
            self._running += 1
            self._since = time.monotonic()

    def call_finished(self) -> None:
        with self._lock:
            self._running = max(0, self._running - 1)
            self._since = time.monotonic()

    def counting(self, send: Send) -> Send:
        """`send`, with each Result it sends counted as the end of an entry call: the enclave side sends Results
        only to answer the host's calls."""

        def send_counted(message: Message) -> None:
            try:
                send(message)
            finally:
                if isinstance(message, Result):
                    self.call_finished()

        return send_counted

    def idle_for(self) -> float:
        """Seconds since the last sign of life; 0 while an entry call runs."""
        with self._lock:
            return 0.0 if self._running else time.monotonic() - self._since


class RemoteEnclaveProxyServer:
    """Hosts one enclave image for the one host that presents `token`.

    Without either (`standby`), it waits to be assigned both. `idle_timeout`: end the session once, for that many
    seconds, no frame came from the host and no entry call was running (None: never). `client_cert_sha256`: serve
    only a host whose TLS client certificate has this fingerprint (see `asylo.remote.provision_api`).
    """

    def __init__(self, image: VerifiedImage | None, token: bytes | None, *,
                 credentials: ServerCredentials | None = None, limits: SessionLimits | None = None,
                 hello_timeout: float = 30.0, max_threads: int = DEFAULT_MAX_THREADS,
                 idle_timeout: float | None = None, client_cert_sha256: bytes | None = None,
                 platform_key: PlatformProvider | None = None) -> None:
        if (image is None) != (token is None):
            raise ValueError("give both the image and the token, or neither (a standby proxy)")
        if token is not None:
            _check_token(token)
        self._client_cert_sha256: bytes | None = None
        if client_cert_sha256 is not None:
            self._pin_client(client_cert_sha256, credentials)
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None for no idle timeout)")
        self._image: VerifiedImage | None = image
        self._token = token
        self._idle_timeout = idle_timeout
        self._credentials = credentials or ServerCredentials.insecure_loopback()
        self._limits = limits or SessionLimits()
        self._hello_timeout = hello_timeout
        self._max_threads = max_threads
        # The platform the enclave runs on: it attests the enclave to the host (the handshake's evidence) and
        # derives its sealing keys. None: no attestation, so only unattested hosts can use this proxy.
        self._platform_key = platform_key
        self._server: grpc.aio.Server | None = None
        self._claimed = False
        self._session_task: asyncio.Task[Any] | None = None
        self.claimed = asyncio.Event()
        self._done = asyncio.Event()
        self.end_status: Status | None = None
        self.port = 0

    @classmethod
    def standby(cls, *, credentials: ServerCredentials | None = None, limits: SessionLimits | None = None,
                hello_timeout: float = 30.0, max_threads: int = DEFAULT_MAX_THREADS,
                idle_timeout: float | None = None, platform_key: PlatformProvider | None = None
                ) -> RemoteEnclaveProxyServer:
        """A proxy without its enclave yet: it can `start` listening, refuses every stream (UNAVAILABLE) until
        `assign` gives it the image and the token, and then serves exactly as one made with them."""
        return cls(None, None, credentials=credentials, limits=limits, hello_timeout=hello_timeout,
                   max_threads=max_threads, idle_timeout=idle_timeout, platform_key=platform_key)

    @property
    def image(self) -> VerifiedImage:
        """The image this proxy hosts (FailedPreconditionError on a standby proxy not yet assigned)."""
        if self._image is None:
            raise FailedPreconditionError("this standby proxy has no enclave assigned yet")
        return self._image

    def assign(self, image: VerifiedImage, token: bytes, *, client_cert_sha256: bytes | None = None) -> None:
        """Give a standby proxy its image, its session's token and (optionally) the one client certificate it
        serves; streams are accepted from now on. Once only."""
        if self._image is not None:
            raise FailedPreconditionError("this proxy already has its enclave")
        _check_token(token)
        if client_cert_sha256 is not None:
            self._pin_client(client_cert_sha256, self._credentials)
        self._token = token
        self._image = image

    def _pin_client(self, fingerprint: bytes, credentials: ServerCredentials | None) -> None:
        if len(fingerprint) != CERTIFICATE_SHA256_SIZE:
            raise ValueError(f"a client certificate fingerprint is {CERTIFICATE_SHA256_SIZE} bytes (SHA-256)")
        if credentials is None or not credentials.mutual:
            # Without mutual TLS no client presents a certificate: pinned, the proxy could serve nobody.
            raise ValueError("serving one client certificate needs mutual TLS (a client CA)")
        self._client_cert_sha256 = fingerprint

    async def start(self, listen: str = "127.0.0.1:0") -> int:
        """Listen on `listen` (host:port; port 0 picks one); return the port."""
        server = grpc.aio.server(options=server_options(self._limits))
        handler = grpc.stream_stream_rpc_method_handler(self._connect)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {CONNECT: handler}),))
        self.port = self._credentials.add_port(server, listen)
        await server.start()
        self._server = server
        return self.port

    async def wait_done(self, timeout: float | None = None) -> bool:
        """Wait until the session is over (or, with `timeout`, until then at most); True if it is over."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_claimed(self, timeout: float) -> bool:
        """Wait until a host has claimed the session (True), the proxy gave up, or `timeout` passed (False)."""
        claimed = asyncio.ensure_future(self.claimed.wait())
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait((claimed, done), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            claimed.cancel()
            done.cancel()
        return self.claimed.is_set()

    def give_up(self, status: Status) -> None:
        """Stop waiting: no host came (hello timeout), the parent went away, or a signal came. A session in
        progress is ended, and `wait_done` returns once it has finalized and unloaded the enclave."""
        if self.end_status is None:
            self.end_status = status
        if self._session_task is not None and not self._session_task.done():
            self._session_task.cancel()
        else:
            self._done.set()

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)

    async def _connect(self, request_iterator: AsyncIterator[bytes], context: Any) -> None:
        del request_iterator  # the stream is read with context.read(), concurrently with context.write()
        if self._image is None:
            # Refused at once rather than held: the host's connect timeout should not run down against a proxy
            # that may never be assigned, and the token to check against does not exist yet. Once the hello is in,
            # though: refused before the host's first write has completed, the stream can end with an error of the
            # host's own gRPC library ("Internal error from Core") in place of this status.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(context.read(), min(self._hello_timeout, _REFUSAL_READ_TIMEOUT))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this standby proxy is not assigned yet")
        platform = self._platform()
        session = Session(Role.ENCLAVE, self._limits,
                          handshake=None if platform is None else EnclaveHandshake(platform.evidence))
        try:
            first = await asyncio.wait_for(context.read(), self._hello_timeout)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no hello within the timeout")
        if first is grpc.aio.EOF:
            return
        try:
            events = session.receive(batching.single_frame(first, session.limits.max_frame_size))
        except InvalidArgumentError:
            events = []
        hello = events[0] if events and isinstance(events[0], HelloReceived) else None
        if hello is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first frame must be a valid hello")
            return
        assert self._token is not None  # set with the image
        # Checked once the hello is in, like the token: refused before the host's first write has completed, the
        # stream can end with an error of the host's own gRPC library in place of this status.
        if self._client_cert_sha256 is not None and not self._is_pinned_client(context):
            _log.warning("refused a session from %s: not the client certificate this proxy serves", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                "this proxy serves another client: your TLS client certificate is not the one that "
                                "provisioned it")
        if not hmac.compare_digest(hello.token, self._token):
            _log.warning("refused a session with a wrong token from %s", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "wrong session token")
        if self._claimed:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this proxy already served its session")
        self._claimed = True
        self._session_task = asyncio.current_task()
        self.claimed.set()
        try:
            await self._serve_session(session, hello, context, platform)
        finally:
            self._done.set()

    def _is_pinned_client(self, context: Any) -> bool:
        certificate = peer_certificate(context.auth_context())
        return certificate is not None and hmac.compare_digest(certificate_sha256(certificate),
                                                               self._client_cert_sha256 or b"")

    async def _serve_session(self, session: Session, hello: HelloReceived, context: Any,
                             platform: Platform | None) -> None:
        loop = asyncio.get_running_loop()
        outbox = Outbox(loop)
        link = SessionLink(session, outbox)
        activity = _Activity()
        hosted = await self._load_enclave(hello, link, activity.counting(link.send), context, platform)
        name = hosted.name
        try:
            # Off the event loop: hardware evidence can take seconds (a TDX quote; DCAP collateral from a PCCS).
            # Nothing else touches the session until the welcome is written.
            welcome = await asyncio.to_thread(session.send_welcome, self.image.measurement, self.image.signer,
                                              self.image.manifest.name)
        except AsyloError as exc:  # the platform could not make evidence
            hosted.shutdown_abandoned(f"the enclave could not be attested: {exc.message}")
            self.end_status = exc.status
            await context.abort(grpc_status_code(exc.code), f"the enclave could not be attested: {exc.message}")
        await context.write(batching.pack([welcome]))
        _log.info("serving enclave %r (measurement %s) to %s", name, self.image.measurement.hex(), context.peer())
        writer = asyncio.create_task(self._write_loop(outbox, context, session))
        activity.touch()  # idle time counts from the welcome, not from the hello
        idle_watch = (asyncio.create_task(self._watch_idle(activity, self._idle_timeout))
                      if self._idle_timeout is not None else None)
        pinger = asyncio.create_task(keep_alive(link, lambda ended: self.give_up(ended.status)))
        reason = Status(StatusCode.UNAVAILABLE, "the host ended the stream")
        try:
            while True:
                data = await context.read()
                if data is grpc.aio.EOF:
                    break
                traffic = session.traffic_received
                events = link.receive(data)
                if session.traffic_received != traffic:  # pings and pongs alone are no activity
                    activity.touch()
                ended = self._dispatch(events, hosted, activity)
                if ended is not None:
                    if ended.goodbye is not None:
                        link.send_raw([ended.goodbye])
                    reason = ended.status
                    break
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            reason = Status(StatusCode.UNAVAILABLE, f"the host went away: {type(exc).__name__}")
        finally:
            pinger.cancel()
            if idle_watch is not None:
                idle_watch.cancel()
            self.end_status = self.end_status or reason
            _log.info("session over: %s", reason)
            # Host calls waiting in the enclave fail now; finalize runs if the host never destroyed the enclave.
            await _uncancellable(loop.run_in_executor(
                None, hosted.shutdown_abandoned, f"the host session ended: {reason.message or reason.code.name}"))
            # The host learns why: an orderly end, or the signal or timeout that ended the proxy's wait.
            link.goodbye(self.end_status if self.end_status is not None and not self.end_status.ok
                         and self.end_status is not reason else Status())
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer, 2.0)
            writer.cancel()

    def _platform(self) -> Platform | None:
        """The enclave's platform for this session (the image is known by now: assigned or given at start)."""
        if self._platform_key is None:
            return None
        return self._platform_key.platform(EnclaveIdentity.from_image(self.image, self._platform_key.kind))

    async def _load_enclave(self, hello: HelloReceived, link: SessionLink, send: Send, context: Any,
                            platform: Platform | None) -> HostedEnclave:
        """Load the enclave the hello asks for, or end the stream with why not."""
        config = hello.load_config
        requested = config.measurement
        if requested and requested != self.image.measurement:
            self.end_status = Status(StatusCode.FAILED_PRECONDITION, "wrong image requested")
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"this proxy hosts the enclave with measurement {self.image.measurement.hex()}, "
                                f"not {requested.hex()}")
        name = config.name or self.image.manifest.name

        def on_abort(reason: str) -> None:
            link.goodbye(Status(StatusCode.UNAVAILABLE, reason))

        try:
            return await asyncio.get_running_loop().run_in_executor(None, lambda: HostedEnclave(
                name, self.image, send, debug=config.debug, max_threads=self._max_threads, on_abort=on_abort,
                platform=platform))
        except AsyloError as exc:
            self.end_status = exc.status
            await context.abort(grpc_status_code(exc.code), exc.message)
            raise  # abort raises; this only tells the type checker

    async def _watch_idle(self, activity: _Activity, timeout: float) -> None:
        """End the session (as `give_up` does) once it has been idle for `timeout` seconds."""
        wait = timeout
        while True:
            await asyncio.sleep(wait)
            idle = activity.idle_for()
            if idle >= timeout:
                _log.warning("ending the session: idle for %g s", timeout)
                self.give_up(Status(StatusCode.DEADLINE_EXCEEDED, f"idle for {timeout:g} s"))
                return
            # Busy (a call is running) or active lately: look again when the quiet time could first reach the
            # timeout. A call that ends starts the quiet time afresh, so a busy proxy is looked at every `timeout`.
            wait = timeout - idle

    @staticmethod
    def _dispatch(events: Sequence[object], hosted: HostedEnclave, activity: _Activity) -> SessionEnded | None:
        for event in events:
            if isinstance(event, Call | Result | ThreadGone):
                message: Message = event
                if isinstance(event, Call):
                    activity.call_started()
                try:
                    hosted.deliver(message)
                except AsyloError as exc:  # the session core let through what the enclave cannot route
                    status = Status(StatusCode.INTERNAL, f"protocol violation: {exc.message}")
                    return SessionEnded(status, by_peer=False, goodbye=None)
            elif isinstance(event, SessionEnded):
                return event
        return None

    async def _write_loop(self, outbox: Outbox, context: Any, session: Session) -> None:
        limits = session.limits  # as negotiated in the handshake
        try:
            await write_fairly(outbox, context.write, limits.max_frame_size, limits.max_reassembly_bytes,
                               session.seal)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as exc:
            # The stream is gone, most likely, and the read side ends the session; if it is not, this does.
            _log.debug("writing to the host failed: %r", exc)
            self.give_up(Status(StatusCode.UNAVAILABLE, f"writing to the host failed: {type(exc).__name__}"))
        except Exception as exc:
            # A frame that could not be made (a large result's fragments are built here: MemoryError) or a bug. The
            # host would wait for it forever: end the session instead.
            _log.error("writing to the host failed: %r; ending the session", exc)
            self.give_up(Status(StatusCode.INTERNAL, f"the proxy could not write to the host: {exc!r}"))


def _check_token(token: bytes) -> None:
    if len(token) < 16:
        raise ValueError("a session token needs at least 16 bytes")


async def _uncancellable(awaitable: Awaitable[None]) -> None:
    """Await to the end even if our task is cancelled again (a second signal): finalizing must not be cut short."""
    future = asyncio.ensure_future(awaitable)
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(future)
    future.result()
