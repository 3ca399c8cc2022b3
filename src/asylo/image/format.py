"""The image file format: a fixed header, then one protobuf message.

    b"ASYLOIMG"        8 bytes, magic: says what the file is before anything is parsed
    version            1 byte, FORMAT_VERSION: lets a later layout be refused with a clear message
    body length        u64, big-endian: makes truncation and trailing bytes detectable
    body               asylo.EnclaveImage, serialized deterministically

Decoding insists that the body is exactly what `SerializeToString(deterministic=True)` produces for the
message it parses to. That refuses unknown fields and odd-but-valid encodings, so the file's bytes are a
function of the image's content (which is what makes builds reproducible) and nothing unsigned can ride along
in a signed image.
"""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError

from asylo.image import limits
from asylo.image.errors import ImageError
from asylo.proto import image_pb2

MAGIC = b"ASYLOIMG"
FORMAT_VERSION = 1
_HEADER = struct.Struct(">8sBQ")
HEADER_SIZE = _HEADER.size  # 17


def encode_image(image: image_pb2.EnclaveImage) -> bytes:
    body = image.SerializeToString(deterministic=True)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def decode_image(data: bytes) -> image_pb2.EnclaveImage:
    """Check the header and parse the body; raises `ImageError` saying which check failed.

    This only checks the container; `asylo.image.verify.load_image` checks what the message says.
    """
    if len(data) > limits.MAX_IMAGE_SIZE:
        raise ImageError(f"image is {len(data)} bytes, over the limit of {limits.MAX_IMAGE_SIZE}")
    # A file cut inside the header is reported as truncated, not as "bad magic", when what is there is right.
    if len(data) < HEADER_SIZE and MAGIC.startswith(data[: len(MAGIC)]):
        raise ImageError(f"image truncated: {len(data)} bytes is shorter than the {HEADER_SIZE}-byte header")
    if data[: len(MAGIC)] != MAGIC:
        raise ImageError(f"not an enclave image: bad magic {data[: len(MAGIC)]!r} (expected {MAGIC!r})")
    _, version, declared = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise ImageError(
            f"unsupported image format version {version} (this pyasylo reads version {FORMAT_VERSION})"
        )
    actual = len(data) - HEADER_SIZE
    if actual < declared:
        raise ImageError(f"image truncated: header says {declared} bytes, file has {actual}")
    if actual > declared:
        raise ImageError(f"image has {actual - declared} trailing bytes after its {declared}-byte body")
    body = bytes(data[HEADER_SIZE:])
    image = image_pb2.EnclaveImage()
    try:
        image.ParseFromString(body)
    except DecodeError as exc:
        raise ImageError(f"image body is not a valid EnclaveImage message: {exc}") from exc
    # The runtime keeps unknown fields and writes them back out; drop them so the comparison below sees them.
    image.DiscardUnknownFields()
    if image.SerializeToString(deterministic=True) != body:
        raise ImageError("image body is not canonically encoded (unknown fields or a non-canonical encoding)")
    return image
