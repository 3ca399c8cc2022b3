"""The measurement: one SHA-256 digest that stands for an enclave's manifest and every file in its image.

Identity expectations and sealing policies key on it, so it must be a function of the content alone: not of
the file system, the protobuf library or the order in which a directory was listed. Protobuf encoding is not
canonical (field order, unknown fields and varint widths may vary), so the digest is taken over this explicit
encoding instead, with all integers **big-endian**:

    b"pyasylo-measurement-v1\\0"                 domain separation: this digest can never equal any other
                                                 digest pyasylo computes (e.g. a signing payload)
    manifest:                                    (the canonical manifest encoding, also used by the signature)
        u32 len(name)        || name (UTF-8)
        u32 len(entry_point) || entry_point (UTF-8)
        u32 product_id
        u32 svn
        u8  debug (0 or 1)
    u32 number of files
    for each file, sorted by the UTF-8 bytes of its path:
        u32 len(path)    || path (UTF-8, POSIX, relative)
        u64 len(content) || content

Every variable-length field is length-prefixed, so no two different inputs encode to the same bytes (moving a
byte from one file's content into the next file's path changes the lengths).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

from asylo.image.manifest import Manifest

MEASUREMENT_DOMAIN = b"pyasylo-measurement-v1\0"
MEASUREMENT_SIZE = 32  # SHA-256

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def encode_manifest(manifest: Manifest) -> bytes:
    """The canonical manifest encoding (see module docstring): in the measurement and the signing payload."""
    name = manifest.name.encode("utf-8")
    entry_point = manifest.entry_point.encode("utf-8")
    return b"".join(
        (
            _U32.pack(len(name)), name,
            _U32.pack(len(entry_point)), entry_point,
            _U32.pack(manifest.product_id),
            _U32.pack(manifest.svn),
            _U8.pack(1 if manifest.debug else 0),
        )
    )


def path_sort_key(path: str) -> bytes:
    """The canonical file order: by UTF-8 bytes, which unlike str order is the same in every language."""
    return path.encode("utf-8")


def compute_measurement(manifest: Manifest, files: Mapping[str, bytes]) -> bytes:
    """The measurement of a manifest and a set of files (32 bytes); files are taken in canonical order."""
    return measure_in_order(manifest, sorted(files.items(), key=lambda item: path_sort_key(item[0])))


def measure_in_order(manifest: Manifest, files: Iterable[tuple[str, bytes]]) -> bytes:
    """The measurement with files in the order given: for verifying an image, whose order is checked apart."""
    ordered = list(files)
    digest = hashlib.sha256(MEASUREMENT_DOMAIN)
    digest.update(encode_manifest(manifest))
    digest.update(_U32.pack(len(ordered)))
    for path, content in ordered:
        encoded_path = path.encode("utf-8")
        digest.update(_U32.pack(len(encoded_path)))
        digest.update(encoded_path)
        digest.update(_U64.pack(len(content)))
        digest.update(content)
    return digest.digest()
