from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnclaveManifest(_message.Message):
    __slots__ = ("name", "entry_point", "product_id", "svn", "debug")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_POINT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SVN_FIELD_NUMBER: _ClassVar[int]
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    name: str
    entry_point: str
    product_id: int
    svn: int
    debug: bool
    def __init__(self, name: _Optional[str] = ..., entry_point: _Optional[str] = ..., product_id: _Optional[int] = ..., svn: _Optional[int] = ..., debug: _Optional[bool] = ...) -> None: ...

class EnclaveImageFile(_message.Message):
    __slots__ = ("path", "content")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class EnclaveImage(_message.Message):
    __slots__ = ("manifest", "files", "measurement", "signer_public_key", "signature")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    manifest: EnclaveManifest
    files: _containers.RepeatedCompositeFieldContainer[EnclaveImageFile]
    measurement: bytes
    signer_public_key: bytes
    signature: bytes
    def __init__(self, manifest: _Optional[_Union[EnclaveManifest, _Mapping]] = ..., files: _Optional[_Iterable[_Union[EnclaveImageFile, _Mapping]]] = ..., measurement: _Optional[bytes] = ..., signer_public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...
