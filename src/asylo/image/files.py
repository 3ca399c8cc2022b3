"""Which files go into an image, and which paths an image may hold.

A build takes every regular file under the enclave source directory except the manifest itself, `__pycache__`
directories, `*.pyc` files and names starting with "." (VCS metadata, editor swap files, virtualenvs):
byte-code is derived from the sources and differs between interpreters, and the rest is never part of an
enclave, so including any of it would make the measurement depend on the developer's machine.

Symbolic links are refused rather than followed or skipped: following one could pull in files from outside the
tree (or loop), and skipping one silently would build an enclave that is not what the directory shows.

Paths in an image are POSIX, relative and canonical; the same rules are checked on build and on load, because
a later step may extract an image to disk, and a path like "../x" or "/etc/x" would then escape the target
directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from asylo._files import FileTooLargeError, NotRegularFileError, read_regular_file
from asylo.image import limits
from asylo.image.errors import ImageError
from asylo.image.manifest import MANIFEST_FILENAME
from asylo.image.measurement import path_sort_key


def collect_files(source_dir: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read the files of an enclave source directory, keyed by image path, in canonical (sorted) order.

    Enforces `limits.MAX_FILES` and `limits.MAX_IMAGE_SIZE` while reading, so a wrong directory (a home
    directory, a data set) fails fast instead of filling memory.
    """
    root = Path(source_dir)
    if not root.is_dir():
        raise ImageError(f"{root}: enclave source directory does not exist or is not a directory")
    found: list[tuple[str, Path]] = []
    _walk(root, "", found)
    found.sort(key=lambda item: path_sort_key(item[0]))
    files: dict[str, bytes] = {}
    total = 0
    for image_path, disk_path in found:
        content = _read_regular_file(disk_path, limits.MAX_IMAGE_SIZE - total)
        total += len(content)
        files[image_path] = content
    return files


def _walk(directory: Path, prefix: str, found: list[tuple[str, Path]]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise ImageError(f"{directory}: cannot list directory: {exc.strerror or exc}") from exc
    for entry in entries:
        name = entry.name
        image_path = prefix + name
        disk_path = directory / name
        if name.startswith(".") or (not prefix and name == MANIFEST_FILENAME):
            continue
        if entry.is_symlink():
            raise ImageError(f"{disk_path}: symbolic links are not allowed in an enclave image")
        if entry.is_dir(follow_symlinks=False):
            if name != "__pycache__":
                _walk(disk_path, image_path + "/", found)
            continue
        if name.endswith(".pyc"):
            continue
        if not entry.is_file(follow_symlinks=False):
            raise ImageError(f"{disk_path}: not a regular file (device, socket or pipe)")
        try:
            check_image_path(image_path)
        except ImageError as exc:
            raise ImageError(f"{disk_path}: {exc.message}") from exc
        found.append((image_path, disk_path))
        if len(found) > limits.MAX_FILES:
            raise ImageError(f"{directory}: more than {limits.MAX_FILES} files in the enclave source tree")


def _read_regular_file(path: Path, budget: int) -> bytes:
    # The tree may change between the listing and the read: a file swapped for a symlink or a FIFO in that gap
    # must not be followed (read_regular_file checks the file it opened).
    try:
        content, _ = read_regular_file(path, budget)
    except NotRegularFileError:
        raise ImageError(f"{path}: not a regular file") from None
    except FileTooLargeError:
        raise ImageError(f"{path}: enclave files exceed the image size limit ({limits.MAX_IMAGE_SIZE} bytes)") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read file: {exc.strerror or exc}") from exc
    return content


def check_image_path(path: str) -> None:
    """Raise `ImageError` unless `path` is a canonical relative POSIX path that stays inside the image."""
    if not path:
        raise ImageError("image path is empty")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ImageError(f"image path {path!r} is not valid UTF-8") from exc
    if "\0" in path:
        raise ImageError(f"image path {path!r} contains a NUL character")
    if "\\" in path:
        raise ImageError(f"image path {path!r} contains a backslash (paths are POSIX, '/'-separated)")
    if path.startswith("/"):
        raise ImageError(f"image path {path!r} is absolute")
    for part in path.split("/"):
        if part == "":
            raise ImageError(f"image path {path!r} has an empty component")
        if part in (".", ".."):
            raise ImageError(f"image path {path!r} contains {part!r}")


def check_image_paths(paths: Iterable[str]) -> None:
    """Check every path, and that together they are sorted, unique and extractable (no file is a dir)."""
    previous: bytes | None = None
    files: set[str] = set()
    directories: set[str] = set()
    for path in paths:
        check_image_path(path)
        key = path_sort_key(path)
        if previous is not None and key <= previous:
            problem = "is duplicated" if key == previous else "is out of order (paths must be sorted)"
            raise ImageError(f"image path {path!r} {problem}")
        previous = key
        files.add(path)
        parts = path.split("/")
        directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clashes = sorted(files & directories)
    if clashes:
        raise ImageError(f"image path {clashes[0]!r} is both a file and a directory")
