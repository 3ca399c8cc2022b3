"""The provision server's image store: the images it may run, and the only way a new one gets in.

Images come from two places: the operator's directory, which the server only ever reads, and uploads, which it
keeps under its state directory:

    state_dir/images/<name>.aimg    committed uploads (directory 0700, files 0600)
    state_dir/uploads/<random>.part uploads in progress (0700 / 0600)

Whatever the source, an image is served only after `load_image` verified its measurement and signature *and* its
signer is one of the trusted ones; anything else is refused (an upload) or skipped with a warning (a file found at
start-up). An upload is written to its own partial file while its SHA-256 is computed, then checked (size, digest,
signature, signer) and linked under its final name in one step, so the image directory only ever holds complete,
verified images. A failed or abandoned upload removes its partial file: a failed operation changes nothing on disk.

Uploads cannot fill the disk: an image has a size limit, the uploaded images together a quota (`max_store_size`,
counting the uploads in progress at their declared size, since their partial files take that much) and a count
(`max_images`), and only so many uploads run at once. The same bytes uploaded under a second name take no more
space: the new name is a hard link to the file already stored. Every refusal of a limit is a LimitExceededError
whose reason the metrics count.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import io
import logging
import os
import secrets
import threading
import unicodedata
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from asylo._files import FileTooLargeError, NotRegularFileError, private_directory, read_bounded, read_regular_file
from asylo.image import ImageError, VerifiedImage, limits, load_image, public_key_bytes, signer_id
from asylo.image.measurement import MEASUREMENT_SIZE
from asylo.provision_server.limits import LimitExceededError
from asylo.status import (
    AlreadyExistsError,
    AsyloError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)

_log = logging.getLogger(__name__)

IMAGE_SUFFIX = ".aimg"
MAX_IMAGE_NAME_LENGTH = 128
# A name becomes "<name>.aimg"; most file systems allow 255 bytes per file name, and 128 characters of UTF-8 can
# take 512, so the encoded length is bounded too (else a valid-looking name fails deep inside commit).
_MAX_IMAGE_NAME_BYTES = 255 - len(IMAGE_SUFFIX)
_SHA256_SIZE = 32
_PARTIAL_SUFFIX = ".part"
# A PEM Ed25519 public key is about 110 bytes; the bound only stops a wrong path from being read whole.
_MAX_PUBLIC_KEY_FILE_SIZE = 64 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: Defaults of the store's limits (the provision server's options override them).
DEFAULT_MAX_STORE_SIZE = 1 << 30
DEFAULT_MAX_IMAGES = 256


def check_image_name(name: str) -> None:
    """Refuse a name that is not one plain file name: names become file names in the image directory."""
    if not name:
        raise InvalidArgumentError("image name is empty")
    if len(name) > MAX_IMAGE_NAME_LENGTH:
        raise InvalidArgumentError(
            f"image name is {len(name)} characters long, over the limit of {MAX_IMAGE_NAME_LENGTH}")
    if "/" in name or "\\" in name:
        raise InvalidArgumentError(f"image name {name!r} contains a path separator")
    if ".." in name:
        raise InvalidArgumentError(f"image name {name!r} contains '..'")
    if name.startswith("."):
        raise InvalidArgumentError(f"image name {name!r} starts with '.' (hidden files are not images)")
    # NUL ends a path at the OS; other control characters (newlines) would let a name forge lines in logs.
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise InvalidArgumentError(f"image name {name!r} contains a control character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no file name can hold it
        raise InvalidArgumentError(f"image name {name!r} is not valid Unicode text") from exc
    if len(encoded) > _MAX_IMAGE_NAME_BYTES:
        raise InvalidArgumentError(
            f"image name is {len(encoded)} bytes of UTF-8, over the limit of {_MAX_IMAGE_NAME_BYTES}")


def public_key_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The public half of a signing key as PEM (SubjectPublicKeyInfo), the format `load_trusted_signer` reads.

    `asylo keygen` writes only the private key; an operator trusts a signer by its public key, so the private key
    never has to be copied to the provision server's machine.
    """
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_trusted_signer(path: str | os.PathLike[str]) -> bytes:
    """The signer id (SHA-256 of the raw key) of the Ed25519 public key in a PEM file (see `public_key_pem`)."""
    target, data = read_bounded(path, _MAX_PUBLIC_KEY_FILE_SIZE, "public key", InvalidArgumentError)
    # Said before parsing: "not a public key" alone would leave the operator guessing what was wrong.
    if b"PRIVATE KEY-----" in data:
        raise InvalidArgumentError(
            f"{target}: this is a private key; give the signer's public key (PEM) instead: a provision server "
            "never needs a signer's private key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidArgumentError(f"{target}: not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidArgumentError(f"{target}: not an Ed25519 public key (got {type(key).__name__})")
    return signer_id(public_key_bytes(key))


@dataclass(frozen=True)
class StoredImage:
    """An image the store serves: verified, and signed by a trusted signer when it was added."""

    name: str
    path: Path  # the image file; whoever loads it verifies it again (the file is the store's word, not a proof)
    measurement: bytes
    signer: bytes  # signer id, as `VerifiedImage.signer`
    size: int
    sha256: bytes  # of the whole file: how an upload of the very same bytes is recognised


class ImageStore:
    """The images a provision server may run: the operator's directory (read-only) plus uploads under the state
    directory.

    `trusted_signers` are signer ids (`VerifiedImage.signer`). Every image is at most `max_image_size` bytes, at
    most `max_pending_uploads` uploads are in progress at once (each may hold that much disk), and the uploaded
    images — not the operator's, which the store never wrote — take at most `max_store_size` bytes (uploads in
    progress included) and number at most `max_images`. Thread-safe: the gRPC service calls it from executor
    threads and reads it from the event loop.
    """

    def __init__(self, state_dir: Path, *, trusted_signers: Sequence[bytes], operator_dir: Path | None = None,
                 max_image_size: int = 64 * 1024 * 1024, max_pending_uploads: int = 16,
                 max_store_size: int = DEFAULT_MAX_STORE_SIZE, max_images: int = DEFAULT_MAX_IMAGES) -> None:
        if not 0 < max_image_size <= limits.MAX_IMAGE_SIZE:
            # load_image refuses anything bigger, so a higher limit would only accept uploads to fail them at commit.
            raise InvalidArgumentError(
                f"the image size limit must be between 1 and {limits.MAX_IMAGE_SIZE} bytes, got {max_image_size}")
        if max_pending_uploads < 1:
            raise InvalidArgumentError(f"max_pending_uploads must be at least 1, got {max_pending_uploads}")
        if max_store_size < 1 or max_images < 1:
            raise InvalidArgumentError(f"max_store_size and max_images must be at least 1, got {max_store_size} and "
                                       f"{max_images}")
        for signer in trusted_signers:
            if not isinstance(signer, bytes) or len(signer) != _SHA256_SIZE:
                raise InvalidArgumentError(f"a trusted signer is a 32-byte signer id, got {signer!r}")
        if not trusted_signers:
            raise InvalidArgumentError("no trusted signers: the store would serve no image")
        self._trusted = frozenset(trusted_signers)
        self._max_image_size = max_image_size
        self._max_pending_uploads = max_pending_uploads
        self._max_store_size = max_store_size
        self._max_images = max_images
        # Reentrant because an abandoned upload's finalizer takes it, and runs on whichever thread drops the last
        # reference to the upload, which may be one that already holds it.
        self._lock = threading.RLock()
        self._images: dict[str, StoredImage] = {}
        #: The served images that are uploads (files in the image directory), by name: what the quota counts.
        self._uploaded: dict[str, StoredImage] = {}
        #: Uploads in progress: their declared sizes (reserved against the quota) and names (against the count).
        self._pending_bytes = 0
        self._pending_names: collections.Counter[str] = collections.Counter()
        private_directory(state_dir, "the image store", parents=True)
        self._images_dir = private_directory(state_dir / "images", "the image store")
        self._uploads_dir = private_directory(state_dir / "uploads", "the image store")
        _remove_leftover_uploads(self._uploads_dir)
        # The operator's images first: on a name clash with an earlier upload, the operator's configuration wins.
        if operator_dir is not None:
            self._load_directory(operator_dir)
        self._load_directory(self._images_dir, uploaded=True)

    @property
    def max_image_size(self) -> int:
        return self._max_image_size

    @property
    def uploaded_size(self) -> int:
        """Bytes the uploaded images take on disk (an image stored under several names counts once)."""
        with self._lock:
            return self._stored_bytes()

    def find(self, *, name: str | None = None, measurement: bytes | None = None) -> StoredImage:
        """The image with this name, or with this measurement (exactly one of them)."""
        if name is not None and measurement is None:
            check_image_name(name)
            with self._lock:
                image = self._images.get(name)
            if image is None:
                raise NotFoundError(f"no image named {name!r}")
            return image
        if measurement is not None and name is None:
            if len(measurement) != MEASUREMENT_SIZE:
                raise InvalidArgumentError(
                    f"a measurement is {MEASUREMENT_SIZE} bytes, got {len(measurement)}")
            with self._lock:
                matches = [image for image in self._images.values() if image.measurement == measurement]
            if not matches:
                raise NotFoundError(f"no image with measurement {measurement.hex()}")
            # The same image may be stored under two names; the answer must not depend on insertion order.
            return min(matches, key=lambda image: image.name)
        raise InvalidArgumentError("find an image by name or by measurement: exactly one of them")

    def images(self) -> list[StoredImage]:
        """Every image the store serves, sorted by name."""
        with self._lock:
            return sorted(self._images.values(), key=lambda image: image.name)

    def begin_upload(self, name: str, size: int, sha256: bytes) -> ImageUpload:
        """Start receiving an image of exactly `size` bytes with this SHA-256, to be stored under `name`.

        Everything that can be refused from the header alone is refused here, before a byte is sent.
        """
        check_image_name(name)
        if len(sha256) != _SHA256_SIZE:
            raise InvalidArgumentError(f"the image's SHA-256 is {_SHA256_SIZE} bytes, got {len(sha256)}")
        if size <= 0:
            raise InvalidArgumentError(f"the image size must be positive, got {size}")
        if size > self._max_image_size:
            raise LimitExceededError(
                f"image {name!r} is {size} bytes, over the limit of {self._max_image_size} bytes", "image_too_large")
        with self._lock:
            self._existing(name, sha256)
            pending = sum(self._pending_names.values())
            if pending >= self._max_pending_uploads:
                raise LimitExceededError(
                    f"{pending} uploads are already in progress, the limit; try again later", "pending_uploads")
            used = self._stored_bytes() + self._pending_bytes
            if used + size > self._max_store_size:
                raise LimitExceededError(
                    f"image {name!r} ({size} bytes) does not fit in the image store's quota of "
                    f"{self._max_store_size} bytes: {used} bytes are taken by uploaded images and uploads in "
                    f"progress", "store_quota")
            if name not in self._images and name not in self._pending_names:  # a new name: one more file
                count = len(self._uploaded) + sum(1 for n in self._pending_names if n not in self._images)
                if count >= self._max_images:
                    raise LimitExceededError(
                        f"the image store holds its limit of {self._max_images} uploaded images (counting uploads "
                        f"in progress); no new name can be added", "image_count")
            with _no_space_is_exhaustion():
                upload = ImageUpload(self, name, size, sha256, self._uploads_dir)
            self._pending_names[name] += 1
            self._pending_bytes += size
        return upload

    # -- for ImageUpload -----------------------------------------------------------------------------------------

    def _upload_ended(self, name: str, size: int) -> None:
        with self._lock:
            self._pending_bytes -= size
            self._pending_names[name] -= 1
            if self._pending_names[name] <= 0:
                del self._pending_names[name]

    def _stored_bytes(self) -> int:
        """Bytes of the uploaded images (lock held): once per content, since equal contents share one file."""
        return sum({image.sha256: image.size for image in self._uploaded.values()}.values())

    def _existing(self, name: str, sha256: bytes) -> StoredImage | None:
        """The stored image `name` if it has exactly these bytes; None if there is none; else AlreadyExistsError."""
        existing = self._images.get(name)
        if existing is not None and existing.sha256 != sha256:
            raise AlreadyExistsError(
                f"an image named {name!r} already exists with different content "
                f"(measurement {existing.measurement.hex()})")
        return existing

    def _verify(self, data: bytes, what: str) -> VerifiedImage:
        """The verified image, if `data` is one and a trusted signer signed it; `what` starts the error message."""
        try:
            image = load_image(data)
        except ImageError as exc:
            raise PermissionDeniedError(f"{what}: not a valid signed image: {exc.message}") from exc
        if image.signer not in self._trusted:
            raise PermissionDeniedError(f"{what}: signed by {image.signer_hex}, which is not a trusted signer")
        return image

    def _publish(self, name: str, partial: Path, image: VerifiedImage, size: int, sha256: bytes) -> StoredImage:
        """Give the verified partial file its final name and serve it (or the identical image already stored)."""
        target = self._images_dir / f"{name}{IMAGE_SUFFIX}"
        with self._lock:
            existing = self._existing(name, sha256)
            if existing is not None:
                return existing
            # The same bytes already uploaded under another name: link that file (verified as these bytes were)
            # rather than store a second copy, so aliases cost no space.
            twin = next((stored for stored in self._uploaded.values() if stored.sha256 == sha256), None)
            try:
                # A link, not a rename: it never replaces a file, so a leftover that was not served (see the
                # start-up warnings), or a name that a case-insensitive file system folds onto another, is refused.
                os.link(twin.path if twin is not None else partial, target)
            except FileExistsError as exc:
                raise AlreadyExistsError(
                    f"{target} already exists but is not served (see the server's start-up warnings); "
                    "choose another name") from exc
            try:
                _fsync_directory(self._images_dir)
            except BaseException:
                target.unlink(missing_ok=True)
                raise
            stored = StoredImage(name, target, image.measurement, image.signer, size, sha256)
            self._images[name] = stored
            self._uploaded[name] = stored
        return stored

    # -- start-up ------------------------------------------------------------------------------------------------

    def _load_directory(self, directory: Path, *, uploaded: bool = False) -> None:
        """Serve every valid `*.aimg` file in `directory`; warn about, and skip, every other one. `uploaded`: the
        directory is the store's own (its images count against the quota)."""
        try:
            with os.scandir(directory) as entries:
                names = sorted(entry.name for entry in entries if entry.name.endswith(IMAGE_SUFFIX))
        except FileNotFoundError as exc:
            raise NotFoundError(f"{directory}: image directory not found") from exc
        except OSError as exc:
            raise FailedPreconditionError(f"{directory}: cannot list image directory: {exc.strerror or exc}") from exc
        for file_name in names:
            try:
                image = self._load_file(directory / file_name)
            except AsyloError as exc:
                _log.warning("not serving %s", exc.message)
                continue
            existing = self._images.get(image.name)
            if existing is None:
                self._images[image.name] = image
                if uploaded:
                    self._uploaded[image.name] = image
            elif existing.sha256 != image.sha256:
                _log.warning("not serving %s: an image named %r is already served from %s", image.path, image.name,
                             existing.path)

    def _load_file(self, path: Path) -> StoredImage:
        """Read and verify one image file; every error message starts with the path."""
        name = path.name.removesuffix(IMAGE_SUFFIX)
        try:
            check_image_name(name)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{path}: {exc.message}") from exc
        data = _read_regular_file(path, self._max_image_size)
        image = self._verify(data, str(path))
        return StoredImage(name, path, image.measurement, image.signer, len(data), hashlib.sha256(data).digest())


class ImageUpload:
    """One image arriving in chunks, made by `ImageStore.begin_upload`: `write` each chunk, then `commit` or `abort`.

    Used as a context manager, leaving the block without committing (an exception, say) aborts it. Any failure of
    `write` or `commit` ends the upload and removes its partial file, and so does dropping the last reference to an
    upload that never ended (a service bug must not fill the disk).
    """

    def __init__(self, store: ImageStore, name: str, size: int, sha256: bytes, directory: Path) -> None:
        self.name = name
        self.size = size
        self._store = store
        self._sha256 = sha256
        self._digest = hashlib.sha256()
        self._received = 0
        # One upload may be written from an executor thread while the event loop aborts it.
        self._lock = threading.Lock()
        self._partial = directory / f"{secrets.token_hex(16)}{_PARTIAL_SUFFIX}"
        self._file = _create_private_file(self._partial)
        # Does not refer to self, so that it can run when self is garbage; it runs at most once.
        self._end = weakref.finalize(self, _discard_partial, self._file, self._partial,
                                     functools.partial(store._upload_ended, name, size))

    @property
    def received(self) -> int:
        return self._received

    def write(self, chunk: bytes) -> None:
        with self._lock:
            self._check_not_ended()
            try:
                total = self._received + len(chunk)
                if total > self._store.max_image_size:
                    raise LimitExceededError(
                        f"upload of {self.name!r} is over the limit of {self._store.max_image_size} bytes",
                        "image_too_large")
                if total > self.size:
                    # Past the declared size is past what the quota reserved for it, as well as a broken promise.
                    raise LimitExceededError(
                        f"upload of {self.name!r} is longer than its declared size of {self.size} bytes",
                        "image_too_large")
                with _no_space_is_exhaustion():
                    self._file.write(chunk)
            except BaseException:
                self._end()
                raise
            self._digest.update(chunk)
            self._received = total

    def commit(self) -> StoredImage:
        """Check the upload (size, SHA-256, signature, trusted signer) and store it under its name."""
        with self._lock:
            self._check_not_ended()
            try:
                with _no_space_is_exhaustion():
                    data = self._complete_contents()
                    image = self._store._verify(data, f"image {self.name!r} refused")
                    return self._store._publish(self.name, self._partial, image, len(data), self._sha256)
            finally:
                # After a successful publish the image has its final name as a second link; this drops the first.
                self._end()

    def abort(self) -> None:
        """End the upload and remove its partial file; does nothing if it has already ended."""
        with self._lock:
            self._end()

    def __enter__(self) -> ImageUpload:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.abort()

    def _check_not_ended(self) -> None:
        if not self._end.alive:
            raise FailedPreconditionError(f"the upload of {self.name!r} has already ended")

    def _complete_contents(self) -> bytes:
        """The uploaded bytes, read back from the partial file, once size and digest match the header."""
        if self._received != self.size:
            raise DataLossError(
                f"upload of {self.name!r} ended after {self._received} of its declared {self.size} bytes")
        actual = self._digest.digest()
        if actual != self._sha256:
            raise DataLossError(
                f"upload of {self.name!r} has SHA-256 {actual.hex()}, not the declared {self._sha256.hex()}")
        self._file.flush()
        os.fsync(self._file.fileno())  # before the link makes it an image: never a published name, empty content
        # Verify what is on disk, which is what will be served, not a copy of it kept in memory.
        self._file.seek(0)
        data = self._file.read(self.size + 1)
        if len(data) != self.size:
            raise DataLossError(f"upload of {self.name!r}: the partial file changed size while it was written")
        return data


def _create_private_file(path: Path) -> io.BufferedRandom:
    # O_EXCL|O_NOFOLLOW: never write through something planted at that name.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; make the mode exact
        return os.fdopen(fd, "w+b")
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise


def _discard_partial(file: io.BufferedRandom, path: Path, ended: Callable[[], None]) -> None:
    try:
        with contextlib.suppress(OSError):
            file.close()
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            _log.warning("could not remove partial upload %s: %s", path, exc.strerror or exc)
    finally:
        ended()


@contextlib.contextmanager
def _no_space_is_exhaustion() -> Iterator[None]:
    """A full disk is a resource limit the client can understand, not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise LimitExceededError(f"no space left for images on the provision server: {exc.strerror}",
                                     "disk_full") from exc
        raise


def _remove_leftover_uploads(directory: Path) -> None:
    """Partial files survive only a crash; no upload can resume across a restart, so they are garbage."""
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    if removed:
        _log.info("removed %d partial uploads left by an earlier run", removed)


def _read_regular_file(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file; a symlink, a directory or a device is refused, not followed."""
    try:
        data, _ = read_regular_file(path, limit)
    except NotRegularFileError:
        raise InvalidArgumentError(f"{path}: not a regular file") from None
    except FileTooLargeError:
        raise LimitExceededError(f"{path}: larger than the image size limit of {limit} bytes",
                                 "image_too_large") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgumentError(f"{path}: a symbolic link (only regular files are served)") from exc
        raise InvalidArgumentError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return data


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
