"""SealedBlobStore: where the host keeps the blobs its enclaves sealed (the EXIT_STORE_SEALED / EXIT_LOAD_SEALED
host calls), one file per name:

    DIR/<name>.sealed      mode 0600, in DIR, mode 0700

The host only ever holds sealed bytes: the enclave side refuses to send anything that is not a sealed blob, and
what the host returns is verified by `unseal` inside the enclave, so this store needs no secrecy of its own. It does
need care, because the names come from the enclave and become file names: a name is one plain file name (no
separator, no "..", no leading dot, no control character, at most MAX_SEALED_NAME_LENGTH characters), files are
written under a temporary name and renamed into place (a crash leaves the old blob or the new one, never half of
one), symbolic links planted in the directory are not followed, and sizes are bounded on the way in and out.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from asylo._files import FileTooLargeError, NotRegularFileError, private_directory, read_regular_file, write_new_file
from asylo.primitives.selectors import MAX_SEALED_BLOB_SIZE, MAX_SEALED_NAME_LENGTH
from asylo.status import DataLossError, FailedPreconditionError, InvalidArgumentError

SEALED_SUFFIX = ".sealed"
# Portable file-name characters only: every name is then also safe in a log line and on any file system.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_sealed_name(name: str) -> str:
    """Return `name` if it can name a sealed blob; `InvalidArgumentError` saying why not otherwise."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("sealed blob name is empty")
    if len(name) > MAX_SEALED_NAME_LENGTH:
        raise InvalidArgumentError(f"sealed blob name is {len(name)} characters long, over the limit of "
                                   f"{MAX_SEALED_NAME_LENGTH}")
    if ".." in name:
        raise InvalidArgumentError(f"sealed blob name {name!r} contains '..'")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(f"sealed blob name {name!r} must be letters, digits, '_', '.' and '-', not "
                                   f"starting with '.' or '-' (no path separators or control characters)")
    return name


class SealedBlobStore:
    """A directory of sealed blobs, created (mode 0700) if missing; see the module doc for the rules."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = private_directory(Path(directory), "the sealed-blob store", parents=True)

    def path_for(self, name: str) -> Path:
        return self.directory / f"{check_sealed_name(name)}{SEALED_SUFFIX}"

    def store(self, name: str, blob: bytes) -> None:
        """Keep `blob` under `name`, replacing what was there (atomically)."""
        target = self.path_for(name)
        if not isinstance(blob, bytes):
            raise InvalidArgumentError(f"a sealed blob is bytes, got {type(blob).__name__}")
        if len(blob) > MAX_SEALED_BLOB_SIZE:
            raise InvalidArgumentError(f"sealed blob {name!r} is {len(blob)} bytes, over the limit of "
                                       f"{MAX_SEALED_BLOB_SIZE}")
        temporary = self.directory / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            write_new_file(temporary, blob, 0o600)
            os.replace(temporary, target)  # replaces a planted symlink itself, never what it points to
        except OSError as exc:
            raise FailedPreconditionError(f"{target}: cannot store the sealed blob: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                temporary.unlink()

    def load(self, name: str) -> bytes | None:
        """The blob kept under `name`, or None if there is none."""
        target = self.path_for(name)
        try:
            # A symlink planted where a blob should be is refused, not followed.
            data, _ = read_regular_file(target, MAX_SEALED_BLOB_SIZE)
        except FileNotFoundError:
            return None
        except NotRegularFileError:
            raise FailedPreconditionError(f"{target}: not a regular file") from None
        except FileTooLargeError:
            raise DataLossError(f"{target}: larger than a sealed blob can be ({MAX_SEALED_BLOB_SIZE} bytes)") from None
        except OSError as exc:
            raise FailedPreconditionError(f"{target}: cannot read the sealed blob: {exc.strerror or exc}") from None
        return data

    def __repr__(self) -> str:
        return f"SealedBlobStore({str(self.directory)!r})"
