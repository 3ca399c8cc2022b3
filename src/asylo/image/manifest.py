"""The enclave manifest: `enclave.toml`, the few fields that name and identify an enclave.

```toml
name = "demo_enclave"                       # required; 1..128 of [A-Za-z0-9_.-]
entry_point = "demo_enclave:DemoEnclave"     # required; "dotted.module:ClassName"
product_id = 1                               # optional, 0..2**32-1, default 0
svn = 1                                      # optional, 0..2**32-1, default 0 (security version number)
debug = false                                # optional, default false
```

The manifest is part of what is measured and signed, so identity expectations (signer + product id + minimum
SVN, no debug enclaves) can rely on it. It is strict on purpose: an unknown key is far more likely a typo
(`snv = 2`) that would silently leave a security-relevant field at its default than a feature from the future.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from asylo.image.errors import ImageError
from asylo.proto import image_pb2

MANIFEST_FILENAME = "enclave.toml"

_U32_MAX = 2**32 - 1
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# Far beyond any real module path; bounds what a hostile image can make us split and check.
_MAX_ENTRY_POINT_LENGTH = 1024
_KEYS = frozenset({"name", "entry_point", "product_id", "svn", "debug"})


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: constructing one with a bad field raises `ImageError` naming the field."""

    name: str
    entry_point: str
    product_id: int = 0
    svn: int = 0
    debug: bool = False

    def __post_init__(self) -> None:
        # Validate here, not in the TOML reader, so every Manifest (from TOML, an image or code) is valid.
        _check_type("name", self.name, str)
        if not _NAME_PATTERN.fullmatch(self.name):
            raise ImageError(f"manifest key 'name': must be 1 to 128 of [A-Za-z0-9_.-], got {self.name!r}")
        _check_type("entry_point", self.entry_point, str)
        _check_entry_point(self.entry_point)
        for key in ("product_id", "svn"):
            value = getattr(self, key)
            _check_type(key, value, int)
            if not 0 <= value <= _U32_MAX:
                raise ImageError(f"manifest key {key!r}: must be between 0 and {_U32_MAX}, got {value}")
        _check_type("debug", self.debug, bool)

    @property
    def entry_module(self) -> str:
        """The dotted module name of the entry point ("pkg.mod" of "pkg.mod:Class")."""
        return self.entry_point.partition(":")[0]

    @property
    def entry_class(self) -> str:
        """The class name of the entry point ("Class" of "pkg.mod:Class")."""
        return self.entry_point.partition(":")[2]

    @property
    def entry_module_paths(self) -> tuple[str, str]:
        """The image paths the entry module may live at: "pkg/mod.py" or "pkg/mod/__init__.py"."""
        base = self.entry_module.replace(".", "/")
        return (f"{base}.py", f"{base}/__init__.py")

    def to_proto(self) -> image_pb2.EnclaveManifest:
        # Every field is set explicitly, so a reader can insist that all are present (see from_proto).
        return image_pb2.EnclaveManifest(
            name=self.name,
            entry_point=self.entry_point,
            product_id=self.product_id,
            svn=self.svn,
            debug=self.debug,
        )

    @classmethod
    def from_proto(cls, proto: image_pb2.EnclaveManifest) -> Manifest:
        """The manifest in an image; every field must be present (writers always set them all)."""
        for field in ("name", "entry_point", "product_id", "svn", "debug"):
            if not proto.HasField(field):
                raise ImageError(f"image is missing required field manifest.{field}")
        return cls(
            name=proto.name, entry_point=proto.entry_point, product_id=proto.product_id, svn=proto.svn,
            debug=proto.debug,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Manifest:
        """A manifest from parsed TOML (or any mapping): refuses unknown keys and missing required ones."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ImageError(
                f"manifest key {unknown[0]!r}: unknown key (allowed: {', '.join(sorted(_KEYS))})"
            )
        for key in ("name", "entry_point"):
            if key not in data:
                raise ImageError(f"manifest key {key!r}: required key is missing")
        # Types are checked in __post_init__; the ignores only tell mypy that checking happens there.
        return cls(**data)  # type: ignore[arg-type]

    @classmethod
    def from_toml(cls, text: str) -> Manifest:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ImageError(f"manifest is not valid TOML: {exc}") from exc
        return cls.from_mapping(data)


def load_manifest(source_dir: str | os.PathLike[str]) -> Manifest:
    """Read and validate `enclave.toml` in an enclave source directory; errors name the file."""
    path = Path(source_dir) / MANIFEST_FILENAME
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no {MANIFEST_FILENAME} in {source_dir}") from exc
    except UnicodeDecodeError as exc:
        raise ImageError(f"{path}: manifest is not UTF-8: {exc}") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot read manifest: {exc.strerror or exc}") from exc
    try:
        return Manifest.from_toml(text)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc.message}") from exc


def _check_type(key: str, value: object, expected: type) -> None:
    # bool is a subclass of int in Python; `svn = true` must not pass as svn 1.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ImageError(
            f"manifest key {key!r}: must be {_TYPE_NAMES[expected]}, got {type(value).__name__} {value!r}"
        )


_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "a boolean (true or false)"}


def _check_entry_point(entry_point: str) -> None:
    problem = f"manifest key 'entry_point': must be \"dotted.module:ClassName\", got {entry_point!r}"
    if len(entry_point) > _MAX_ENTRY_POINT_LENGTH or entry_point.count(":") != 1:
        raise ImageError(problem)
    module, _, class_name = entry_point.partition(":")
    if not all(part.isidentifier() for part in [*module.split("."), class_name]):
        raise ImageError(problem)
