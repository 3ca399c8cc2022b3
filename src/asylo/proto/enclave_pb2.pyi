from asylo.proto import status_pb2 as _status_pb2
from google.protobuf.internal import python_message as _python_message
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnclaveConfig(_message.Message):
    __slots__ = ("name", "data")
    Extensions: _python_message._ExtensionDict
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    data: bytes
    def __init__(self, name: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class EnclaveInput(_message.Message):
    __slots__ = ("data",)
    Extensions: _python_message._ExtensionDict
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EnclaveOutput(_message.Message):
    __slots__ = ("status", "data")
    Extensions: _python_message._ExtensionDict
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.StatusProto
    data: bytes
    def __init__(self, status: _Optional[_Union[_status_pb2.StatusProto, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class EnclaveFinal(_message.Message):
    __slots__ = ("data",)
    Extensions: _python_message._ExtensionDict
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EnclaveLoadConfig(_message.Message):
    __slots__ = ("name", "config", "debug", "measurement")
    Extensions: _python_message._ExtensionDict
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    config: EnclaveConfig
    debug: bool
    measurement: bytes
    def __init__(self, name: _Optional[str] = ..., config: _Optional[_Union[EnclaveConfig, _Mapping]] = ..., debug: _Optional[bool] = ..., measurement: _Optional[bytes] = ...) -> None: ...
