"""A TEST DOUBLE of Linux's configfs-tsm report interface: a FUSE filesystem that behaves as configfs-tsm does.

Not hardware, and not the kernel: it follows the file protocol of Documentation/ABI/testing/configfs-tsm-report
so that pyasylo's attester (asylo.identity.configfs_tsm) runs its real file operations against it. `mkdir
report/NAME` makes a report directory already holding its attribute files (inblob, outblob, auxblob, provider,
generation, privlevel, privlevel_floor); each write to inblob or privlevel bumps `generation`; reading `outblob`
makes the report from the inblob written; `rmdir` removes the directory with its attributes, as configfs does.

How the report is made (one of):
    --echo                 outblob = b"REPORT:" + inblob (for protocol tests)
    --snp-chain DIR        an SEV-SNP report signed by the test chain saved in DIR (tests/snp_test_chain.py),
                           auxblob = that chain's certificate table
    --fixed-outblob FILE   the file's bytes whatever the inblob (say, a genuine sample), auxblob from
                           --fixed-auxblob FILE
Faults, for the attester's refusals: --race (generation moves while outblob is read, as when another writer
interferes), --other-writer (another write lands right after ours, before we read), --outblob-size N (pad outblob
to N bytes), --omit NAME (the directory lacks that attribute), --no-provider (mkdir fails with ENXIO, as when no
attestation driver is bound).

Run as a process (tests start it with `python tests/configfs_tsm_double.py MOUNTPOINT ...`; it prints "mounted"
once the mount is up and exits when unmounted). Needs /dev/fuse and libfuse3 (Debian's fuse3).
"""

from __future__ import annotations

import argparse
import errno
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import mfusepy as fuse

ATTRIBUTES_WRITABLE = ("inblob", "privlevel")
ATTRIBUTES_READABLE = ("outblob", "auxblob", "provider", "generation", "privlevel_floor")


class Report:
    def __init__(self, provider: str) -> None:
        self.values: dict[str, bytes] = {"inblob": b"", "privlevel": b"0", "provider": provider.encode() + b"\n",
                                         "privlevel_floor": b"0\n"}
        self.generation = 0
        self.outblob: bytes | None = None


class ConfigfsTsmDouble(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, make_report: Callable[[bytes], tuple[bytes, bytes]], *, provider: str, race: bool,
                 outblob_size: int | None, omit: set[str], no_provider: bool = False,
                 other_writer: bool = False) -> None:
        self._no_provider = no_provider
        self._other_writer = other_writer
        self._make = make_report
        self._provider = provider
        self._race = race
        self._outblob_size = outblob_size
        self._omit = omit
        self._reports: dict[str, Report] = {}
        self._lock = threading.Lock()

    # -- the tree: / -> report/ -> NAME/ -> attributes --------------------------------------------------------

    def _split(self, path: str) -> list[str]:
        return [part for part in path.split("/") if part]

    def _attributes(self) -> list[str]:
        return [name for name in (*ATTRIBUTES_WRITABLE, *ATTRIBUTES_READABLE) if name not in self._omit]

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        parts = self._split(path)
        now = time.time_ns()
        directory = {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_ctime": now, "st_mtime": now,
                     "st_atime": now}
        with self._lock:
            if len(parts) == 0 or parts == ["report"] or (len(parts) == 2 and parts[0] == "report"
                                                           and parts[1] in self._reports):
                return directory
            if len(parts) == 3 and parts[0] == "report" and parts[1] in self._reports \
                    and parts[2] in self._attributes():
                mode = 0o200 if parts[2] in ATTRIBUTES_WRITABLE else 0o444
                # configfs reports a page for every attribute, whatever its content.
                return {"st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": 4096, "st_ctime": now,
                        "st_mtime": now, "st_atime": now}
        raise fuse.FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh: int) -> list[str]:
        parts = self._split(path)
        with self._lock:
            if not parts:
                return [".", "..", "report"]
            if parts == ["report"]:
                return [".", "..", *self._reports]
            if len(parts) == 2 and parts[1] in self._reports:
                return [".", "..", *self._attributes()]
        raise fuse.FuseOSError(errno.ENOENT)

    def mkdir(self, path: str, mode: int) -> None:
        parts = self._split(path)
        if len(parts) != 2 or parts[0] != "report":
            raise fuse.FuseOSError(errno.EPERM)
        if self._no_provider:
            raise fuse.FuseOSError(errno.ENXIO)  # as configfs-tsm does with no sev_guest/tdx_guest driver bound
        with self._lock:
            if parts[1] in self._reports:
                raise fuse.FuseOSError(errno.EEXIST)
            self._reports[parts[1]] = Report(self._provider)

    def rmdir(self, path: str) -> None:
        parts = self._split(path)
        with self._lock:
            if len(parts) != 2 or parts[1] not in self._reports:
                raise fuse.FuseOSError(errno.ENOENT)
            del self._reports[parts[1]]

    def _report(self, path: str) -> tuple[Report, str]:
        parts = self._split(path)
        if len(parts) != 3 or parts[1] not in self._reports or parts[2] not in self._attributes():
            raise fuse.FuseOSError(errno.ENOENT)
        return self._reports[parts[1]], parts[2]

    def open(self, path: str, flags: int) -> int:
        with self._lock:
            self._report(path)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        with self._lock:
            self._report(path)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._lock:
            report, name = self._report(path)
            if name not in ATTRIBUTES_WRITABLE:
                raise fuse.FuseOSError(errno.EACCES)
            if name == "inblob" and len(data) > 64:
                raise fuse.FuseOSError(errno.EINVAL)
            report.values[name] = bytes(data)
            report.generation += 2 if self._other_writer else 1  # another writer's write right after ours
            report.outblob = None
            return len(data)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._lock:
            report, name = self._report(path)
            if name in ATTRIBUTES_WRITABLE:
                raise fuse.FuseOSError(errno.EACCES)
            if name == "generation":
                value = f"{report.generation}\n".encode()
            elif name in ("outblob", "auxblob"):
                if report.outblob is None or report.values.get("auxblob") is None:
                    outblob, auxblob = self._make(report.values["inblob"])
                    if self._outblob_size is not None:
                        outblob = outblob.ljust(self._outblob_size, b"\0")
                    report.outblob, report.values["auxblob"] = outblob, auxblob
                    if self._race and name == "outblob":
                        report.generation += 1  # another writer, between our write and our read
                value = report.outblob if name == "outblob" else report.values["auxblob"]
                if name == "auxblob" and not value:
                    raise fuse.FuseOSError(errno.ENXIO)  # as sev_guest does when the host gave no certificates
            else:
                value = report.values[name]
            return value[offset:offset + size]


def _report_maker(args: argparse.Namespace) -> Callable[[bytes], tuple[bytes, bytes]]:
    if args.echo:
        return lambda inblob: (b"REPORT:" + inblob, b"")
    if args.snp_chain is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from snp_test_chain import SnpTestChain  # noqa: PLC0415 - a test module beside this one

        chain = SnpTestChain.load(args.snp_chain)
        measurement = bytes.fromhex(args.snp_measurement) if args.snp_measurement else bytes(48)
        return lambda inblob: (chain.make_report(inblob.ljust(64, b"\0"), measurement=measurement),
                               chain.cert_table())
    if args.fixed_outblob is not None:
        outblob = Path(args.fixed_outblob).read_bytes()
        auxblob = Path(args.fixed_auxblob).read_bytes() if args.fixed_auxblob else b""
        return lambda inblob: (outblob, auxblob)
    raise SystemExit("give --echo, --snp-chain or --fixed-outblob")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mountpoint")
    parser.add_argument("--provider", default="sev_guest")
    parser.add_argument("--echo", action="store_true")
    parser.add_argument("--snp-chain")
    parser.add_argument("--snp-measurement", help="hex, 48 bytes: the launch measurement the test reports carry")
    parser.add_argument("--fixed-outblob")
    parser.add_argument("--fixed-auxblob")
    parser.add_argument("--race", action="store_true")
    parser.add_argument("--outblob-size", type=int)
    parser.add_argument("--omit", action="append", default=[])
    parser.add_argument("--no-provider", action="store_true")
    parser.add_argument("--other-writer", action="store_true")
    args = parser.parse_args()
    operations = ConfigfsTsmDouble(_report_maker(args), provider=args.provider, race=args.race,
                                   outblob_size=args.outblob_size, omit=set(args.omit),
                                   no_provider=args.no_provider, other_writer=args.other_writer)
    threading.Thread(target=_say_mounted, args=(Path(args.mountpoint),), daemon=True).start()
    fuse.FUSE(operations, args.mountpoint, foreground=True, direct_io=True, allow_other=False)


def _say_mounted(mountpoint: Path) -> None:
    for _ in range(200):
        if mountpoint.is_mount():
            print("mounted", flush=True)
            return
        time.sleep(0.025)


if __name__ == "__main__":
    main()
