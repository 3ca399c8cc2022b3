"""ProvisionService: the provision server's gRPC API (asylo/proto/provision.proto) over grpc.aio.

Every RPC authenticates its caller first. Provisioning reserves a slot under the limits, starts a proxy for the
image (on an executor thread: starting a process blocks) with a fresh one-time token, and answers with the proxy's
port and token, which only this answer ever carries. Failures are AsyloErrors turned into the matching gRPC status,
and every refusal is counted by reason in the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from asylo.proto import provision_pb2
from asylo.provision_server.auth import ClientAuthenticator, ClientId
from asylo.provision_server.metrics import ProvisionMetrics
from asylo.provision_server.proxies import ProxyLauncher, RunningProxy
from asylo.provision_server.sessions import LimitExceededError, ProvisionedSession, SessionTable
from asylo.provision_server.store import ImageStore, StoredImage
from asylo.remote.service import grpc_status_code
from asylo.status import AsyloError, InvalidArgumentError, StatusCode

_log = logging.getLogger(__name__)

SERVICE = "asylo.provision.ProvisionService"
#: Upload chunks bigger than this are refused; clients send 1 MiB.
MAX_UPLOAD_CHUNK = 4 << 20

_REASONS = {
    StatusCode.UNAUTHENTICATED: "unauthenticated",
    StatusCode.PERMISSION_DENIED: "permission_denied",
    StatusCode.NOT_FOUND: "not_found",
    StatusCode.INVALID_ARGUMENT: "invalid_argument",
    StatusCode.RESOURCE_EXHAUSTED: "image_too_large",
    StatusCode.DATA_LOSS: "data_loss",
    StatusCode.ALREADY_EXISTS: "already_exists",
}

_Response = TypeVar("_Response")


def image_info(image: StoredImage) -> provision_pb2.ImageInfo:
    return provision_pb2.ImageInfo(name=image.name, measurement=image.measurement, signer=image.signer,
                                   size=image.size)


class ProvisionServicer:
    """The RPC handlers. `advertise_host` is the host put in answers ("" = the one the client reached us at)."""

    def __init__(self, *, authenticator: ClientAuthenticator, store: ImageStore, sessions: SessionTable,
                 launcher: ProxyLauncher, metrics: ProvisionMetrics, advertise_host: str) -> None:
        self._authenticator = authenticator
        self._store = store
        self._sessions = sessions
        self._launcher = launcher
        self._metrics = metrics
        self._advertise_host = advertise_host

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server."""
        pb = provision_pb2

        def unary(method: Callable[..., Awaitable[Any]], request: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request.FromString, response_serializer=_serialize)

        return grpc.method_handlers_generic_handler(SERVICE, {
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
        reason = exc.reason if isinstance(exc, LimitExceededError) else _REASONS.get(exc.code)
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
            session_id = self._sessions.reserve(client)
            token = secrets.token_bytes(32)
            launch = asyncio.get_running_loop().run_in_executor(None, self._launcher.launch, image.path, token)
            try:
                proxy = await asyncio.shield(launch)
            except BaseException as exc:
                self._sessions.unreserve(client)
                if isinstance(exc, asyncio.CancelledError):
                    # The client gave up (deadline, cancel) while the proxy was starting: nobody will ever
                    # connect to it, so it is let go as soon as it is up rather than left to its hello timeout.
                    launch.add_done_callback(_release_unclaimed)
                elif isinstance(exc, AsyloError):
                    self._metrics.failures.inc()
                    _log.warning("provisioning %s for %s failed: %s", image.name, client, exc)
                raise
            self._sessions.fill(ProvisionedSession(session_id, client, image, proxy))
            self._metrics.provisions.inc()
            self._metrics.active_enclaves.set(len(self._sessions))
            _log.info("session %s: %s for %s, proxy pid %d port %d", session_id, image.name, client, proxy.pid,
                      proxy.port)
            return provision_pb2.ProvisionResponse(session_id=session_id, proxy_host=self._advertise_host,
                                                   proxy_port=proxy.port, token=token, image=image_info(image))

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
            chunks = aiter(requests)
            first = await anext(chunks, None)
            if first is None or first.WhichOneof("part") != "header":
                raise InvalidArgumentError("an upload starts with its header (name, size, sha256)")
            header = first.header
            upload = self._store.begin_upload(header.name, header.size, header.sha256)
            try:
                async for chunk in chunks:
                    if chunk.WhichOneof("part") != "data":
                        raise InvalidArgumentError("only the first message of an upload is a header")
                    if len(chunk.data) > MAX_UPLOAD_CHUNK:
                        raise InvalidArgumentError(f"upload chunks are at most {MAX_UPLOAD_CHUNK} bytes")
                    upload.write(chunk.data)
                image = await asyncio.get_running_loop().run_in_executor(None, upload.commit)
            except BaseException:
                upload.abort()
                raise
            self._metrics.uploads.inc()
            _log.info("%s uploaded image %s (measurement %s)", client, image.name, image.measurement.hex())
            return image_info(image)

        return await self._guard(context, work)

    # -- session ends --------------------------------------------------------------------------------------------

    async def end_sessions(self, sessions: list[ProvisionedSession]) -> None:
        """Release the sessions' proxies (each finalizes its enclave and exits) and update the gauge."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(None, s.proxy.release) for s in sessions))
        for session in sessions:
            _log.info("session %s ended (proxy exit code %s)", session.session_id, session.proxy.returncode)
        self._metrics.active_enclaves.set(len(self._sessions))

    async def reap_ended(self, interval: float) -> None:
        """Forever: free the slots of sessions whose proxy exited on its own (host gone, idle, crashed)."""
        while True:
            await asyncio.sleep(interval)
            ended = self._sessions.take_ended()
            if ended:
                await self.end_sessions(ended)
            self._metrics.warm_proxies.set(self._launcher.warm_ready)


def _release_unclaimed(launch: asyncio.Future[RunningProxy]) -> None:
    if not launch.cancelled() and launch.exception() is None:
        launch.get_loop().run_in_executor(None, launch.result().release)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()

