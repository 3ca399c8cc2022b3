"""Loading an image: every check between bytes on disk (or off the network) and a `VerifiedImage`.

`load_image` is the only way to get a `VerifiedImage`, and it checks, in this order, stopping at the first
failure with an error that names it:

1. the file is readable and at most `limits.MAX_IMAGE_SIZE` bytes;
2. the magic, the format version, and the declared body length against the actual one (truncation, trailing
   bytes);
3. the body parses as a canonically encoded `EnclaveImage`;
4. every required field is present and well-formed (a valid manifest, 32-byte measurement and key, 64-byte
   signature, UTF-8 paths, at most `limits.MAX_FILES` files);
5. the signature verifies under the embedded public key over the payload rebuilt from the embedded measurement
   and manifest: the signer vouches for the measurement;
6. the measurement recomputed from the manifest and files equals the embedded one: the content is what was
   signed;
7. the paths are canonical, relative, unique and sorted (`asylo.image.files.check_image_paths`);
8. the entry point's module is one of the files.

Authenticity (5, 6) comes before meaning (7, 8), so a failure there says plainly "this was changed or forged".
The embedded public key is only *a* key: whether that signer is trusted is decided by the caller, by comparing
`signer` with the ids it trusts.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from asylo._files import FileTooLargeError, NotRegularFileError, read_regular_file
from asylo.image import limits
from asylo.image.errors import ImageError, ImageVerificationError
from asylo.image.files import check_image_paths
from asylo.image.format import decode_image
from asylo.image.manifest import Manifest
from asylo.image.measurement import MEASUREMENT_SIZE, measure_in_order
from asylo.image.signing import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, signer_id, verify_signature
from asylo.proto import image_pb2


@dataclass(frozen=True)
class VerifiedImage:
    """An image whose signature, measurement and structure have been checked; only `load_image` makes one."""

    manifest: Manifest
    files: Mapping[str, bytes]  # read-only, in canonical (sorted) order
    measurement: bytes  # 32 bytes, see asylo.image.measurement
    signer_public_key: bytes  # raw Ed25519, 32 bytes
    signer: bytes  # signer id: SHA-256 of signer_public_key

    @property
    def measurement_hex(self) -> str:
        return self.measurement.hex()

    @property
    def signer_hex(self) -> str:
        return self.signer.hex()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> VerifiedImage:
        """Verify an image held in memory (e.g. received over the network)."""
        return load_image(bytes(data))


def load_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> VerifiedImage:
    """Read and verify an image: `source` is a path (str or PathLike) or the image's bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = _read_image_file(Path(source))
    image = decode_image(data)
    manifest, files = _required_fields(image)
    verify_signature(image.signer_public_key, image.signature, image.measurement, manifest)
    if measure_in_order(manifest, files) != image.measurement:
        raise ImageVerificationError("measurement mismatch: image content was changed after it was measured")
    check_image_paths(path for path, _ in files)
    contents = dict(files)
    if not any(path in contents for path in manifest.entry_module_paths):
        raise ImageError(
            f"entry point module {manifest.entry_module!r} is not in the image "
            f"(expected {' or '.join(manifest.entry_module_paths)})"
        )
    return VerifiedImage(
        manifest=manifest,
        files=types.MappingProxyType(contents),
        measurement=image.measurement,
        signer_public_key=image.signer_public_key,
        signer=signer_id(image.signer_public_key),
    )


def _read_image_file(path: Path) -> bytes:
    # The limit is checked on what is read, not on a stat (the file may be growing); a FIFO or a device in its
    # place is refused rather than waited on.
    try:
        data, _ = read_regular_file(path, limits.MAX_IMAGE_SIZE, follow_symlinks=True)
    except NotRegularFileError:
        raise ImageError(f"{path}: cannot read image: not a regular file") from None
    except FileTooLargeError:
        raise ImageError(f"{path}: image is larger than the limit of {limits.MAX_IMAGE_SIZE} bytes") from None
    except FileNotFoundError:
        raise ImageError(f"{path}: cannot read image: it does not exist") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read image: {exc.strerror or exc}") from exc
    return data


def _required_fields(image: image_pb2.EnclaveImage) -> tuple[Manifest, list[tuple[str, bytes]]]:
    if not image.HasField("manifest"):
        raise ImageError("image is missing required field manifest")
    manifest = Manifest.from_proto(image.manifest)
    for field, size in (("measurement", MEASUREMENT_SIZE), ("signer_public_key", PUBLIC_KEY_SIZE),
                        ("signature", SIGNATURE_SIZE)):
        if not image.HasField(field):
            raise ImageError(f"image is missing required field {field}")
        if len(getattr(image, field)) != size:
            raise ImageError(f"image field {field} must be {size} bytes, got {len(getattr(image, field))}")
    if len(image.files) > limits.MAX_FILES:
        raise ImageError(f"image has {len(image.files)} files, over the limit of {limits.MAX_FILES}")
    files: list[tuple[str, bytes]] = []
    for index, entry in enumerate(image.files):
        if not entry.HasField("path"):
            raise ImageError(f"image file #{index} is missing required field path")
        if not entry.HasField("content"):
            raise ImageError(f"image file {entry.path!r} is missing required field content")
        # For a proto2 string that is not valid UTF-8, the upb runtime hands back bytes instead of raising.
        path: object = entry.path
        if not isinstance(path, str):
            raise ImageError(f"image file #{index} has a path that is not valid UTF-8: {path!r}")
        files.append((path, entry.content))
    return manifest, files
