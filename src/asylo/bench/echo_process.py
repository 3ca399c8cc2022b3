"""A baseline's echo server as a child process: started, asked for its port, and always reaped.

Both baselines (the raw grpc.aio echo and the blocking-TCP floor) run the same way: `python -m MODULE`, a READY
line with the port, exit when standard input closes. One class for both.
"""

from __future__ import annotations

import logging
import sys

from asylo.remote.child_process import ListeningChild


class EchoServerProcess:
    """`python -m module` as a child, listening on 127.0.0.1 with the port it prints after `ready_prefix`."""

    def __init__(self, module: str, ready_prefix: str, what: str, startup_timeout: float = 30.0) -> None:
        self._child = ListeningChild([sys.executable, "-m", module], ready_prefix=ready_prefix, what=what,
                                     log=logging.getLogger(module))
        try:
            self.port = self._child.start(b"", startup_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._child.pid

    def poll(self) -> int | None:
        """Its exit code if it has exited (reaping it), else None; never blocks."""
        return self._child.poll()

    def stop(self) -> None:
        """Close its standard input (it exits), kill it if it lingers; reap it."""
        self._child.release(grace=5.0)
