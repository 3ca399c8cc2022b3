"""Enclave images: an enclave's Python sources and manifest, measured (SHA-256) and signed (Ed25519).

    key = generate_signing_key()
    save_signing_key(key, "signer.pem")
    write_image("demo.img", build_image("demo_enclave/", key))
    image = load_image("demo.img")          # verifies everything, or raises ImageError
    image.measurement_hex, image.signer_hex, image.files["demo_enclave.py"]

The modules behind this one each hold one concept: `manifest` (enclave.toml), `files` (what goes in, which
paths are allowed), `measurement` (the canonical encoding and digest), `signing` (keys and signatures),
`format` (the file container), `build` and `verify`.
"""

from __future__ import annotations

from asylo.image.build import build_image, build_image_from, write_image
from asylo.image.errors import ImageError, ImageVerificationError
from asylo.image.files import check_image_path, collect_files
from asylo.image.format import FORMAT_VERSION, MAGIC
from asylo.image.limits import MAX_FILES, MAX_IMAGE_SIZE
from asylo.image.manifest import MANIFEST_FILENAME, Manifest, load_manifest
from asylo.image.measurement import compute_measurement, encode_manifest
from asylo.image.signing import (
    generate_signing_key,
    load_signing_key,
    public_key_bytes,
    save_signing_key,
    signer_id,
)
from asylo.image.verify import VerifiedImage, load_image

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MANIFEST_FILENAME",
    "MAX_FILES",
    "MAX_IMAGE_SIZE",
    "ImageError",
    "ImageVerificationError",
    "Manifest",
    "VerifiedImage",
    "build_image",
    "build_image_from",
    "check_image_path",
    "collect_files",
    "compute_measurement",
    "encode_manifest",
    "generate_signing_key",
    "load_image",
    "load_manifest",
    "load_signing_key",
    "public_key_bytes",
    "save_signing_key",
    "signer_id",
    "write_image",
]
