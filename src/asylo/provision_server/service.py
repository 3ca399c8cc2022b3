"""ProvisionService: the provision server's gRPC API (asylo/proto/provision.proto) over grpc.aio.

Every RPC authenticates its caller first. Provisioning reserves a slot under the limits, starts a proxy for the
image with a fresh one-time token, and answers with the proxy's port and token, which only this answer ever carries.
Failures are AsyloErrors turned into the matching gRPC status, and every refusal is counted by reason in the metrics.

Nothing that blocks runs on the event loop, which serves every client: starting a proxy (a process start, up to
seconds) runs on an executor of its own, bounded so that a burst of requests queues rather than starting dozens of
Python processes at once on a small machine; releasing proxies (up to a grace period each) on another, so that
ending sessions never waits behind starting them; and the image store's file work (writing chunks of up to 4 MiB,
verifying a whole image, removing a partial file) on a third. Work that outlives its RPC — the release of a proxy
whose client gave up while it started — is tracked, so that `close` waits for it rather than leaving it to run
after the executors are gone.

Uploads are bounded in time as well as in size: a client may have only a few in progress, each must keep sending
(an idle limit between messages) and finish within a total limit, so that slow uploaders cannot hold the server's
upload slots.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from asylo.proto import provision_pb2
from asylo.provision_server.auth import ClientAuthenticator, ClientId
from asylo.provision_server.limits import LimitExceededError, TimeLimitExceededError, reject_reason
from asylo.provision_server.metrics import ProvisionMetrics
from asylo.provision_server.proxies import ProxyLauncher, RunningProxy, release_all
from asylo.provision_server.sessions import ProvisionedSession, SessionTable
from asylo.provision_server.store import ImageStore, ImageUpload, StoredImage
from asylo.remote.provision_api import PROVISION_SERVICE
from asylo.remote.service import grpc_status_code
from asylo.status import AsyloError, FailedPreconditionError, InvalidArgumentError, StatusCode

_log = logging.getLogger(__name__)

#: Upload chunks bigger than this are refused; clients send 1 MiB.
MAX_UPLOAD_CHUNK = 4 << 20
#: Proxies started at once: each start is a Python process importing gRPC, mostly CPU; more at once than a machine
#: has cores only makes every one of them slower, and the requests past this wait their turn in order.
MAX_PARALLEL_LAUNCHES = 8
#: Proxies released at once by ordinary session ends (a release mostly waits for the proxy to finalize and exit).
_MAX_PARALLEL_RELEASES = 16
#: Threads for the image store's file work (uploads' chunks, verification at commit, removal of partial files).
_STORE_THREADS = 4

#: The reject reason of a refusal that is not a limit (limits carry their own; see asylo.provision_server.limits).
_REASONS = {
    StatusCode.UNAUTHENTICATED: "unauthenticated",
    StatusCode.PERMISSION_DENIED: "permission_denied",
    StatusCode.NOT_FOUND: "not_found",
    StatusCode.INVALID_ARGUMENT: "invalid_argument",
    StatusCode.DATA_LOSS: "data_loss",
    StatusCode.ALREADY_EXISTS: "already_exists",
}

_Response = TypeVar("_Response")


@dataclass(frozen=True)
class UploadLimits:
    """How much of the server's upload capacity one client may hold, and for how long."""

    #: Uploads one client may have in progress at once (RESOURCE_EXHAUSTED past it).
    per_client: int = 2
    #: Seconds an upload may go without a message (the header included) before it is abandoned.
    idle_timeout: float = 30.0
    #: Seconds an upload may take in all, however steadily it trickles in.
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.per_client < 1:
            raise InvalidArgumentError("the per-client upload limit must be at least 1")
        if not (self.idle_timeout > 0 and self.timeout > 0):
            raise InvalidArgumentError("upload time limits must be positive")


def image_info(image: StoredImage) -> provision_pb2.ImageInfo:
    return provision_pb2.ImageInfo(name=image.name, measurement=image.measurement, signer=image.signer,
                                   size=image.size)


class ProvisionServicer:
    """The RPC handlers. `advertise_host` is the host put in answers ("" = the one the client reached us at).

    It owns the executors it runs blocking work on; `close` ends every session and shuts them down.
    """

    def __init__(self, *, authenticator: ClientAuthenticator, store: ImageStore, sessions: SessionTable,
                 launcher: ProxyLauncher, metrics: ProvisionMetrics, advertise_host: str,
                 upload_limits: UploadLimits | None = None) -> None:
        self._authenticator = authenticator
        self._store = store
        self._sessions = sessions
        self._launcher = launcher
        self._transport = launcher.settings.transport
        self._metrics = metrics
        self._advertise_host = advertise_host
        self._upload_limits = upload_limits or UploadLimits()
        self._launches = concurrent.futures.ThreadPoolExecutor(MAX_PARALLEL_LAUNCHES, "asylo-provision-launch")
        self._releases = concurrent.futures.ThreadPoolExecutor(_MAX_PARALLEL_RELEASES, "asylo-provision-release")
        self._store_io = concurrent.futures.ThreadPoolExecutor(_STORE_THREADS, "asylo-provision-store")
        #: Work that outlives the RPC that began it (see `_track`).
        self._background: set[asyncio.Task[None]] = set()
        #: Uploads in progress by client key; only touched on the event loop.
        self._uploading: collections.Counter[str] = collections.Counter()
        self._closed = False

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server."""
        pb = provision_pb2

        def unary(method: Callable[..., Awaitable[Any]], request: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request.FromString, response_serializer=_serialize)

        return grpc.method_handlers_generic_handler(PROVISION_SERVICE, {
            "Provision": unary(self.provision, pb.ProvisionRequest),
            "Release": unary(self.release, pb.ReleaseRequest),
            "ListSessions": unary(self.list_sessions, pb.ListSessionsRequest),
            "ListImages": unary(self.list_images, pb.ListImagesRequest),
            "UploadImage": grpc.stream_unary_rpc_method_handler(
                self.upload_image, request_deserializer=pb.UploadImageChunk.FromString,
                response_serializer=_serialize),
        })

    async def _guard(self, context: Any, work: Callable[[ClientId], Awaitable[_Response]]) -> _Response:
        """Authenticate, run `work`, and turn an AsyloError into the RPC's status (counting refusals)."""
        try:
            client = self._authenticator.authenticate(context)
            return await work(client)
        except AsyloError as exc:
            await self._refuse(context, exc)

    async def _refuse(self, context: Any, exc: AsyloError) -> NoReturn:
        reason = reject_reason(exc) or _REASONS.get(exc.code)
        if reason is not None:
            self._metrics.reject(reason)
        _log.info("refused %s: %s", context.peer(), exc)
        await context.abort(grpc_status_code(exc.code), exc.message)
        raise AssertionError("context.abort returned")  # it raises; this keeps type checkers honest

    # -- RPCs ----------------------------------------------------------------------------------------------------

    async def provision(self, request: provision_pb2.ProvisionRequest, context: Any
                        ) -> provision_pb2.ProvisionResponse:
        async def work(client: ClientId) -> provision_pb2.ProvisionResponse:
            which = request.WhichOneof("image")
            if which == "image_name":
                image = self._store.find(name=request.image_name)
            elif which == "measurement":
                image = self._store.find(measurement=request.measurement)
            else:
                raise InvalidArgumentError("name the image: image_name or measurement")
            if request.transport and request.transport != self._transport:
                raise FailedPreconditionError(f"this provision server's proxies serve the {self._transport} "
                                              f"transport, not {request.transport!r}")
            session_id = self._sessions.reserve(client)
            token = secrets.token_bytes(32)
            # The measurement the store verified goes with the path: the proxy refuses any other file found there.
            job = self._launches.submit(self._launcher.launch, image.path, token, measurement=image.measurement,
                                        client_cert_sha256=client.certificate_sha256)
            launch = asyncio.wrap_future(job)
            try:
                proxy = await asyncio.shield(launch)
            except asyncio.CancelledError:
                # The client gave up (deadline, cancel) while its proxy was queued or starting. Queued: it never
                # starts. Starting: nobody will ever connect to it, so it is let go as soon as it is up rather than
                # left to its hello timeout — and its slot stays taken until then (see sessions).
                if job.cancel():
                    self._sessions.unreserve(client)
                else:
                    self._track(self._release_unclaimed(client, launch))
                raise
            except BaseException as exc:
                self._sessions.unreserve(client)
                if isinstance(exc, AsyloError):
                    self._metrics.failures.inc()
                    _log.warning("provisioning %s for %s failed: %s", image.name, client, exc)
                raise
            self._sessions.fill(ProvisionedSession(session_id, client, image, proxy))
            self._metrics.provisions.inc()
            self._metrics.active_enclaves.set(len(self._sessions))
            _log.info("session %s: %s for %s, proxy pid %d port %d", session_id, image.name, client, proxy.pid,
                      proxy.port)
            return provision_pb2.ProvisionResponse(session_id=session_id, proxy_host=self._advertise_host,
                                                   proxy_port=proxy.port, token=token, image=image_info(image),
                                                   transport=self._transport)

        return await self._guard(context, work)

    async def release(self, request: provision_pb2.ReleaseRequest, context: Any) -> provision_pb2.ReleaseResponse:
        async def work(client: ClientId) -> provision_pb2.ReleaseResponse:
            session = self._sessions.take(request.session_id, client)
            await self.end_sessions([session])
            return provision_pb2.ReleaseResponse()

        return await self._guard(context, work)

    async def list_sessions(self, request: provision_pb2.ListSessionsRequest, context: Any
                            ) -> provision_pb2.ListSessionsResponse:
        async def work(client: ClientId) -> provision_pb2.ListSessionsResponse:
            return provision_pb2.ListSessionsResponse(sessions=[
                provision_pb2.SessionInfo(session_id=s.session_id, image=image_info(s.image),
                                          created_unix_ms=int(s.created * 1000))
                for s in self._sessions.owned_by(client)])

        return await self._guard(context, work)

    async def list_images(self, request: provision_pb2.ListImagesRequest, context: Any
                          ) -> provision_pb2.ListImagesResponse:
        async def work(client: ClientId) -> provision_pb2.ListImagesResponse:
            return provision_pb2.ListImagesResponse(images=[image_info(i) for i in self._store.images()])

        return await self._guard(context, work)

    async def upload_image(self, requests: AsyncIterator[provision_pb2.UploadImageChunk], context: Any
                           ) -> provision_pb2.ImageInfo:
        async def work(client: ClientId) -> provision_pb2.ImageInfo:
            limit = self._upload_limits.per_client
            if self._uploading[client.key] >= limit:
                raise LimitExceededError(f"client {client} already has {limit} uploads in progress, the per-client "
                                         f"limit; wait for one to finish", "client_uploads")
            self._uploading[client.key] += 1
            try:
                image = await self._receive(aiter(requests))
            finally:
                self._uploading[client.key] -= 1
                if self._uploading[client.key] <= 0:
                    del self._uploading[client.key]
            self._metrics.uploads.inc()
            _log.info("%s uploaded image %s (measurement %s)", client, image.name, image.measurement.hex())
            return image_info(image)

        return await self._guard(context, work)

    async def _receive(self, chunks: AsyncIterator[provision_pb2.UploadImageChunk]) -> StoredImage:
        """Receive one upload into the store: the header, the chunks, the commit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._upload_limits.timeout
        first = await self._next_chunk(chunks, deadline)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgumentError("an upload starts with its header (name, size, sha256)")
        header = first.header
        upload: ImageUpload = await self._in_store(self._store.begin_upload, header.name, header.size,
                                                   header.sha256)
        try:
            while (chunk := await self._next_chunk(chunks, deadline)) is not None:
                if chunk.WhichOneof("part") != "data":
                    raise InvalidArgumentError("only the first message of an upload is a header")
                if len(chunk.data) > MAX_UPLOAD_CHUNK:
                    raise InvalidArgumentError(f"upload chunks are at most {MAX_UPLOAD_CHUNK} bytes")
                await self._in_store(upload.write, chunk.data)
            image: StoredImage = await self._in_store(upload.commit)
        except BaseException:
            # Queued, not awaited: abort takes the upload's lock, which a write or a commit still running on the
            # store's thread may hold, and the event loop must not wait for that (nor can a cancelled RPC).
            self._store_io.submit(upload.abort)
            raise
        return image

    async def _next_chunk(self, chunks: AsyncIterator[provision_pb2.UploadImageChunk], deadline: float
                          ) -> provision_pb2.UploadImageChunk | None:
        """The upload's next message (None at its end), within the idle limit and the upload's total deadline."""
        loop = asyncio.get_running_loop()
        limits = self._upload_limits
        left = deadline - loop.time()
        try:
            async with asyncio.timeout(max(0.0, min(limits.idle_timeout, left))):
                return await anext(chunks, None)
        except TimeoutError:
            if left <= limits.idle_timeout:
                raise TimeLimitExceededError(f"the upload took longer than the limit of {limits.timeout:g} s",
                                             "upload_timeout") from None
            raise TimeLimitExceededError(f"the upload sent nothing for {limits.idle_timeout:g} s, the limit between "
                                         f"messages; it was abandoned", "upload_timeout") from None

    async def _in_store(self, work: Callable[..., _Response], *args: Any) -> _Response:
        return await asyncio.get_running_loop().run_in_executor(self._store_io, work, *args)

    # -- session ends --------------------------------------------------------------------------------------------

    async def end_sessions(self, sessions: list[ProvisionedSession]) -> None:
        """Release the sessions' proxies (each finalizes its enclave and exits) and update the gauge."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._releases, s.proxy.release) for s in sessions))
        self._ended(sessions)

    def _ended(self, sessions: list[ProvisionedSession]) -> None:
        for session in sessions:
            _log.info("session %s ended (proxy exit code %s)", session.session_id, session.proxy.returncode)
        self._metrics.active_enclaves.set(len(self._sessions))

    async def _release_unclaimed(self, client: ClientId, launch: asyncio.Future[RunningProxy]) -> None:
        """Let go of the proxy a client gave up on, once it is up; only then give its slot back."""
        try:
            try:
                proxy = await launch
            except Exception as exc:  # it never started: nothing to let go
                _log.info("a proxy nobody waited for did not start: %s", exc)
                return
            await asyncio.get_running_loop().run_in_executor(self._releases, proxy.release)
        finally:
            self._sessions.unreserve(client)

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` beyond the RPC that started it, and keep it where `close` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self, grace: float = 8.0) -> None:
        """End everything, once the gRPC server no longer runs handlers: cut short the launches in progress and
        empty the warm pool, let the work begun by earlier RPCs finish, release every session's proxy (all at
        once: about `grace` seconds in all), and shut the executors down. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(self._releases, self._launcher.close, grace)
        sessions = self._sessions.take_all()
        releasing = loop.run_in_executor(self._releases, release_all, [s.proxy for s in sessions], grace)
        await asyncio.gather(closing, releasing, return_exceptions=True)
        # Handlers the gRPC server cancelled may still be unwinding and leave work behind (a proxy to let go, or,
        # for one whose proxy came up as it was cancelled, a session): wait until none is left, then end those too.
        await asyncio.sleep(0)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        late = self._sessions.take_all()
        if late:
            await loop.run_in_executor(self._releases, release_all, [s.proxy for s in late], grace)
        self._ended(sessions + late)
        for executor in (self._launches, self._releases, self._store_io):
            await loop.run_in_executor(None, executor.shutdown)

    async def reap_ended(self, interval: float) -> None:
        """Forever: free the slots of sessions whose proxy exited on its own (host gone, idle, crashed)."""
        while True:
            await asyncio.sleep(interval)
            ended = self._sessions.take_ended()
            if ended:
                await self.end_sessions(ended)
            self._metrics.warm_proxies.set(self._launcher.warm_ready)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()

