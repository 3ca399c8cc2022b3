from asylo.proto import enclave_pb2 as _enclave_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
QUICKSTART_INPUT_FIELD_NUMBER: _ClassVar[int]
quickstart_input: _descriptor.FieldDescriptor
QUICKSTART_OUTPUT_FIELD_NUMBER: _ClassVar[int]
quickstart_output: _descriptor.FieldDescriptor
QUICKSTART_CONFIG_FIELD_NUMBER: _ClassVar[int]
quickstart_config: _descriptor.FieldDescriptor

class Demo(_message.Message):
    __slots__ = ("value", "action")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[Demo.Action]
        ENCRYPT: _ClassVar[Demo.Action]
        DECRYPT: _ClassVar[Demo.Action]
    UNKNOWN: Demo.Action
    ENCRYPT: Demo.Action
    DECRYPT: Demo.Action
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    value: str
    action: Demo.Action
    def __init__(self, value: _Optional[str] = ..., action: _Optional[_Union[Demo.Action, str]] = ...) -> None: ...

class QuickstartConfig(_message.Message):
    __slots__ = ("key_policy",)
    class KeyPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EPHEMERAL: _ClassVar[QuickstartConfig.KeyPolicy]
        SEALED_MEASUREMENT: _ClassVar[QuickstartConfig.KeyPolicy]
        SEALED_SIGNER: _ClassVar[QuickstartConfig.KeyPolicy]
    EPHEMERAL: QuickstartConfig.KeyPolicy
    SEALED_MEASUREMENT: QuickstartConfig.KeyPolicy
    SEALED_SIGNER: QuickstartConfig.KeyPolicy
    KEY_POLICY_FIELD_NUMBER: _ClassVar[int]
    key_policy: QuickstartConfig.KeyPolicy
    def __init__(self, key_policy: _Optional[_Union[QuickstartConfig.KeyPolicy, str]] = ...) -> None: ...
