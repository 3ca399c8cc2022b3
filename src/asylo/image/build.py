"""Building an image: enclave source directory + signing key -> image file bytes, reproducibly.

Nothing that varies between runs goes in: no timestamps, no file modes or owners, no directory listing order,
and Ed25519 signatures are deterministic. The same directory contents and the same key give the same bytes, so
anyone can rebuild an image from its sources and compare, and a signer can check what it is about to sign.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asylo.image import limits
from asylo.image.errors import ImageError
from asylo.image.files import check_image_path, check_image_paths, collect_files
from asylo.image.format import encode_image
from asylo.image.manifest import Manifest, load_manifest
from asylo.image.measurement import compute_measurement, path_sort_key
from asylo.image.signing import public_key_bytes, sign_measurement
from asylo.proto import image_pb2


def build_image(source_dir: str | os.PathLike[str], signing_key: Ed25519PrivateKey) -> bytes:
    """Measure and sign the enclave in `source_dir` (`enclave.toml` and its files); returns image bytes."""
    manifest = load_manifest(source_dir)
    files = collect_files(source_dir)
    return build_image_from(manifest, files, signing_key, source=str(source_dir))


def build_image_from(
    manifest: Manifest,
    files: Mapping[str, bytes],
    signing_key: Ed25519PrivateKey,
    *,
    source: str = "<memory>",
) -> bytes:
    """Build from a manifest and files already in memory (`source` names them in errors).

    Applies the same rules as `load_image`, so a build never produces an image that loading would refuse.
    """
    if len(files) > limits.MAX_FILES:
        raise ImageError(f"{source}: {len(files)} files, over the limit of {limits.MAX_FILES}")
    for path in files:
        check_image_path(path)
    ordered = dict(sorted(files.items(), key=lambda item: path_sort_key(item[0])))
    check_image_paths(ordered)
    if not any(path in files for path in manifest.entry_module_paths):
        raise ImageError(
            f"{source}: entry point module {manifest.entry_module!r} not found "
            f"(expected {' or '.join(manifest.entry_module_paths)})"
        )
    measurement = compute_measurement(manifest, ordered)
    image = image_pb2.EnclaveImage(
        manifest=manifest.to_proto(),
        files=[image_pb2.EnclaveImageFile(path=path, content=content) for path, content in ordered.items()],
        measurement=measurement,
        signer_public_key=public_key_bytes(signing_key),
        signature=sign_measurement(signing_key, measurement, manifest),
    )
    data = encode_image(image)
    if len(data) > limits.MAX_IMAGE_SIZE:
        raise ImageError(
            f"{source}: image would be {len(data)} bytes, over the limit of {limits.MAX_IMAGE_SIZE}"
        )
    return data


def write_image(path: str | os.PathLike[str], data: bytes) -> None:
    """Write image bytes atomically: a temporary file in the same directory, fsynced, then renamed into place.

    Readers (a proxy loading the image, a provision server) never see a half-written image, and a failed write
    leaves any previous image in place.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    # Mode 0o644 filtered by the umask, as for any file the user creates; an image holds no secrets.
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        # Name the file the caller asked for, not our temporary one.
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
