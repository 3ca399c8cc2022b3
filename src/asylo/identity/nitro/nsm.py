"""The attester inside a Nitro Enclave: asking the Nitro Secure Module (NSM) for a signed attestation document.

The NSM is a virtio device the Linux driver (drivers/misc/nsm.c, include/uapi/linux/nsm.h) exposes as /dev/nsm
with a single ioctl, NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw), where struct nsm_raw is two
{ __u64 addr; __u64 len; } iovecs, the request and the response; AWS's nsm-api crate (src/driver/mod.rs) uses the
same layout with two struct iovec. The driver copies at most NSM_REQUEST_MAX_SIZE bytes of request, refusing more
with EMSGSIZE, and writes back the response length, truncating to the buffer given. Requests and responses are the
CBOR of the nsm-api crate's serde enums: {"Attestation": {"user_data": bytes|null, "nonce": bytes|null,
"public_key": bytes|null}} in, {"Attestation": {"document": bytes}} or {"Error": "<ErrorCode>"} out.

The pure halves (`encode_attestation_request`, `decode_attestation_response`) are apart from the ioctl so that they
are tested anywhere; only `NitroSecureModule.attestation` needs an enclave.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat

import cbor2

from asylo.identity.nitro.document import (
    MAX_DOCUMENT_SIZE,
    MAX_NONCE_SIZE,
    MAX_PUBLIC_KEY_SIZE,
    MAX_USER_DATA_SIZE,
    decode_cbor,
)
from asylo.status import (
    AttestationError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
)

NSM_DEVICE = "/dev/nsm"
#: include/uapi/linux/nsm.h: the ioctl type, and the largest request and response the driver carries.
NSM_MAGIC = 0x0A
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000
#: An NSM error code is a short enum name ("InputTooLarge"); more of an untrusted string is not shown.
_MAX_ERROR_CODE_SHOWN = 64

# The generic Linux ioctl number layout (include/uapi/asm-generic/ioctl.h), which x86_64 and arm64, the two
# architectures Nitro Enclaves run on, both use.
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = 8
_IOC_SIZESHIFT = 16
_IOC_DIRSHIFT = 30
_IOC_WRITE = 1
_IOC_READ = 2


class _NsmIovec(ctypes.Structure):
    """struct nsm_iovec: a user buffer's address and length."""

    _fields_ = (("addr", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _NsmRaw(ctypes.Structure):
    """struct nsm_raw: the request the driver reads, the response buffer it fills (and whose length it sets)."""

    _fields_ = (("request", _NsmIovec), ("response", _NsmIovec))


def _iowr(ioctl_type: int, number: int, size: int) -> int:
    return ((_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT) | (size << _IOC_SIZESHIFT) | (ioctl_type << _IOC_TYPESHIFT) \
        | (number << _IOC_NRSHIFT)


#: _IOWR(NSM_MAGIC, 0, struct nsm_raw): 0xC0200A00.
NSM_IOCTL_RAW = _iowr(NSM_MAGIC, 0, ctypes.sizeof(_NsmRaw))


def encode_attestation_request(user_data: bytes, *, nonce: bytes | None = None,
                               public_key: bytes | None = None) -> bytes:
    """The CBOR of an NSM Attestation request (fields in the nsm-api crate's order; absent ones null).

    Each field is bounded as the document's field is (1024 bytes); InvalidArgumentError for a wrong type or size.
    """
    fields = {
        "user_data": _request_bytes(user_data, "user_data", MAX_USER_DATA_SIZE),
        "nonce": None if nonce is None else _request_bytes(nonce, "nonce", MAX_NONCE_SIZE),
        "public_key": None if public_key is None else _request_bytes(public_key, "public_key", MAX_PUBLIC_KEY_SIZE),
    }
    request = cbor2.dumps({"Attestation": fields})
    if len(request) > NSM_REQUEST_MAX_SIZE:  # 3 KiB of fields and 60 bytes of names: cannot happen, but checked
        raise InvalidArgumentError(f"the NSM request is {len(request)} bytes, over the driver's {NSM_REQUEST_MAX_SIZE}")
    return request


def decode_attestation_response(response: bytes) -> bytes:
    """The attestation document in an NSM response; AttestationError for an Error response (naming its code) or
    a response that is not one the NSM sends."""
    if not isinstance(response, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"an NSM response is bytes, got {type(response).__name__}")
    response = bytes(response)
    if not 0 < len(response) <= NSM_RESPONSE_MAX_SIZE:
        raise AttestationError(f"the NSM response is {len(response)} bytes, expected 1 to {NSM_RESPONSE_MAX_SIZE}")
    message = decode_cbor(response, "the NSM response")
    if not isinstance(message, dict) or len(message) != 1:
        raise AttestationError("the NSM response is not a map of one entry (a response variant)")
    ((variant, body),) = message.items()
    if variant == "Error":
        code = repr(body[:_MAX_ERROR_CODE_SHOWN]) if isinstance(body, str) else f"a {type(body).__name__}"
        raise AttestationError(f"the Nitro Secure Module refused the attestation request: Error {code}")
    if variant != "Attestation":
        shown = repr(variant[:_MAX_ERROR_CODE_SHOWN]) if isinstance(variant, str) else repr(variant)
        raise AttestationError(f"the NSM response is {shown}, not an Attestation response")
    if not isinstance(body, dict) or list(body) != ["document"]:
        raise AttestationError("the NSM Attestation response is not a map holding just a document")
    document = body["document"]
    if not isinstance(document, bytes) or not 0 < len(document) <= MAX_DOCUMENT_SIZE:
        raise AttestationError(f"the NSM Attestation response's document is not a byte string of 1 to "
                               f"{MAX_DOCUMENT_SIZE} bytes")
    return document


class NitroSecureModule:
    """The NSM of the Nitro Enclave this process runs in, through `device` (opened for each request)."""

    __slots__ = ("device",)

    def __init__(self, device: str | os.PathLike[str] = NSM_DEVICE) -> None:
        if not isinstance(device, str | os.PathLike) or not os.fspath(device):
            raise InvalidArgumentError(f"the NSM device must be a path, got {device!r}")
        path = os.fspath(device)
        if not isinstance(path, str):
            raise InvalidArgumentError(f"the NSM device must be a text path, got {device!r}")
        self.device = path

    def attestation(self, user_data: bytes, *, nonce: bytes | None = None, public_key: bytes | None = None) -> bytes:
        """A COSE_Sign1 attestation document signed by the NSM, carrying `user_data`, `nonce` and `public_key`.

        FailedPreconditionError when this is not a Nitro enclave (no NSM device); AttestationError when the NSM
        refuses or answers something else.
        """
        return decode_attestation_response(self._request(encode_attestation_request(
            user_data, nonce=nonce, public_key=public_key)))

    def _request(self, request: bytes) -> bytes:
        """One NSM_IOCTL_RAW round trip: `request` out, the response bytes (at most NSM_RESPONSE_MAX_SIZE) back."""
        if not 0 < len(request) <= NSM_REQUEST_MAX_SIZE:
            raise InvalidArgumentError(f"an NSM request is 1 to {NSM_REQUEST_MAX_SIZE} bytes, got {len(request)}")
        fd = self._open()
        try:
            request_buffer = ctypes.create_string_buffer(request, len(request))
            response_buffer = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
            raw = _NsmRaw(_NsmIovec(ctypes.addressof(request_buffer), len(request)),
                          _NsmIovec(ctypes.addressof(response_buffer), NSM_RESPONSE_MAX_SIZE))
            try:
                fcntl.ioctl(fd, NSM_IOCTL_RAW, raw, True)
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL):
                    raise FailedPreconditionError(f"not inside a Nitro enclave: {self.device} does not answer the "
                                                  f"NSM ioctl ({os.strerror(exc.errno)})") from None
                raise AttestationError(f"the Nitro Secure Module request on {self.device} failed: "
                                       f"{os.strerror(exc.errno or 0)}") from None
            length = int(raw.response.len)
            if length > NSM_RESPONSE_MAX_SIZE:
                raise AttestationError(f"the NSM driver reports a {length}-byte response for a "
                                       f"{NSM_RESPONSE_MAX_SIZE}-byte buffer")
            return response_buffer.raw[:length]
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
        except FileNotFoundError:
            raise FailedPreconditionError(f"not inside a Nitro enclave: {self.device} not found") from None
        except PermissionError:
            raise PermissionDeniedError(f"cannot open the NSM device {self.device}: permission denied") from None
        except OSError as exc:
            raise FailedPreconditionError(f"cannot open the NSM device {self.device}: {exc.strerror}") from None
        try:
            is_device = stat.S_ISCHR(os.fstat(fd).st_mode)
        except OSError:
            is_device = False
        if not is_device:
            os.close(fd)
            raise FailedPreconditionError(f"not inside a Nitro enclave: {self.device} is not a character device")
        return fd

    def __repr__(self) -> str:
        return f"NitroSecureModule({self.device!r})"


def _request_bytes(value: object, name: str, limit: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"the NSM attestation {name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > limit:
        raise InvalidArgumentError(f"the NSM attestation {name} is {len(value)} bytes, over the NSM's {limit}")
    return value
