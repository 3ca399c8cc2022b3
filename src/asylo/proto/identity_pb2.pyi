from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnclaveIdentity(_message.Message):
    __slots__ = ("measurement", "signer", "product_id", "svn", "debug", "platform")
    MEASUREMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    SVN_FIELD_NUMBER: _ClassVar[int]
    DEBUG_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    measurement: bytes
    signer: bytes
    product_id: int
    svn: int
    debug: bool
    platform: str
    def __init__(self, measurement: _Optional[bytes] = ..., signer: _Optional[bytes] = ..., product_id: _Optional[int] = ..., svn: _Optional[int] = ..., debug: _Optional[bool] = ..., platform: _Optional[str] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("version", "platform", "simulated", "identity", "report_data", "platform_public_key", "signature", "quote", "certificates", "collateral")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REPORT_DATA_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATES_FIELD_NUMBER: _ClassVar[int]
    COLLATERAL_FIELD_NUMBER: _ClassVar[int]
    version: int
    platform: str
    simulated: bool
    identity: EnclaveIdentity
    report_data: bytes
    platform_public_key: bytes
    signature: bytes
    quote: bytes
    certificates: _containers.RepeatedScalarFieldContainer[bytes]
    collateral: bytes
    def __init__(self, version: _Optional[int] = ..., platform: _Optional[str] = ..., simulated: _Optional[bool] = ..., identity: _Optional[_Union[EnclaveIdentity, _Mapping]] = ..., report_data: _Optional[bytes] = ..., platform_public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., quote: _Optional[bytes] = ..., certificates: _Optional[_Iterable[bytes]] = ..., collateral: _Optional[bytes] = ...) -> None: ...

class TpmQuote(_message.Message):
    __slots__ = ("attest", "signature", "ak_public", "pcrs")
    ATTEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    AK_PUBLIC_FIELD_NUMBER: _ClassVar[int]
    PCRS_FIELD_NUMBER: _ClassVar[int]
    attest: bytes
    signature: bytes
    ak_public: bytes
    pcrs: _containers.RepeatedCompositeFieldContainer[TpmPcrValue]
    def __init__(self, attest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., ak_public: _Optional[bytes] = ..., pcrs: _Optional[_Iterable[_Union[TpmPcrValue, _Mapping]]] = ...) -> None: ...

class TpmPcrValue(_message.Message):
    __slots__ = ("hash_alg", "index", "value")
    HASH_ALG_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    hash_alg: int
    index: int
    value: bytes
    def __init__(self, hash_alg: _Optional[int] = ..., index: _Optional[int] = ..., value: _Optional[bytes] = ...) -> None: ...
