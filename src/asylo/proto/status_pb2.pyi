from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[StatusCode]
    CANCELLED: _ClassVar[StatusCode]
    UNKNOWN: _ClassVar[StatusCode]
    INVALID_ARGUMENT: _ClassVar[StatusCode]
    DEADLINE_EXCEEDED: _ClassVar[StatusCode]
    NOT_FOUND: _ClassVar[StatusCode]
    ALREADY_EXISTS: _ClassVar[StatusCode]
    PERMISSION_DENIED: _ClassVar[StatusCode]
    RESOURCE_EXHAUSTED: _ClassVar[StatusCode]
    FAILED_PRECONDITION: _ClassVar[StatusCode]
    ABORTED: _ClassVar[StatusCode]
    OUT_OF_RANGE: _ClassVar[StatusCode]
    UNIMPLEMENTED: _ClassVar[StatusCode]
    INTERNAL: _ClassVar[StatusCode]
    UNAVAILABLE: _ClassVar[StatusCode]
    DATA_LOSS: _ClassVar[StatusCode]
    UNAUTHENTICATED: _ClassVar[StatusCode]
OK: StatusCode
CANCELLED: StatusCode
UNKNOWN: StatusCode
INVALID_ARGUMENT: StatusCode
DEADLINE_EXCEEDED: StatusCode
NOT_FOUND: StatusCode
ALREADY_EXISTS: StatusCode
PERMISSION_DENIED: StatusCode
RESOURCE_EXHAUSTED: StatusCode
FAILED_PRECONDITION: StatusCode
ABORTED: StatusCode
OUT_OF_RANGE: StatusCode
UNIMPLEMENTED: StatusCode
INTERNAL: StatusCode
UNAVAILABLE: StatusCode
DATA_LOSS: StatusCode
UNAUTHENTICATED: StatusCode

class StatusProto(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: StatusCode
    message: str
    def __init__(self, code: _Optional[_Union[StatusCode, str]] = ..., message: _Optional[str] = ...) -> None: ...
