"""Child processes that listen on an ephemeral port, and the child's side of the lifeline to its parent.

The parent starts the child with pipes on its standard streams. The child listens on port 0 and prints one line,
`<ready prefix><port>`, on standard output; so parallel runs never collide over a fixed port. The parent writes
what the child must not get on its command line (a session token) to the child's standard input and keeps that pipe
open: when it closes — the parent let the child go, or died in whatever way — the child sees end of file and exits.
`asylo proxy` under local provisioning and the benchmark's raw echo server both work this way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from asylo.status import EnclaveUnavailable

_log = logging.getLogger(__name__)


class ListeningChild:
    """A started child: its pipes, the threads that read them, the port it reported, and its reaping."""

    def __init__(self, args: Sequence[str], *, ready_prefix: str, what: str, log: logging.Logger) -> None:
        self._ready_prefix = ready_prefix
        self._what = what
        self._log = log
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True, close_fds=True)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._stdout_lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        pid = self.process.pid
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"asylo-child-{pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"asylo-child-{pid}-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._released = False
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._stdout_lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._stdout_lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr_tail.append(line)
            self._log.info("[pid %d] %s", self.process.pid, line)

    def start(self, first_input: bytes, timeout: float) -> int:
        """Send `first_input` on the child's standard input (keeping the pipe open), wait for its ready line, and
        return the port; EnclaveUnavailable, with what the child said, if it exits or does not get ready in time."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(first_input)
            self.process.stdin.flush()
        except OSError:
            pass  # it died already; reported below with what it said
        while True:
            try:
                line = self._stdout_lines.get(timeout=timeout)
            except queue.Empty:
                raise EnclaveUnavailable(f"{self._what} did not start within {timeout:.0f} s{self._said()}") from None
            if line is None:
                code = self.process.wait()
                raise EnclaveUnavailable(f"{self._what} failed to start (exit code {code}){self._said()}")
            if line.startswith(self._ready_prefix):
                return int(line.removeprefix(self._ready_prefix))
            self._log.info("[pid %d] %s", self.process.pid, line)

    def _said(self) -> str:
        self._readers[1].join(1)
        tail = "\n".join(self._stderr_tail)
        return f"; it said:\n{tail}" if tail else ""

    def release(self, grace: float = 8.0) -> None:
        """Let the child go: close its pipe (it exits), and reap it, forcibly if it lingers. Idempotent."""
        with self._lock:
            if self._released:
                return
            self._released = True
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            # Closing its pipe is the child's signal to finish and exit; one that does not (stopped, wedged in
            # enclave code) is killed: SIGTERM would not reach a stopped process either.
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            _log.warning("%s (pid %d) did not exit; killing it", self._what, self.process.pid)
            self.process.kill()
            self.process.wait()
        for reader in self._readers:
            reader.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def exit_with_parent(loop: asyncio.AbstractEventLoop, on_parent_gone: Callable[[], None], name: str) -> None:
    """In the child: call `on_parent_gone` on `loop` when standard input reaches end of file (the parent is gone)."""

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            while sys.stdin.buffer.read(4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop already closed: the child is exiting anyway
            loop.call_soon_threadsafe(on_parent_gone)

    threading.Thread(target=watch, name=name, daemon=True).start()
