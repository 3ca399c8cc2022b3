"""ServerProvision: get proxies from a provision server (`asylo provision-server`, port 4321) on another machine.

The host asks for its image by measurement (it holds the image file and so knows what it must be welcomed by);
with `upload=True` an image the server lacks is uploaded first — the server accepts it only if a signer it trusts
signed it. The answer names the proxy's port and, usually, no host: the proxy runs on the provision server's machine,
so the host connects to the host it reached the provision server at, which also works through NAT and port
forwarding, and never yields a wildcard address such as `[::]`. Releasing the session asks the server to end it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc

from asylo.image import load_image
from asylo.proto import provision_pb2
from asylo.remote.credentials import ClientCredentials
from asylo.remote.provision import ProvisionedProxy, RemoteProvision
from asylo.remote.provision_api import PROVISION_SERVICE
from asylo.remote.service import error_from_rpc
from asylo.remote.transports import TRANSPORTS, Transport, check_transport
from asylo.status import FailedPreconditionError, InvalidArgumentError, NotFoundError

_log = logging.getLogger(__name__)

#: Uploads go in chunks of this size (the server takes up to 4 MiB).
UPLOAD_CHUNK = 1 << 20

_Response = TypeVar("_Response")


def split_host_port(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"; InvalidArgumentError otherwise."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(f"a provision server address is host:port (e.g. example.org:4321), "
                                   f"got {address!r}")
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


class ServerProvision(RemoteProvision):
    """Proxies started on demand by the provision server at `address`, authenticated with `credentials` (TLS,
    mutual TLS with a client certificate) and/or a `bearer_token`."""

    def __init__(self, address: str, *, credentials: ClientCredentials | None = None,
                 bearer_token: str | None = None, upload: bool = False, timeout: float = 30.0) -> None:
        self.address = address
        self._host, _ = split_host_port(address)
        self._credentials = credentials or ClientCredentials.insecure_loopback()
        self._credentials.check_target(address)
        self._metadata = (("authorization", f"Bearer {bearer_token}"),) if bearer_token else ()
        self._upload = upload
        self._timeout = timeout

    # -- RemoteProvision ------------------------------------------------------------------------------------------

    def provision(self, image_path: Path, *, transport: Transport | None = None) -> ProvisionedProxy:
        measurement = load_image(image_path).measurement
        request = provision_pb2.ProvisionRequest(measurement=measurement, transport=transport or "")
        try:
            answer = self._call("Provision", request, provision_pb2.ProvisionResponse)
        except NotFoundError:
            if not self._upload:
                raise
            self.upload(image_path)
            answer = self._call("Provision", request, provision_pb2.ProvisionResponse)
        host = answer.proxy_host or self._host.strip("[]")
        session_id = answer.session_id
        _log.info("provisioned session %s (%s) at %s", session_id, answer.image.name, host)
        served = answer.transport or "grpc"  # a server from before the choice serves gRPC
        if served not in TRANSPORTS or (transport is not None and served != transport):
            self._release_quietly(session_id)
            raise FailedPreconditionError(f"the provision server's proxy serves the {served!r} transport, not "
                                          f"{transport or 'one this host speaks'}")
        return ProvisionedProxy(join_host_port(host, answer.proxy_port), answer.token, self._credentials,
                                lambda: self._release_quietly(session_id), transport=check_transport(served))

    # -- the rest of the API ---------------------------------------------------------------------------------------

    def provision_by_name(self, name: str) -> provision_pb2.ProvisionResponse:
        """Provision the store's image `name`; the raw answer (the caller must `release` its session)."""
        return self._call("Provision", provision_pb2.ProvisionRequest(image_name=name),
                          provision_pb2.ProvisionResponse)

    def release(self, session_id: str) -> None:
        self._call("Release", provision_pb2.ReleaseRequest(session_id=session_id), provision_pb2.ReleaseResponse)

    def sessions(self) -> list[provision_pb2.SessionInfo]:
        return list(self._call("ListSessions", provision_pb2.ListSessionsRequest(),
                               provision_pb2.ListSessionsResponse).sessions)

    def images(self) -> list[provision_pb2.ImageInfo]:
        return list(self._call("ListImages", provision_pb2.ListImagesRequest(),
                               provision_pb2.ListImagesResponse).images)

    def upload(self, image_path: str | os.PathLike[str], name: str | None = None) -> provision_pb2.ImageInfo:
        """Upload an image file (its name in the store: `name`, or the file name without `.aimg`)."""
        path = Path(image_path)
        data = path.read_bytes()
        header = provision_pb2.UploadImageHeader(name=name or path.name.removesuffix(".aimg"), size=len(data),
                                                 sha256=hashlib.sha256(data).digest())

        def chunks() -> Iterator[provision_pb2.UploadImageChunk]:
            yield provision_pb2.UploadImageChunk(header=header)
            for offset in range(0, len(data), UPLOAD_CHUNK):
                yield provision_pb2.UploadImageChunk(data=data[offset:offset + UPLOAD_CHUNK])

        info: provision_pb2.ImageInfo = self._rpc(lambda channel: channel.stream_unary(
            f"/{PROVISION_SERVICE}/UploadImage", request_serializer=_serialize,
            response_deserializer=provision_pb2.ImageInfo.FromString)(
                chunks(), timeout=self._timeout, metadata=self._metadata), "UploadImage")
        return info

    # -- plumbing --------------------------------------------------------------------------------------------------

    def _call(self, method: str, request: Any, response: type[_Response]) -> _Response:
        answer: _Response = self._rpc(lambda channel: channel.unary_unary(
            f"/{PROVISION_SERVICE}/{method}", request_serializer=_serialize,
            response_deserializer=response.FromString)(  # type: ignore[attr-defined]
                request, timeout=self._timeout, metadata=self._metadata), method)
        return answer

    def _rpc(self, invoke: Callable[[grpc.Channel], _Response], method: str) -> _Response:
        with self._credentials.open_blocking_channel(self.address) as channel:
            try:
                return invoke(channel)
            except grpc.RpcError as exc:
                raise error_from_rpc(exc.code(), exc.details(),
                                     f"provision server {self.address} ({method})") from None

    def _release_quietly(self, session_id: str) -> None:
        """ProvisionedProxy.release: the session ends anyway when the host's stream closes, so a failure to say
        so (the server restarted, the network went) is logged, not raised."""
        try:
            self.release(session_id)
        except NotFoundError:
            pass  # the proxy exited when the host said goodbye, and the server already freed the slot
        except Exception as exc:
            _log.warning("releasing session %s at %s: %s", session_id, self.address, exc)


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
