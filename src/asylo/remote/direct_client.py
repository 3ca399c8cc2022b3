"""DirectEnclaveProxyClient: the host's end of a remote enclave over the direct stream (TCP, TLS, vsock).

The same session as over gRPC — hello, welcome with evidence, sealed calls and results matched to host threads — on
a plain socket, with no event loop: a calling thread writes its own call, and the waiting threads take turns reading
(see `asylo.remote.direct_link`), so a lone caller reads its own answer. A keeper thread pings the proxy, answers
its pings between calls, and ends the session when the proxy stops answering.

When the stream breaks — the proxy died, the network went, a ping went unanswered, a record failed to authenticate —
every waiting and every later call fails with EnclaveUnavailable; nothing hangs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from asylo.primitives.matching import Call, Handler, HostThreads, Result
from asylo.proto import enclave_pb2
from asylo.remote import direct_stream
from asylo.remote.client_base import ProxiedEnclave
from asylo.remote.credentials import ClientCredentials
from asylo.remote.direct_link import TICK_PERIOD, DirectWriter, Keeper, ReadTurn
from asylo.remote.link import SessionLink
from asylo.remote.provision import ProvisionedProxy
from asylo.remote.welcome import check_welcome
from asylo.session import Role, Session, SessionEnded, SessionLimits
from asylo.session.handshake import HostHandshake
from asylo.status import (
    AsyloError,
    DeadlineExceededError,
    EnclaveUnavailable,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    Status,
    StatusCode,
)

_log = logging.getLogger(__name__)

#: After saying goodbye, how long to wait for the proxy to end the stream before cutting it.
_CLOSE_GRACE = 5.0


class DirectEnclaveProxyClient(ProxiedEnclave):
    """One remote enclave, reached through its proxy over the direct stream. Create with `connect`."""

    def __init__(self, name: str, proxy: ProvisionedProxy, stream: direct_stream.RecordStream, session: Session,
                 exit_handler: Handler) -> None:
        super().__init__(name, proxy)
        self._stream = stream
        self._session = session
        self._writer = DirectWriter(stream, session.seal, body_budget=session.limits.max_reassembly_bytes,
                                    on_broken=self._broken, seal_into=session.seal_into)
        self._link = SessionLink(session, self._writer)
        self._turn = ReadTurn(self._read_one)
        self._host = HostThreads(self._link.send, exit_handler, next_message=self._turn.next_message)
        self._ended = threading.Event()
        self._keeper = Keeper(f"asylo-direct-{name}", self._writer, self._tick,
                              lambda: self._turn.read_available(stream.readable_now),
                              min(TICK_PERIOD, session.limits.ping_interval / 4))
        self._close_lock = threading.Lock()
        self._closed = False

    @classmethod
    def connect(cls, name: str, proxy: ProvisionedProxy, load_config: enclave_pb2.EnclaveLoadConfig,
                exit_handler: Handler, *, credentials: ClientCredentials, expected_measurement: bytes | None,
                limits: SessionLimits | None = None, connect_timeout: float = 10.0,
                handshake: HostHandshake | None = None) -> DirectEnclaveProxyClient:
        """Connect to `proxy`, say hello, check the welcome — and with `handshake`, the enclave's evidence — before
        anything else is sent. Raises AsyloError on any failure, having released everything, the proxy included."""
        context = f"connecting to the enclave's proxy at {proxy.target}"
        session = Session(Role.HOST, limits or SessionLimits(), handshake=handshake)
        deadline = time.monotonic() + connect_timeout
        try:
            stream = direct_stream.connect(proxy.target, credentials, connect_timeout)
        except AsyloError as exc:
            proxy.release()
            raise type(exc)(f"{context}: {exc.message}") from None
        except BaseException:
            proxy.release()
            raise
        client = cls(name, proxy, stream, session, exit_handler)
        try:
            client._open(session.send_hello(proxy.token, load_config), expected_measurement, deadline, context)
        except BaseException as exc:
            client.close(f"connecting to the enclave's proxy failed: {exc}")
            raise
        return client

    def _open(self, hello: bytes, expected_measurement: bytes | None, deadline: float, context: str) -> None:
        self._stream.write(hello)
        welcome = self._read_welcome(deadline, context)
        try:
            events = self._session.receive(bytes(welcome))
        except InvalidArgumentError as exc:
            raise InternalError(f"{context}: {exc.message}") from None
        welcomed = check_welcome(events, self._session, expected_measurement, context)
        self._welcomed(welcomed)
        self._keeper.start()

    def _read_welcome(self, deadline: float, context: str) -> memoryview:
        """The proxy's first record, within the connect timeout (a watchdog cuts the stream at the deadline)."""
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._stream.shutdown)
        timer.daemon = True
        timer.start()
        try:
            record = self._stream.read(self._session.largest_frame)
        except EnclaveUnavailable:
            if time.monotonic() >= deadline:
                raise DeadlineExceededError(f"{context}: no welcome within the connect timeout") from None
            raise EnclaveUnavailable(f"{context}: the proxy closed the connection before welcoming us") from None
        except InvalidArgumentError as exc:
            raise InternalError(f"{context}: {exc.message}") from None
        finally:
            timer.cancel()
        if record is None:
            raise EnclaveUnavailable(f"{context}: the proxy closed the connection before welcoming us")
        return record

    # -- the data path -------------------------------------------------------------------------------------------

    def _read_one(self) -> None:
        """Read one record and hand its messages to their threads (the reading thread's part; see ReadTurn)."""
        self._writer.set_reading(True)
        try:
            try:
                record = self._stream.read(self._session.largest_frame)
            except InvalidArgumentError as exc:
                self._dispatch(self._link.fail(f"a malformed record: {exc.message}",
                                               StatusCode.RESOURCE_EXHAUSTED))
                return
            except EnclaveUnavailable as exc:
                self._end(f"lost the connection to the enclave's proxy: {exc.message}")
                return
            if record is None:
                self._end("the enclave's proxy ended the session")
                return
            # Unsealed frames are kept (a body's fragments) after the buffer is reused: a copy then, not for records.
            self._dispatch(self._link.receive_frame(record if self._session.encrypted else bytes(record)))
        finally:
            self._writer.set_reading(False)

    def _dispatch(self, events: Sequence[object]) -> None:
        for event in events:
            if isinstance(event, Call | Result):
                try:
                    self._host.deliver(event)
                except AsyloError as exc:
                    status = Status(StatusCode.INTERNAL, f"protocol violation: {exc.message}")
                    self._link.goodbye(status)
                    # Not cut: the goodbye saying why is queued (this thread reads), and the keeper writes it.
                    self._end(status.message, cut=False)
                    return
            elif isinstance(event, SessionEnded):
                if event.goodbye is not None:
                    self._link.send_raw([event.goodbye])
                self._end("the enclave's proxy said goodbye" if event.by_peer and event.status.ok
                          else str(event.status), cut=event.goodbye is None)
                return

    def _tick(self, now: float) -> bool:
        ended = self._link.tick(now)
        if ended is None:
            return not self._ended.is_set()
        _log.warning("ending the session: %s", ended.status.message)
        # Callers hear this reason, not what the goodbye's aftermath (the proxy closing) would make the reader say.
        self._end(str(ended.status), cut=False)
        if ended.goodbye is not None:
            self._link.send_raw([ended.goodbye])
        self._stream.shutdown()
        return False

    def _broken(self, reason: str) -> None:
        """A write failed: frames are lost, so the session is over."""
        self._end(f"writing to the enclave's proxy failed: {reason}")

    def _end(self, reason: str, *, cut: bool = True) -> None:
        """The session is over: every caller is told, and (`cut`) the stream is cut, which wakes a blocked reader."""
        if not self._ended.is_set():
            self._ended.set()
            message = f"enclave {self._name!r} is unavailable: {reason}"
            self._turn.end(message)
            self._host.close(message)
        if cut:
            self._stream.shutdown()

    # -- LoadedEnclave -------------------------------------------------------------------------------------------

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        if threading.current_thread() is self._keeper_thread():
            raise FailedPreconditionError("an entry call from the connection's own I/O thread (its keeper; a "
                                          "finalizer run by the garbage collector?) would wait forever; call from "
                                          "another thread")
        return self._host.enter(selector, extents)

    def _keeper_thread(self) -> threading.Thread:
        return self._keeper.thread

    def close(self, reason: str) -> None:
        """Say goodbye, wait (briefly) for the proxy to end the stream, then release everything. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._host.close(reason)
        self._link.goodbye(Status())
        if not self._ended.is_set():
            # Read (through the turn: a thread may still be reading) until the proxy ends the stream, which it does
            # once it has finalized the enclave; a timer cuts the wait short.
            timer = threading.Timer(_CLOSE_GRACE, self._stream.shutdown)
            timer.daemon = True
            timer.start()
            try:
                self._turn.next_message(queue.SimpleQueue())
            finally:
                timer.cancel()
        self._end(reason)
        self._keeper.stop()
        self._stream.close()
        self.proxy.release()
