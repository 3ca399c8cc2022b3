"""Child processes that listen on an ephemeral port, and the child's side of the lifeline to its parent.

The parent starts the child with pipes on its standard streams. The child listens on port 0 and prints one line,
`<ready prefix><port>`, on standard output; so parallel runs never collide over a fixed port. The parent writes
what the child must not get on its command line (a session token) to the child's standard input and keeps that pipe
open: when it closes — the parent let the child go, or died in whatever way — the child sees end of file and exits.
`asylo proxy` under local provisioning and the benchmark's raw echo server both work this way. A child that waits
for work (a standby proxy) gets it later as a line on the same pipe, and answers with a line on standard output
(`ListeningChild.request`).

On Linux the child can also ask the kernel for a signal when its parent dies (`arm_parent_death_signal`): that
covers a pipe that someone else keeps open by accident (a grandchild that inherited it), where end of file never
comes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from asylo.status import EnclaveUnavailable

_log = logging.getLogger(__name__)


class ListeningChild:
    """A started child: its pipes, the threads that read them, the port it reported, and its reaping."""

    def __init__(self, args: Sequence[str], *, ready_prefix: str, what: str, log: logging.Logger,
                 env: Mapping[str, str] | None = None) -> None:
        """Start `args` (with `env` as its whole environment; None: ours)."""
        self._ready_prefix = ready_prefix
        self._what = what
        self._log = log
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=True, close_fds=True, env=env)
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        # The reader thread looks for the one line the parent waits for (`_awaiting`: the ready line from the
        # start, a request's answer later) and keeps that line only; everything else the child prints (an enclave
        # that prints all day) is logged and dropped, so the parent never piles up a child's output.
        self._stdout = threading.Condition()
        self._awaiting: str | None = ready_prefix
        self._answer: str | None = None
        self._stdout_ended = False
        pid = self.process.pid
        self._readers = [
            threading.Thread(target=self._read_stdout, name=f"asylo-child-{pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"asylo-child-{pid}-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self._released = False
        self.ready_line = ""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._stdout:
                awaiting = self._awaiting
                if awaiting is not None and line.startswith(awaiting):
                    self._answer = line.removeprefix(awaiting)
                    self._awaiting = None
                    self._stdout.notify_all()
                    continue
            # Before the awaited line it may say why it is slow to start; after, it is the enclave's own output.
            self._log.log(logging.INFO if awaiting is not None else logging.DEBUG, "[pid %d] %s", self.process.pid,
                          line)
        with self._stdout:
            self._stdout_ended = True
            self._stdout.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr_tail.append(line)
            self._log.info("[pid %d] %s", self.process.pid, line)

    def start(self, first_input: bytes, timeout: float) -> int:
        """Send `first_input` (if any) on the child's standard input, keeping the pipe open; wait for its ready line
        and return the port (the first word after the prefix; `ready_line` keeps the whole rest of the line).
        EnclaveUnavailable, with what the child said, if it exits or does not get ready in time."""
        if first_input:
            self._write(first_input)
        line = self._await_line(self._ready_prefix, timeout, f"did not start within {timeout:g} s", "failed to start")
        self.ready_line = line
        return int(line.split()[0])

    def request(self, line: bytes, reply_prefix: str, timeout: float) -> str:
        """Write `line` (one line, newline added if missing) to the child's standard input and wait for its answer:
        the rest of the first standard-output line that starts with `reply_prefix`. EnclaveUnavailable, with what
        the child said, if it exits instead or does not answer within `timeout`."""
        with self._stdout:
            self._awaiting = reply_prefix  # before the line goes out: the answer may come at once
            self._answer = None
        self._write(line if line.endswith(b"\n") else line + b"\n")
        return self._await_line(reply_prefix, timeout, f"did not answer within {timeout:g} s",
                                "exited instead of answering")

    def _write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass  # it died already (or was released); reported by the wait for its answer, with what it said

    def _await_line(self, prefix: str, timeout: float, late: str, exited: str) -> str:
        deadline = time.monotonic() + timeout
        with self._stdout:
            assert self._awaiting == prefix or self._answer is not None, "waiting for a line nobody asked for"
            self._stdout.wait_for(lambda: self._answer is not None or self._stdout_ended,
                                  max(0.0, deadline - time.monotonic()))
            answer, self._answer = self._answer, None
            ended = self._stdout_ended
        if answer is not None:
            return answer
        if not ended:
            raise EnclaveUnavailable(f"{self._what} {late}{self._said()}")
        try:
            code = self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise EnclaveUnavailable(f"{self._what} closed its output and {late}{self._said()}") from None
        raise EnclaveUnavailable(f"{self._what} {exited} (exit code {code}){self._said()}")

    @property
    def held_lines(self) -> int:
        """Lines of the child's output held for the parent: at most the one awaited line, not yet taken."""
        with self._stdout:
            return int(self._answer is not None)

    def poll(self) -> int | None:
        """The child's exit code if it has exited (reaping it), else None; never blocks."""
        return self.process.poll()

    def _said(self) -> str:
        self._readers[1].join(1)
        tail = "\n".join(self._stderr_tail)
        return f"; it said:\n{tail}" if tail else ""

    def let_go(self) -> None:
        """Close the child's pipe, its signal to finish and exit, without waiting for it: to let many children go
        at once before reaping them one by one (`release`). Idempotent; never blocks on the child."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                self.process.stdin.close()

    def release(self, grace: float = 8.0) -> None:
        """Let the child go: close its pipe (it exits), and reap it, forcibly if it lingers. Idempotent."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self.let_go()
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


#: What a child asks Linux to send it when its parent dies (PR_SET_PDEATHSIG). Not SIGTERM: the kernel sends it when
#: the *thread* that started the child ends, not only when the parent process does — a proxy started from a worker
#: thread (a thread pool, an executor that shuts down, a host thread that loads an enclave and ends) would be
#: terminated while its parent lives on. So the child's handler checks `os.getppid()` first
#: (`parent_is_gone`), and SIGTERM keeps its one meaning: someone asked this process to stop.
PARENT_DEATH_SIGNAL = signal.SIGUSR2

_PR_SET_PDEATHSIG = 1


def arm_parent_death_signal(parent: int) -> bool:
    """Ask the kernel to send PARENT_DEATH_SIGNAL to this process when its parent dies (Linux only; elsewhere this
    does nothing). Return False if the parent is already gone — the process that started us is not our parent
    any more — because then the signal will never come.

    Install the handler for PARENT_DEATH_SIGNAL first: its default action ends the process on the spot.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0) != 0:
                _log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    return not parent_is_gone(parent)


def parent_is_gone(parent: int) -> bool:
    """Whether the process that started us (`parent`) has ended: orphans are adopted by init or a subreaper."""
    return os.getppid() != parent


_STDIN = 0


def _read_line(limit: int) -> bytes:
    """One line from standard input, read from its file descriptor a chunk at a time up to `limit` + 1 bytes; what
    follows the line in the same chunk is dropped (after its first line, the pipe only says whether it is open)."""
    data = b""
    with contextlib.suppress(OSError):
        while b"\n" not in data and len(data) <= limit:
            chunk = os.read(_STDIN, 4096)
            if not chunk:
                break
            data += chunk
    end = data.find(b"\n")
    return data[: end + 1] if 0 <= end <= limit else data[: limit + 1]


def exit_with_parent(loop: asyncio.AbstractEventLoop, on_parent_gone: Callable[[], None], name: str, *,
                     first_line: Callable[[bytes], None] | None = None, line_limit: int = 64 * 1024) -> None:
    """In the child: call `on_parent_gone` on `loop` when standard input reaches end of file (the parent is gone).

    With `first_line`, the first line of standard input is work from the parent (a standby proxy's assignment):
    `first_line` is called on `loop` with it, read up to `line_limit` bytes, as `readline` returns it — ending in
    a newline, or not when it is too long or the input ended first (b"": it ended before anything came). Only
    after a complete line does the watch for end of file begin.
    """

    def call(callback: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already closed: the child is exiting anyway
            loop.call_soon_threadsafe(callback, *args)

    def watch() -> None:
        # The file descriptor, not sys.stdin: a thread blocked in a read of sys.stdin.buffer holds its lock, and an
        # interpreter that exits meanwhile (the session ended while the parent keeps the pipe open) finds the lock
        # taken and aborts with a fatal error instead of exiting with its code.
        if first_line is not None:
            line = _read_line(line_limit)
            call(first_line, line)
            if not line.endswith(b"\n"):
                return  # the input ended (or the line is refused): the child decides what that means
        with contextlib.suppress(OSError, ValueError):
            while os.read(_STDIN, 4096):
                pass
        call(on_parent_gone)

    threading.Thread(target=watch, name=name, daemon=True).start()
