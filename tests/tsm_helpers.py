"""Starting and stopping the configfs-tsm TEST DOUBLE (tests/configfs_tsm_double.py, a FUSE filesystem)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

DOUBLE = Path(__file__).parent / "configfs_tsm_double.py"


def fuse_unavailable() -> str | None:
    """Why a FUSE filesystem cannot be mounted here, or None. (CI installs Debian's fuse3 and runs as root.)"""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian's fuse3)"
    try:
        import mfusepy  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        return f"mfusepy cannot load libfuse: {exc}"
    return None


@contextlib.contextmanager
def configfs_tsm_double(directory: Path, *args: str) -> Iterator[Path]:
    """Mount the double in `directory`/mnt with `args` (see its module doc); yield its report root (the path that
    stands for /sys/kernel/config/tsm/report); unmount it and reap the process afterwards."""
    reason = fuse_unavailable()
    if reason is not None:
        pytest.skip(f"the configfs-tsm double needs FUSE: {reason}")
    mountpoint = directory / "mnt"
    mountpoint.mkdir()
    process = subprocess.Popen([sys.executable, str(DOUBLE), str(mountpoint), *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if line.strip() != "mounted":
            process.kill()
            _, err = process.communicate(timeout=10)
            raise RuntimeError(f"the configfs-tsm double did not mount: {line!r} {err[-2000:]}")
        yield mountpoint / "report"
    finally:
        if mountpoint.is_mount():
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False, capture_output=True)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
