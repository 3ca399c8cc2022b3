"""The attester of SEV-SNP and TDX guests: Linux's configfs-tsm report interface (Linux 6.7 and later).

The kernel's file protocol (Documentation/ABI/testing/configfs-tsm-report): make a directory under
`/sys/kernel/config/tsm/report/`, and the kernel fills it with attribute files; write the report data to `inblob`
(at most 64 bytes, in one write); read `outblob` (the SNP report, or the TDX quote, made on that read: a TDX quote
usually takes seconds) and `auxblob` (SNP: the certificate table the hypervisor supplies, if any); `provider` names
the driver ("sev_guest", "tdx_guest"); `generation` counts the writes to the directory's inputs, so a reader who
sees it change between its write and its reads knows that another writer interfered and the blob is not for its
data. Then remove the directory.

Each request here gets a fresh directory of its own, so concurrent requests (two sessions starting at once) never
share one; the generation is still checked, because any process with access to configfs can write to ours.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asylo.status import AttestationError, FailedPreconditionError, InvalidArgumentError

DEFAULT_CONFIGFS_TSM = Path("/sys/kernel/config/tsm/report")
#: The kernel takes at most 64 bytes of report data (TSM_INBLOB_MAX), exactly what SNP and TDX sign.
INBLOB_SIZE = 64
#: The kernel's own bound on outblob and auxblob (TSM_OUTBLOB_MAX, 32 KiB in include/linux/tsm.h); an SNP report
#: is 1184 bytes, a TDX quote with its PCK chain about 5 KiB, an SNP certificate table about 4 KiB.
MAX_BLOB_SIZE = 32 * 1024
#: `provider` is a driver name and `generation` a decimal counter: a few bytes each.
MAX_ATTRIBUTE_SIZE = 64
#: The providers this release knows, and the platform kind each attests.
PROVIDER_KINDS = {"sev_guest": "snp", "tdx_guest": "tdx"}


class NoTsmProviderError(FailedPreconditionError):
    """configfs-tsm is there but no attestation driver serves it (the kernel answers mkdir with ENXIO)."""


@dataclass(frozen=True)
class TsmReport:
    """What one request returned: the report (`outblob`), the auxiliary blob (empty if none) and the provider."""

    outblob: bytes
    auxblob: bytes
    provider: str


class ConfigfsTsm:
    """Requests attestation reports through configfs-tsm at `root`.

    `provider`: the driver the caller expects ("sev_guest", "tdx_guest"); a report from another is refused, since
    the host would be sent evidence of a kind it did not ask for. `privlevel`: SEV's VMPL to request (None: the
    kernel's floor).
    """

    __slots__ = ("privlevel", "provider", "root")

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CONFIGFS_TSM, *, provider: str | None = None,
                 privlevel: int | None = None) -> None:
        if provider is not None and provider not in PROVIDER_KINDS:
            raise InvalidArgumentError(f"unknown configfs-tsm provider {provider!r} (known: "
                                       f"{', '.join(sorted(PROVIDER_KINDS))})")
        if privlevel is not None and not (isinstance(privlevel, int) and 0 <= privlevel <= 3):
            raise InvalidArgumentError(f"privlevel must be 0..3 (an SEV VMPL), got {privlevel!r}")
        self.root = Path(root)
        self.provider = provider
        self.privlevel = privlevel

    def present(self) -> bool:
        """Whether configfs-tsm's report directory exists here (a confidential VM with Linux 6.7 or later)."""
        return self.root.is_dir()

    def read_provider(self) -> str:
        """The provider behind configfs-tsm, read from a fresh report directory (no report is made)."""
        with self._entry() as entry:
            return _read_provider(entry)

    def report(self, inblob: bytes) -> TsmReport:
        """A report over `inblob` (exactly 64 bytes). AttestationError if the kernel's answer is unusable (the
        generation moved, a blob is missing or oversized); FailedPreconditionError if there is no configfs-tsm or
        its provider is not the one expected."""
        if not isinstance(inblob, bytes) or len(inblob) != INBLOB_SIZE:
            raise InvalidArgumentError(f"configfs-tsm report data must be exactly {INBLOB_SIZE} bytes")
        with self._entry() as entry:
            provider = _read_provider(entry)
            if self.provider is not None and provider != self.provider:
                raise FailedPreconditionError(
                    f"configfs-tsm at {self.root} is served by {provider!r}, not {self.provider!r}: this machine is "
                    f"not the kind of confidential VM the proxy was told it is (--platform)"
                )
            writes = 0
            if self.privlevel is not None:
                _write_attribute(entry / "privlevel", str(self.privlevel).encode("ascii"))
                writes += 1
            _write_attribute(entry / "inblob", inblob)
            writes += 1
            before = _read_generation(entry)
            if before != writes:
                raise AttestationError(f"configfs-tsm report {entry.name}: generation is {before} after our "
                                       f"{writes} write(s): another writer changed the request")
            outblob = _read_blob(entry / "outblob", required=True)
            auxblob = _read_blob(entry / "auxblob", required=False)
            after = _read_generation(entry)
            if after != before:
                raise AttestationError(f"configfs-tsm report {entry.name}: generation moved from {before} to {after} "
                                       f"while the report was read: another writer interfered; the report may "
                                       f"not be over our data")
            if not outblob:
                raise AttestationError(f"configfs-tsm report {entry.name}: the kernel returned an empty outblob")
            return TsmReport(outblob, auxblob, provider)

    @contextlib.contextmanager
    def _entry(self) -> Iterator[Path]:
        if not self.present():
            raise FailedPreconditionError(
                f"configfs-tsm not found at {self.root}: this is not an SEV-SNP or TDX guest with Linux 6.7 or later, "
                f"or configfs is not mounted (mount -t configfs none /sys/kernel/config)"
            )
        entry = self.root / f"asylo-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            entry.mkdir()
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise NoTsmProviderError(f"configfs-tsm at {self.root} has no attestation provider: the sev_guest or "
                                    f"tdx_guest driver is not loaded") from None
            raise FailedPreconditionError(f"cannot make a configfs-tsm report at {entry}: {exc.strerror}") from None
        try:
            yield entry
        finally:
            # configfs removes a report directory with its attribute files in it; anything else is a leak to say.
            try:
                entry.rmdir()
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise FailedPreconditionError(
                        f"cannot remove the configfs-tsm report {entry}: {exc.strerror}") from None

    def __repr__(self) -> str:
        return f"ConfigfsTsm({self.root}, provider={self.provider})"


def _read_provider(entry: Path) -> str:
    raw = _read_limited(entry / "provider", MAX_ATTRIBUTE_SIZE, required=True)
    try:
        return raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise AttestationError(f"configfs-tsm provider in {entry.name} is not text") from None


def _read_generation(entry: Path) -> int:
    raw = _read_limited(entry / "generation", MAX_ATTRIBUTE_SIZE, required=True).strip()
    if not raw.isdigit():
        raise AttestationError(f"configfs-tsm generation in {entry.name} is not a counter: {raw[:16]!r}")
    return int(raw)


def _read_blob(path: Path, *, required: bool) -> bytes:
    return _read_limited(path, MAX_BLOB_SIZE, required=required)


def _read_limited(path: Path, limit: int, *, required: bool) -> bytes:
    """At most `limit` bytes of `path`; an attribute larger than that is refused, not truncated."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if required:
            raise AttestationError(f"configfs-tsm has no {path.name} in {path.parent.name}") from None
        return b""
    except OSError as exc:
        raise AttestationError(f"cannot read configfs-tsm {path.name}: {exc.strerror}") from None
    try:
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise AttestationError(f"configfs-tsm {path.name} is over {limit} bytes")
    except OSError as exc:
        if exc.errno == errno.ENXIO and not required:  # an auxblob the provider does not fill
            return b""
        raise AttestationError(f"cannot read configfs-tsm {path.name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _write_attribute(path: Path, data: bytes) -> None:
    # One write, as configfs takes a binary attribute's value: a short write would be a different request.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise AttestationError(f"configfs-tsm has no {path.name} in {path.parent.name}") from None
    except OSError as exc:
        raise AttestationError(f"cannot open configfs-tsm {path.name}: {exc.strerror}") from None
    try:
        written = os.write(fd, data)
    except OSError as exc:
        raise AttestationError(f"configfs-tsm refused {path.name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if written != len(data):
        raise AttestationError(f"configfs-tsm took {written} of {len(data)} bytes of {path.name}")
