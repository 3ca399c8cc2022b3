"""Small file helpers shared by the modules that write keys, read PEM files and keep private state: exact modes,
bounded reads, private directories."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from asylo.status import AsyloError, FailedPreconditionError


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


class NotRegularFileError(Exception):
    """`read_regular_file` found a directory, a FIFO, a device or a socket where a file should be."""


class FileTooLargeError(Exception):
    """`read_regular_file` found more than its limit."""


def read_regular_file(path: Path, limit: int, *, follow_symlinks: bool = False) -> tuple[bytes, os.stat_result]:
    """The contents (at most `limit` bytes) and status of the regular file at `path`, for files that others may
    have tampered with (uploads, keys, sealed blobs, enclave sources, images).

    The name is opened without following a symbolic link (O_NOFOLLOW: a link planted in its place fails with ELOOP;
    `follow_symlinks` for a path a user named, which may well be a link) and without blocking on a FIFO
    (O_NONBLOCK: no effect on a regular file), and everything is checked on the open descriptor, so the file
    checked is the file read even if the name changes meanwhile. Raises OSError for what the system refuses
    (FileNotFoundError included), NotRegularFileError, or FileTooLargeError.
    """
    no_follow = 0 if follow_symlinks else os.O_NOFOLLOW
    fd = os.open(path, os.O_RDONLY | no_follow | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)  # before any file object: opening one on a directory fails with a vaguer error
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(f"{path}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLargeError(f"{path}: larger than {limit} bytes")
    return data, info


def read_bounded(path: str | os.PathLike[str], limit: int, what: str, error: type[AsyloError]) -> tuple[Path, bytes]:
    """Read at most `limit` bytes of a small file (a key, a certificate); `error` names the file and what failed."""
    file = Path(path)
    try:
        # The user named the path, so a symlink is followed; a FIFO or a device is refused, not waited on.
        data, _ = read_regular_file(file, limit, follow_symlinks=True)
    except FileNotFoundError as exc:
        raise error(f"{file}: {what} file not found") from exc
    except NotRegularFileError:
        raise error(f"{file}: cannot read {what} file: not a regular file") from None
    except FileTooLargeError:
        raise error(f"{file}: not a {what} file (larger than {limit} bytes)") from None
    except OSError as exc:
        raise error(f"{file}: cannot read {what} file: {exc.strerror or exc}") from exc
    return file, data


def private_directory(path: Path, what: str, *, parents: bool = False) -> Path:
    """Create `path` if it is missing and make it exactly 0700; return it. `what` (say "the image store") names the
    user of the directory in errors, which are FailedPreconditionError.

    Refused rather than repaired: a symbolic link or anything but a directory in its place (O_NOFOLLOW: a link
    would send our writes outside the state directory), a directory of another user's, and one that others could
    write to — whatever they planted there (a pid record we would kill, a file we would serve) cannot be trusted.
    A directory that others could only read is tightened: nothing in it is theirs.
    """
    try:
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        # O_NOFOLLOW with O_DIRECTORY fails a symbolic link with ENOTDIR or ELOOP, whose texts ("not a directory",
        # "too many levels of symbolic links") would puzzle for a link to a directory: say what is there.
        why = exc.strerror or str(exc)
        if exc.errno in (errno.ENOTDIR, errno.ELOOP) and path.is_symlink():
            why = "it is a symbolic link"
        raise FailedPreconditionError(f"{path}: not a directory {what} can use: {why}") from None
    try:
        info = os.fstat(fd)  # of the directory opened, not of whatever the name points to by now
        if info.st_uid != os.geteuid():
            raise FailedPreconditionError(f"{path}: {what} needs a directory of its own user's, not of uid "
                                          f"{info.st_uid}")
        if info.st_mode & 0o022:
            raise FailedPreconditionError(f"{path} must be a directory of this user's that nobody else can write "
                                          f"to (it has mode {stat.S_IMODE(info.st_mode):04o}); {what} does not use "
                                          f"one that others could have written into (check what is in it, then: "
                                          f"chmod 700 {path})")
        os.fchmod(fd, 0o700)  # mkdir's mode passes through the umask, and an existing directory may be wider
    finally:
        os.close(fd)
    return path
