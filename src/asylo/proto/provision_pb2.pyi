from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProvisionRequest(_message.Message):
    __slots__ = ("image_name", "measurement", "transport")
    IMAGE_NAME_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    image_name: str
    measurement: bytes
    transport: str
    def __init__(self, image_name: _Optional[str] = ..., measurement: _Optional[bytes] = ..., transport: _Optional[str] = ...) -> None: ...

class ProvisionResponse(_message.Message):
    __slots__ = ("session_id", "proxy_host", "proxy_port", "token", "image", "transport")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROXY_HOST_FIELD_NUMBER: _ClassVar[int]
    PROXY_PORT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    proxy_host: str
    proxy_port: int
    token: bytes
    image: ImageInfo
    transport: str
    def __init__(self, session_id: _Optional[str] = ..., proxy_host: _Optional[str] = ..., proxy_port: _Optional[int] = ..., token: _Optional[bytes] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., transport: _Optional[str] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "image", "created_unix_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    image: ImageInfo
    created_unix_ms: int
    def __init__(self, session_id: _Optional[str] = ..., image: _Optional[_Union[ImageInfo, _Mapping]] = ..., created_unix_ms: _Optional[int] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionInfo]
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionInfo, _Mapping]]] = ...) -> None: ...

class ListImagesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ImageInfo(_message.Message):
    __slots__ = ("name", "measurement", "signer", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    measurement: bytes
    signer: bytes
    size: int
    def __init__(self, name: _Optional[str] = ..., measurement: _Optional[bytes] = ..., signer: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[ImageInfo]
    def __init__(self, images: _Optional[_Iterable[_Union[ImageInfo, _Mapping]]] = ...) -> None: ...

class UploadImageHeader(_message.Message):
    __slots__ = ("name", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    sha256: bytes
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class UploadImageChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: UploadImageHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[UploadImageHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...
