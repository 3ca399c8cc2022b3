"""Small file helpers shared by the modules that write keys and read PEM files: exact modes, bounded reads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from asylo.status import AsyloError


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with exactly `mode` and write `data`; refuse an existing file; leave nothing on failure."""
    # O_EXCL: never follow a planted symlink or write into a file someone else already holds open.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask can only remove bits; make the mode exact
        with os.fdopen(fd, "wb", closefd=False) as out:
            out.write(data)
            out.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)


def read_bounded(path: str | os.PathLike[str], limit: int, what: str, error: type[AsyloError]) -> tuple[Path, bytes]:
    """Read at most `limit` bytes of a small file (a key, a certificate); `error` names the file and what failed."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(limit + 1)
    except FileNotFoundError as exc:
        raise error(f"{file}: {what} file not found") from exc
    except OSError as exc:
        raise error(f"{file}: cannot read {what} file: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(f"{file}: not a {what} file (larger than {limit} bytes)")
    return file, data
