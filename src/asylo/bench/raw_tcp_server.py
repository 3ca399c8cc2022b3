"""The blocking-TCP baseline's server, run as its own process (`python -m asylo.bench.raw_tcp_server`).

The floor under both of the project's transports: length-prefixed messages over a plain TCP socket (the wire format
is in `raw_tcp_wire`), one thread per connection blocked in `recv_into` and `sendall`, TCP_NODELAY, no event loop,
no session, no enclave. What the remote backend costs above this is what its framing, its records, its thread
matching and its transport's machinery cost.

It listens on 127.0.0.1 with an ephemeral port, prints `READY_PREFIX<port>`, and exits when its standard input
closes (the benchmark ended, whatever way) or on SIGTERM/SIGINT. A connection that breaks the format (an unknown
mode byte, a length above the bound, more held than collect mode allows) is closed; the server goes on.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import threading
from types import FrameType

from asylo.bench.raw_tcp_wire import (
    COLLECT_MODE,
    ECHO_MODE,
    EMPTY,
    HEADER,
    MAX_HELD,
    READY_PREFIX,
    FrameError,
    FrameReader,
)

#: Connections served at once. Each costs a thread; the benchmark opens one per host thread (16 by default), and a
#: bound keeps a runaway client from making the server start thousands.
MAX_CONNECTIONS = 1024


def _echo(conn: socket.socket) -> None:
    reader = FrameReader(conn)
    while (frame := reader.next()) is not None:
        conn.sendall(frame)


def _collect(conn: socket.socket) -> None:
    reader = FrameReader(conn)
    held = bytearray()
    while (frame := reader.next()) is not None:
        if len(frame) == HEADER:
            conn.sendall(held)
            conn.sendall(EMPTY)
            held = bytearray()  # a fresh buffer per transfer, as a call's reassembly gets
            continue
        if len(held) + len(frame) > MAX_HELD:
            raise FrameError(f"more than {MAX_HELD} bytes to collect")
        held += frame


class _Connections:
    """The connections being served, so that stopping can shut them down (their threads then end)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    def start(self, conn: socket.socket) -> None:
        with self._lock:
            if len(self._open) >= MAX_CONNECTIONS:
                conn.close()
                return
            self._open.add(conn)
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            thread = threading.Thread(target=self._serve, args=(conn,), name="asylo-bench-tcp-conn", daemon=True)
            self._threads.append(thread)
        thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            mode = conn.recv(1)
            if mode == ECHO_MODE:
                _echo(conn)
            elif mode == COLLECT_MODE:
                _collect(conn)
            elif mode:
                print(f"refused a connection with mode byte {mode!r}", file=sys.stderr, flush=True)
        except FrameError as exc:
            print(f"closed a connection: {exc}", file=sys.stderr, flush=True)
        except OSError:
            pass  # the client went away, or stop() shut the socket down
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def stop(self) -> None:
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)


def _watch_stdin(stop_write: int) -> None:
    """Wake the accept loop when standard input reaches end of file: the parent let us go, or died."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    with contextlib.suppress(OSError):
        os.write(stop_write, b"x")


def serve() -> None:
    stop_read, stop_write = os.pipe()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        with contextlib.suppress(OSError):
            os.write(stop_write, b"x")  # async-signal-safe; the accept loop wakes up and returns

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    connections = _Connections()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=_watch_stdin, args=(stop_write,), name="asylo-bench-tcp-parent-watch",
                         daemon=True).start()
        print(f"{READY_PREFIX}{listener.getsockname()[1]}", flush=True)
        while True:
            ready, _, _ = select.select([listener.fileno(), stop_read], [], [])
            if stop_read in ready:
                break
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                connections.start(conn)
    connections.stop()
    # The pipe stays open until the process exits: the stdin watch may still write to it, and a closed descriptor's
    # number could by then name something else.


def main() -> None:
    serve()


if __name__ == "__main__":
    main()
