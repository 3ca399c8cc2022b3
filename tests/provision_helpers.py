"""A real `asylo provision-server` process for tests: started on an ephemeral port, stopped and reaped after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

READY_PREFIX = "ASYLO-PROVISION-SERVER-READY"
#: The bearer tokens of the two clients the provision-server fixtures know.
ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef01"


class ServerProcess:
    """`asylo provision-server ARGS --listen 127.0.0.1:0` with a state directory of its own."""

    def __init__(self, state_dir: Path, args: list[str], *, listen: str = "127.0.0.1:0",
                 netns: str | None = None) -> None:
        self.state_dir = state_dir
        command = [sys.executable, "-m", "asylo", "provision-server", "--listen", listen,
                   "--state-dir", str(state_dir), *args]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            raise RuntimeError(f"the provision server did not start: {line!r} {err}")
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        self.port = int(fields["port"])
        self.metrics_port = int(fields["metrics_port"]) if "metrics_port" in fields else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def proxy_pids(self) -> set[int]:
        """The proxies the server has running (it records each one's pid in its state directory)."""
        directory = self.state_dir / "proxies"
        return {int(p.name) for p in directory.iterdir() if p.name.isdigit()} if directory.is_dir() else set()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        """Stop the server with `sig`, reap it, and return what it wrote on standard error."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        _, err = self.process.communicate(timeout=timeout)
        return err


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes: it runs nothing and its parent (the server) reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    """The pids still alive after waiting up to `timeout`."""
    deadline = time.monotonic() + timeout
    alive = {pid for pid in pids if pid_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if pid_alive(pid)}
    return alive


def tree_listing(root: Path) -> list[tuple[str, int]]:
    """Every path under `root` with its mode: what "nothing changed on disk" compares."""
    return sorted((str(p.relative_to(root)), p.stat().st_mode) for p in root.rglob("*"))
