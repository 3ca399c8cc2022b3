"""Where the simulated platform keeps its secrets: a per-user state directory holding one key file.

The key file holds the platform's Ed25519 signing key (its attestation root) and a separate 32-byte sealing root,
as two PEM blocks. Separate secrets, so that nothing learned about one use (signatures) bears on the other
(sealing keys). The checks are the ones ssh makes of a private key: a regular file, owned by this user, with no
group or other permission bits; and a directory nobody else can write to, since whoever can replace the file can
choose the platform key.

Creation is atomic and safe when several processes start at once: each writes a complete file under a private
temporary name and hard-links it into place, which fails rather than overwrites if another process won, and then
everyone reads the one file that is there.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from asylo._files import FileTooLargeError, NotRegularFileError, private_directory, read_regular_file, write_new_file
from asylo.status import DataLossError, FailedPreconditionError

DEFAULT_SIM_STATE_ENV = "ASYLO_SIM_PLATFORM_DIR"
KEY_FILENAME = "platform-key.pem"
SEALING_ROOT_SIZE = 32
# The file is about 300 bytes; the bound keeps a wrong path (a log, a device) from being read whole.
_MAX_KEY_FILE_SIZE = 8 * 1024
_SEALING_ROOT_LABEL = "ASYLO SIM SEALING ROOT"
_HEADER = (
    "# pyasylo SIMULATED platform key: for development and tests only; it protects nothing the way hardware does.\n"
)
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\n([A-Za-z0-9+/=\n]+?)-----END \1-----\n?")


def default_sim_state_dir() -> Path:
    """$ASYLO_SIM_PLATFORM_DIR, else $XDG_STATE_HOME/asylo/sim-platform, else ~/.local/state/asylo/sim-platform."""
    override = os.environ.get(DEFAULT_SIM_STATE_ENV)
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "asylo" / "sim-platform"
    return Path.home() / ".local" / "state" / "asylo" / "sim-platform"


def load_or_create_secrets(state_dir: Path) -> tuple[Ed25519PrivateKey, bytes, Path]:
    """(signing key, sealing root, key file path) from `state_dir`, creating the directory and file if needed."""
    private_directory(state_dir, "the simulated platform", parents=True)
    path = state_dir / KEY_FILENAME
    loaded = _read_key_file(path)
    if loaded is None:
        _create_key_file(path)
        loaded = _read_key_file(path)
        if loaded is None:  # created a moment ago and gone already: someone is deleting it under us
            raise FailedPreconditionError(f"{path}: simulated platform key file disappeared while being created")
    signing_key, sealing_root = loaded
    return signing_key, sealing_root, path


def encode_key_file(signing_key: Ed25519PrivateKey, sealing_root: bytes) -> bytes:
    pem = signing_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    root = base64.encodebytes(sealing_root).decode("ascii")
    return f"{_HEADER}{pem}-----BEGIN {_SEALING_ROOT_LABEL}-----\n{root}-----END {_SEALING_ROOT_LABEL}-----\n".encode()


def decode_key_file(path: Path, data: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    def corrupt(why: str) -> DataLossError:
        return DataLossError(
            f"{path}: not a simulated platform key file ({why}); move it away to create a new platform key "
            "(hosts that trusted the old one must then trust the new fingerprint)"
        )

    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise corrupt("not ASCII") from exc
    blocks = {label: body for label, body in _PEM_BLOCK.findall(text)}
    if set(blocks) != {"PRIVATE KEY", _SEALING_ROOT_LABEL}:
        raise corrupt("expected a PRIVATE KEY and an " + _SEALING_ROOT_LABEL + " block")
    try:
        signing_key = serialization.load_der_private_key(base64.b64decode(blocks["PRIVATE KEY"]), password=None)
        sealing_root = base64.b64decode(blocks[_SEALING_ROOT_LABEL], validate=False)
    except ValueError as exc:
        raise corrupt(f"cannot decode: {exc}") from exc
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise corrupt("the private key is not Ed25519")
    if len(sealing_root) != SEALING_ROOT_SIZE:
        raise corrupt(f"the sealing root is {len(sealing_root)} bytes, not {SEALING_ROOT_SIZE}")
    return signing_key, sealing_root


def _read_key_file(path: Path) -> tuple[Ed25519PrivateKey, bytes] | None:
    """The secrets in `path`, or None if there is no such file."""
    try:
        # A symlink planted where the key should be is refused, not followed.
        data, info = read_regular_file(path, _MAX_KEY_FILE_SIZE)
    except FileNotFoundError:
        return None
    except NotRegularFileError:
        raise FailedPreconditionError(f"{path}: simulated platform key file is not a regular file") from None
    except FileTooLargeError:
        raise DataLossError(
            f"{path}: not a simulated platform key file (larger than {_MAX_KEY_FILE_SIZE} bytes)"
        ) from None
    except OSError as exc:
        raise FailedPreconditionError(
            f"{path}: cannot open the simulated platform key file: {exc.strerror or exc}"
        ) from exc
    if info.st_uid != os.geteuid():
        raise FailedPreconditionError(f"{path}: simulated platform key file belongs to another user")
    if info.st_mode & 0o077:
        raise FailedPreconditionError(
            f"{path}: simulated platform key file is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); it holds the platform's private key: "
            f"fix with: chmod 600 {path}"
        )
    return decode_key_file(path, data)


def _create_key_file(path: Path) -> None:
    data = encode_key_file(Ed25519PrivateKey.generate(), secrets.token_bytes(SEALING_ROOT_SIZE))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        write_new_file(temporary, data, 0o600)
        # link() never replaces an existing file: if another process got there first, its key stands.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    except OSError as exc:
        raise FailedPreconditionError(
            f"{path}: cannot create the simulated platform key file: {exc.strerror or exc}"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
