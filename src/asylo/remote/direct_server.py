"""DirectEnclaveProxyServer: the proxy of `asylo.remote.server`, serving its one session over the direct stream.

Everything a proxy decides is the same as over gRPC — the token, the pinned client certificate, the image the hello
asks for, standby and assignment, the idle timeout, what happens when the host goes away — and lives in
`RemoteEnclaveProxyServer`, which this extends; only how frames travel differs. Connections are accepted by a
thread; the session's connection gets one reader thread, which hands each call to its enclave worker, and each worker
writes its own results and exit calls (see `asylo.remote.direct_link`). A refusal is a goodbye frame with the code and
the reason, in place of gRPC's status. The control surface (`start`, `wait_claimed`, `wait_done`, `give_up`, `stop`)
stays on asyncio, as `asylo proxy` drives it; the data path never touches the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable

from asylo.backends.sim import HostedEnclave
from asylo.identity import Platform
from asylo.remote import direct_stream
from asylo.remote.direct_link import TICK_PERIOD, DirectWriter, Keeper
from asylo.remote.link import SessionLink
from asylo.remote.server import RemoteEnclaveProxyServer, _Activity
from asylo.session import HelloReceived, Role, Session, SessionEnded
from asylo.session.handshake import EnclaveHandshake
from asylo.status import AsyloError, EnclaveUnavailable, InvalidArgumentError, Status, StatusCode

_log = logging.getLogger(__name__)

#: How long a standby proxy waits for a host's hello before refusing it (it refuses either way).
_REFUSAL_READ_TIMEOUT = 5.0
#: After a refusal or the last goodbye: how long the peer has to read it and close, before the socket is closed
#: (closing with its hello unread would reset the connection, and the reset can overtake the goodbye).
_LINGER = 2.0
#: The largest record read while draining; anything larger ends the drain (nothing read then is used).
_DRAIN_RECORD_LIMIT = 2 << 20
#: The TLS handshake of an accepted connection, at most.
_TLS_HANDSHAKE_TIMEOUT = 10.0


class _Refused(Exception):  # noqa: N818 - internal control flow
    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = Status(code, message)


class DirectEnclaveProxyServer(RemoteEnclaveProxyServer):
    """A `RemoteEnclaveProxyServer` whose session travels over the direct stream (`listen`: "host:port" or
    "vsock:CID:PORT")."""

    transport = "direct"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._listener: direct_stream.RecordListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claim_lock = threading.Lock()
        self._session_stream: direct_stream.RecordStream | None = None
        self._session_over = threading.Event()
        self._accepting: threading.Thread | None = None

    async def start(self, listen: str = "127.0.0.1:0") -> int:
        self._loop = asyncio.get_running_loop()
        self._listener = direct_stream.listen(listen, self._credentials)
        self.port = self._listener.port
        self._accepting = threading.Thread(target=self._accept_loop, name="asylo-proxy-accept", daemon=True)
        self._accepting.start()
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._accepting is not None:
            await asyncio.to_thread(self._accepting.join, grace + 1)

    def give_up(self, status: Status) -> None:
        """As `RemoteEnclaveProxyServer.give_up`, from any thread: a session in progress is cut, and `wait_done`
        returns once it has finalized and unloaded the enclave."""
        if self.end_status is None:
            self.end_status = status
        stream = self._session_stream
        if stream is not None and not self._session_over.is_set():
            stream.stop_reading()  # the session's reader ends; the goodbye saying why still goes out
        else:
            self._signal(self._done.set)

    def _signal(self, action: Callable[[], None]) -> None:
        """Run `action` (setting an asyncio event) on the control loop, from whichever thread we are on."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(action)

    # -- connections ---------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while (stream := self._listener.accept(_TLS_HANDSHAKE_TIMEOUT)) is not None:
            # Each connection on its own thread: a client slow to say hello must not hold up the right one.
            threading.Thread(target=self._serve_connection, args=(stream,), name="asylo-proxy-connection",
                             daemon=True).start()

    def _serve_connection(self, stream: direct_stream.RecordStream) -> None:
        try:
            session, hello, platform = self._admit(stream)
        except _Refused as refusal:
            self._refuse(stream, refusal.status)
            return
        except Exception:
            _log.exception("refusing a connection from %s", stream.peer)
            self._refuse(stream, Status(StatusCode.INTERNAL, "the proxy failed"))
            return
        try:
            self._serve_direct_session(stream, session, hello, platform)
        finally:
            self._session_over.set()
            self._signal(self._done.set)

    def _admit(self, stream: direct_stream.RecordStream) -> tuple[Session, HelloReceived, Platform | None]:
        """The session a connection may have, or _Refused with the code and reason it is told."""
        if self._image is None:
            _read_first(stream, min(self._hello_timeout, _REFUSAL_READ_TIMEOUT), 1 << 20)
            raise _Refused(StatusCode.UNAVAILABLE, "this standby proxy is not assigned yet")
        platform = self._platform()
        session = Session(Role.ENCLAVE, self._limits,
                          handshake=None if platform is None else EnclaveHandshake(platform.evidence))
        first = _read_first(stream, self._hello_timeout, session.largest_frame)
        if first is None:
            raise _Refused(StatusCode.DEADLINE_EXCEEDED, "no hello within the timeout")
        events = session.receive(first)
        hello = events[0] if events and isinstance(events[0], HelloReceived) else None
        if hello is None:
            raise _Refused(StatusCode.INVALID_ARGUMENT, "the first frame must be a valid hello")
        assert self._token is not None  # set with the image
        if self._client_cert_sha256 is not None and not self._is_pinned_stream(stream):
            _log.warning("refused a session from %s: not the client certificate this proxy serves", stream.peer)
            raise _Refused(StatusCode.PERMISSION_DENIED, "this proxy serves another client: your TLS client "
                                                         "certificate is not the one that provisioned it")
        if not hmac.compare_digest(hello.token, self._token):
            _log.warning("refused a session with a wrong token from %s", stream.peer)
            raise _Refused(StatusCode.PERMISSION_DENIED, "wrong session token")
        with self._claim_lock:
            if self._claimed:
                raise _Refused(StatusCode.FAILED_PRECONDITION, "this proxy already served its session")
            self._claimed = True
            self._session_stream = stream
        if self.end_status is not None:  # given up meanwhile (a signal, the parent gone)
            self._session_over.set()
            raise _Refused(self.end_status.code, self.end_status.message or "the proxy is stopping")
        self._signal(self.claimed.set)
        return session, hello, platform

    def _is_pinned_stream(self, stream: direct_stream.RecordStream) -> bool:
        certificate = stream.peer_certificate()
        return certificate is not None and hmac.compare_digest(hashlib.sha256(certificate).digest(),
                                                               self._client_cert_sha256 or b"")

    def _refuse(self, stream: direct_stream.RecordStream, status: Status) -> None:
        """Tell the peer why (a goodbye before any welcome is never sealed) and let it go."""
        try:
            stream.write(Session(Role.ENCLAVE, self._limits).send_goodbye(status))
            stream.end_writing()
            _drain(stream, _LINGER)
        except EnclaveUnavailable:
            pass
        finally:
            stream.close()

    # -- the session ---------------------------------------------------------------------------------------------

    def _serve_direct_session(self, stream: direct_stream.RecordStream, session: Session, hello: HelloReceived,
                       platform: Platform | None) -> None:
        activity = _Activity()
        # The hello settled the session's limits: the writer's budget is the negotiated one.
        writer = DirectWriter(stream, session.seal, body_budget=session.limits.max_reassembly_bytes,
                              on_broken=lambda reason: stream.shutdown(), seal_into=session.seal_into)
        link = SessionLink(session, writer)
        try:
            hosted = self._load(hello, link, activity, platform)
            try:
                welcome = session.send_welcome(self.image.measurement, self.image.signer, self.image.manifest.name)
            except AsyloError as exc:  # the platform could not make evidence
                hosted.shutdown_abandoned(f"the enclave could not be attested: {exc.message}")
                self.end_status = exc.status
                raise _Refused(exc.code, f"the enclave could not be attested: {exc.message}") from None
        except _Refused as refusal:
            self._refuse(stream, refusal.status)
            return
        try:
            stream.write(welcome)
        except EnclaveUnavailable as exc:
            hosted.shutdown_abandoned(f"the host went away: {exc.message}")
            self.end_status = self.end_status or Status(StatusCode.UNAVAILABLE, exc.message)
            stream.close()
            return
        _log.info("serving enclave %r (measurement %s) to %s over the direct stream", hosted.name,
                  self.image.measurement.hex(), stream.peer)
        activity.touch()  # idle time counts from the welcome, not from the hello
        keeper = Keeper("asylo-proxy-keeper", writer, lambda now: self._tick(link, activity, now), None,
                        min(TICK_PERIOD, session.limits.ping_interval / 4))
        keeper.start()
        reason = self._read_session(stream, session, link, hosted, activity, writer)
        keeper.stop()
        self.end_status = self.end_status or reason
        _log.info("session over: %s", reason)
        # Host calls waiting in the enclave fail now; finalize runs if the host never destroyed the enclave.
        hosted.shutdown_abandoned(f"the host session ended: {reason.message or reason.code.name}")
        # The host learns why: an orderly end, or the signal or timeout that ended the proxy's wait.
        link.goodbye(self.end_status if self.end_status is not None and not self.end_status.ok
                     and self.end_status is not reason else Status())
        _drain(stream, _LINGER)
        stream.close()

    def _load(self, hello: HelloReceived, link: SessionLink, activity: _Activity,
              platform: Platform | None) -> HostedEnclave:
        config = hello.load_config
        requested = config.measurement
        if requested and requested != self.image.measurement:
            self.end_status = Status(StatusCode.FAILED_PRECONDITION, "wrong image requested")
            raise _Refused(StatusCode.FAILED_PRECONDITION,
                           f"this proxy hosts the enclave with measurement {self.image.measurement.hex()}, "
                           f"not {requested.hex()}")

        def on_abort(reason: str) -> None:
            link.goodbye(Status(StatusCode.UNAVAILABLE, reason))

        try:
            return HostedEnclave(config.name or self.image.manifest.name, self.image, activity.counting(link.send),
                                 debug=config.debug, max_threads=self._max_threads, on_abort=on_abort,
                                 platform=platform)
        except AsyloError as exc:
            self.end_status = exc.status
            raise _Refused(exc.code, exc.message) from None

    def _read_session(self, stream: direct_stream.RecordStream, session: Session, link: SessionLink,
                      hosted: HostedEnclave, activity: _Activity, writer: DirectWriter) -> Status:
        """Read and dispatch until the session ends; why it ended."""
        writer.set_reading(True)
        try:
            return self._read_until_end(stream, session, link, hosted, activity)
        finally:
            writer.set_reading(False)

    def _read_until_end(self, stream: direct_stream.RecordStream, session: Session, link: SessionLink,
                        hosted: HostedEnclave, activity: _Activity) -> Status:
        while True:
            try:
                record = stream.read(session.largest_frame)
            except InvalidArgumentError as exc:
                ended = link.fail(f"a malformed record: {exc.message}", StatusCode.RESOURCE_EXHAUSTED)
                record = None
                events: list[object] = list(ended)
            except EnclaveUnavailable as exc:
                return Status(StatusCode.UNAVAILABLE, f"the host went away: {exc.message}")
            else:
                if record is None:
                    return Status(StatusCode.UNAVAILABLE, "the host ended the stream")
                traffic = session.traffic_received
                events = list(link.receive_frame(record if session.encrypted else bytes(record)))
                if session.traffic_received != traffic:  # pings and pongs alone are no activity
                    activity.touch()
            end = self._dispatch(events, hosted, activity)
            if end is not None:
                if end.goodbye is not None:
                    link.send_raw([end.goodbye])
                return end.status

    def _tick(self, link: SessionLink, activity: _Activity, now: float) -> bool:
        """The keeper's tick: pings, the host's ping deadline, the idle timeout. False once the session is over."""
        ended: SessionEnded | None = link.tick(now)
        if ended is not None:
            _log.warning("ending the session: %s", ended.status.message)
            if ended.goodbye is not None:
                link.send_raw([ended.goodbye])
            self.give_up(ended.status)
            return False
        timeout = self._idle_timeout
        if timeout is not None and activity.idle_for() >= timeout:
            _log.warning("ending the session: idle for %g s", timeout)
            self.give_up(Status(StatusCode.DEADLINE_EXCEEDED, f"idle for {timeout:g} s"))
            return False
        return True


def _read_first(stream: direct_stream.RecordStream, timeout: float, limit: int) -> bytes | None:
    """The first record, within `timeout` (None: none came, the stream ended, or it was malformed)."""
    timer = threading.Timer(timeout, stream.shutdown)
    timer.daemon = True
    timer.start()
    try:
        record = stream.read(limit)
        return None if record is None else bytes(record)
    except (EnclaveUnavailable, InvalidArgumentError):
        return None
    finally:
        timer.cancel()


def _drain(stream: direct_stream.RecordStream, seconds: float) -> None:
    """Read and drop until the peer closes (or `seconds` pass): what we wrote last reaches it before the close."""
    deadline = time.monotonic() + seconds
    timer = threading.Timer(seconds, stream.shutdown)
    timer.daemon = True
    timer.start()
    try:
        while time.monotonic() < deadline and stream.read(_DRAIN_RECORD_LIMIT) is not None:
            pass
    except (EnclaveUnavailable, InvalidArgumentError):
        pass
    finally:
        timer.cancel()
