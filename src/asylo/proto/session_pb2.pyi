from asylo.proto import enclave_pb2 as _enclave_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("hello", "welcome", "call", "result", "fragment", "thread_gone", "goodbye", "ping", "pong")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    THREAD_GONE_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    welcome: Welcome
    call: CallFrame
    result: ResultFrame
    fragment: Fragment
    thread_gone: ThreadGone
    goodbye: Goodbye
    ping: Ping
    pong: Pong
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., call: _Optional[_Union[CallFrame, _Mapping]] = ..., result: _Optional[_Union[ResultFrame, _Mapping]] = ..., fragment: _Optional[_Union[Fragment, _Mapping]] = ..., thread_gone: _Optional[_Union[ThreadGone, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("version", "token", "load_config", "max_frame_size", "max_message_size", "max_reassembly_bytes", "handshake")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LOAD_CONFIG_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_REASSEMBLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    version: int
    token: bytes
    load_config: _enclave_pb2.EnclaveLoadConfig
    max_frame_size: int
    max_message_size: int
    max_reassembly_bytes: int
    handshake: bytes
    def __init__(self, version: _Optional[int] = ..., token: _Optional[bytes] = ..., load_config: _Optional[_Union[_enclave_pb2.EnclaveLoadConfig, _Mapping]] = ..., max_frame_size: _Optional[int] = ..., max_message_size: _Optional[int] = ..., max_reassembly_bytes: _Optional[int] = ..., handshake: _Optional[bytes] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("version", "measurement", "signer", "enclave_name", "max_frame_size", "max_message_size", "max_reassembly_bytes", "handshake")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    ENCLAVE_NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_REASSEMBLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    version: int
    measurement: bytes
    signer: bytes
    enclave_name: str
    max_frame_size: int
    max_message_size: int
    max_reassembly_bytes: int
    handshake: bytes
    def __init__(self, version: _Optional[int] = ..., measurement: _Optional[bytes] = ..., signer: _Optional[bytes] = ..., enclave_name: _Optional[str] = ..., max_frame_size: _Optional[int] = ..., max_message_size: _Optional[int] = ..., max_reassembly_bytes: _Optional[int] = ..., handshake: _Optional[bytes] = ...) -> None: ...

class HandshakeHello(_message.Message):
    __slots__ = ("key_share", "nonce")
    KEY_SHARE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    key_share: bytes
    nonce: bytes
    def __init__(self, key_share: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class HandshakeWelcome(_message.Message):
    __slots__ = ("key_share", "evidence")
    KEY_SHARE_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    key_share: bytes
    evidence: bytes
    def __init__(self, key_share: _Optional[bytes] = ..., evidence: _Optional[bytes] = ...) -> None: ...

class CallFrame(_message.Message):
    __slots__ = ("call_id", "thread", "selector", "extents", "body_transfer", "extent_sizes")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    EXTENTS_FIELD_NUMBER: _ClassVar[int]
    BODY_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    EXTENT_SIZES_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    thread: int
    selector: int
    extents: _containers.RepeatedScalarFieldContainer[bytes]
    body_transfer: int
    extent_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, call_id: _Optional[int] = ..., thread: _Optional[int] = ..., selector: _Optional[int] = ..., extents: _Optional[_Iterable[bytes]] = ..., body_transfer: _Optional[int] = ..., extent_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class ResultFrame(_message.Message):
    __slots__ = ("call_id", "thread", "code", "message", "extents", "body_transfer", "extent_sizes")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    EXTENTS_FIELD_NUMBER: _ClassVar[int]
    BODY_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    EXTENT_SIZES_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    thread: int
    code: int
    message: str
    extents: _containers.RepeatedScalarFieldContainer[bytes]
    body_transfer: int
    extent_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, call_id: _Optional[int] = ..., thread: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., extents: _Optional[_Iterable[bytes]] = ..., body_transfer: _Optional[int] = ..., extent_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class Fragment(_message.Message):
    __slots__ = ("transfer_id", "total_size", "data")
    TRANSFER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    transfer_id: int
    total_size: int
    data: bytes
    def __init__(self, transfer_id: _Optional[int] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ThreadGone(_message.Message):
    __slots__ = ("thread",)
    THREAD_FIELD_NUMBER: _ClassVar[int]
    thread: int
    def __init__(self, thread: _Optional[int] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("id", "received")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    id: int
    received: int
    def __init__(self, id: _Optional[int] = ..., received: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("id", "received")
    ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    id: int
    received: int
    def __init__(self, id: _Optional[int] = ..., received: _Optional[int] = ...) -> None: ...
