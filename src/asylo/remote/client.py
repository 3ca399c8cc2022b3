"""RemoteEnclaveProxyClient: the host's end of a remote enclave — a `LoadedEnclave` over one gRPC stream.

The host opens the stream (it never listens, so it works from behind NAT), says hello with the proxy's one-time
token and the load config, and checks the welcome against the image it asked for. From then on entry calls go out
and exit calls come back on the same stream, matched to host threads exactly as with the sim backend. The stream's
I/O runs on an asyncio loop in a thread of its own; callers block on their own threads.

When the stream breaks — the proxy died, the network went, keepalive pings went unanswered — or the session's own
pings find the proxy frozen or frames lost, every waiting and every later call fails with EnclaveUnavailable
(within 5 s: see `SessionLimits.ping_deadline`); nothing hangs and nothing aborts the host process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future

import grpc

from asylo.primitives.matching import Call, Handler, HostThreads, Result
from asylo.proto import enclave_pb2
from asylo.remote import batching
from asylo.remote.client_base import ProxiedEnclave
from asylo.remote.credentials import ClientCredentials
from asylo.remote.link import Outbox, SessionLink, keep_alive, write_fairly
from asylo.remote.provision import ProvisionedProxy
from asylo.remote.service import CONNECT_METHOD, channel_options, error_from_rpc
from asylo.remote.welcome import check_welcome
from asylo.session import Role, Session, SessionEnded, SessionLimits
from asylo.session.handshake import HostHandshake
from asylo.status import (
    AsyloError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    Status,
    StatusCode,
)

_log = logging.getLogger(__name__)

#: After saying goodbye, how long to wait for the proxy to end the stream before cutting it.
_CLOSE_GRACE = 5.0
#: After the session's pings found the proxy unresponsive: how long the goodbye has to go out before the stream is
#: cut (which the proxy, if it is alive at all, sees as the end of the session).
_UNRESPONSIVE_GRACE = 1.0


class RemoteEnclaveProxyClient(ProxiedEnclave):
    """One remote enclave, reached through its proxy. Create with `connect`."""

    def __init__(self, name: str, proxy: ProvisionedProxy, exit_handler: Handler, *, limits: SessionLimits,
                 handshake: HostHandshake | None = None) -> None:
        super().__init__(name, proxy)
        self._limits = limits
        self._loop = asyncio.new_event_loop()
        self._io_thread = threading.Thread(target=self._loop.run_forever, name=f"asylo-remote-{name}", daemon=True)
        self._io_thread.start()
        self._outbox = Outbox(self._loop)
        self._link = SessionLink(Session(Role.HOST, limits, handshake=handshake), self._outbox)
        self._host = HostThreads(self._link.send, exit_handler)
        self._channel: grpc.aio.Channel | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stream_ended = asyncio.Event()
        self._close_lock = threading.Lock()
        self._closed = False

    @classmethod
    def connect(cls, name: str, proxy: ProvisionedProxy, load_config: enclave_pb2.EnclaveLoadConfig,
                exit_handler: Handler, *, credentials: ClientCredentials, expected_measurement: bytes | None,
                limits: SessionLimits | None = None, connect_timeout: float = 10.0,
                handshake: HostHandshake | None = None) -> RemoteEnclaveProxyClient:
        """Open the stream to `proxy`, say hello, check the welcome — and with `handshake`, the enclave's evidence,
        before anything else is sent. Raises AsyloError (AttestationError when the evidence does not satisfy the
        handshake's verifier) on any failure, having released everything, the proxy included."""
        client = cls(name, proxy, exit_handler, limits=limits or SessionLimits(), handshake=handshake)
        try:
            client._run(client._open(proxy.token, load_config, credentials, expected_measurement, connect_timeout),
                        connect_timeout + 5)
        except BaseException as exc:
            client.close(f"connecting to the enclave's proxy failed: {exc}")
            raise
        return client

    def _run(self, coroutine: object, timeout: float) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)  # type: ignore[arg-type]
        try:
            future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceededError(f"no answer from the enclave's proxy at {self._target} within "
                                        f"{timeout:.0f} s") from None

    async def _open(self, token: bytes, load_config: enclave_pb2.EnclaveLoadConfig, credentials: ClientCredentials,
                    expected_measurement: bytes | None, timeout: float) -> None:
        self._channel = credentials.open_channel(self._target, channel_options(self._limits))
        self._call = self._channel.stream_stream(CONNECT_METHOD)()
        context = f"connecting to the enclave's proxy at {self._target}"
        try:
            await self._call.write(batching.pack([self._link.session.send_hello(token, load_config)]))
            first = await asyncio.wait_for(self._call.read(), timeout)
        except TimeoutError:
            raise DeadlineExceededError(f"{context}: no welcome within {timeout:.0f} s") from None
        except grpc.aio.AioRpcError as exc:
            raise error_from_rpc(exc.code(), exc.details(), context) from None
        if first is grpc.aio.EOF:
            raise error_from_rpc(await self._call.code(), await self._call.details(), context)
        try:
            events = self._link.session.receive(batching.single_frame(first, self._link.session.largest_frame))
        except InvalidArgumentError as exc:
            raise InternalError(f"{context}: {exc.message}") from None
        welcomed = check_welcome(events, self._link.session, expected_measurement, context)
        self._welcomed(welcomed)
        self._tasks = [asyncio.create_task(self._read_loop(), name="asylo-remote-read"),
                       asyncio.create_task(self._write_loop(), name="asylo-remote-write"),
                       asyncio.create_task(keep_alive(self._link, self._unresponsive), name="asylo-remote-ping")]

    def _unresponsive(self, ended: SessionEnded) -> None:
        """The proxy left a ping unanswered: every caller is told now; the stream is cut after the goodbye."""
        self._host.close(f"enclave {self._name!r} is unavailable: {ended.status}")
        if self._call is not None:
            asyncio.get_running_loop().call_later(_UNRESPONSIVE_GRACE, self._call.cancel)

    async def _read_loop(self) -> None:
        assert self._call is not None
        reason = "the enclave's proxy ended the session"
        try:
            while True:
                data = await self._call.read()
                if data is grpc.aio.EOF:
                    break
                ended = self._dispatch(self._link.receive(data))
                if ended is not None:
                    reason = ended
                    break
        except grpc.aio.AioRpcError as exc:
            reason = f"lost the connection to the enclave's proxy: {exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            reason = "the connection was closed"
        finally:
            self._stream_ended.set()
            self._host.close(f"enclave {self._name!r} is unavailable: {reason}")

    def _dispatch(self, events: Sequence[object]) -> str | None:
        """Hand received calls and results to their host threads; return why the session ended, if it did."""
        for event in events:
            if isinstance(event, Call | Result):
                try:
                    self._host.deliver(event)
                except AsyloError as exc:
                    status = Status(StatusCode.INTERNAL, f"protocol violation: {exc.message}")
                    self._link.goodbye(status)
                    return status.message
            elif isinstance(event, SessionEnded):
                if event.goodbye is not None:
                    self._link.send_raw([event.goodbye])
                if event.by_peer and event.status.ok:
                    return "the enclave's proxy said goodbye"
                return str(event.status)
        return None

    async def _write_loop(self) -> None:
        assert self._call is not None
        try:
            limits = self._link.session.limits  # as negotiated in the handshake
            await write_fairly(self._outbox, self._call.write, limits.max_frame_size, limits.max_reassembly_bytes,
                               self._link.session.seal)
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            _log.debug("writing to the enclave's proxy failed: %s", exc)
            self._host.close(f"enclave {self._name!r} is unavailable: writing to its proxy failed")
        except Exception as exc:
            # A frame that could not be made (a large body's fragments are built here: MemoryError) or a bug. Frames
            # may be lost, so the session cannot go on: every caller is told now, and the proxy by the cancel.
            _log.error("writing to the enclave's proxy failed: %r", exc)
            self._host.close(f"enclave {self._name!r} is unavailable: writing to its proxy failed: {exc!r}")
            self._call.cancel()

    # -- LoadedEnclave -------------------------------------------------------------------------------------------

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        if threading.current_thread() is self._io_thread:
            # Code run by the I/O loop itself (a finalizer the garbage collector ran there): waiting here would stop
            # the loop that has to deliver the answer.
            raise FailedPreconditionError("an entry call from the connection's own I/O thread (a finalizer run by "
                                          "the garbage collector?) would wait forever; call from another thread")
        return self._host.enter(selector, extents)

    def close(self, reason: str) -> None:
        """Say goodbye, wait (briefly) for the proxy to end the stream, then release everything. Idempotent."""
        if threading.current_thread() is self._io_thread:
            # The I/O loop cannot wait for itself: close from a thread of its own.
            threading.Thread(target=self.close, args=(reason,), name=f"asylo-remote-close-{self._name}").start()
            return
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._host.close(reason)
        self._link.goodbye(Status())
        try:
            self._run(self._shutdown(), _CLOSE_GRACE + 5)
        except AsyloError as exc:
            _log.debug("closing the connection to %s: %s", self._target, exc)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._io_thread.join(10)
            if not self._io_thread.is_alive():
                self._loop.close()
            self.proxy.release()

    async def _shutdown(self) -> None:
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stream_ended.wait(), _CLOSE_GRACE)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()
        # Whatever gRPC still has running on this loop ends here, not as "Task was destroyed" noise at exit.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
