"""The blocking-TCP baseline: its server in a child process, and a client of it made of plain blocking sockets.

Every measurement is made from ordinary threads, as an application calls the project: one thread ping-ponging on
one connection, a gang of threads each on a connection of its own, and one connection moving a bulk payload up and
then back down. Nothing but `sendall` and `recv_into` runs between the timestamps.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

from asylo.bench.echo_process import EchoServerProcess
from asylo.bench.gang import Gang
from asylo.bench.raw_tcp_wire import (
    COLLECT_MODE,
    ECHO_MODE,
    EMPTY,
    HEADER,
    READY_PREFIX,
    FrameError,
    FrameReader,
    MiB,
    message,
)
from asylo.status import EnclaveUnavailable

#: Size of the bulk transfer's messages: the project's frame size, as for the gRPC baseline.
CHUNK = MiB


class RawTcpServerProcess(EchoServerProcess):
    """`python -m asylo.bench.raw_tcp_server` as a child: started, asked for its port, and always reaped."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        super().__init__("asylo.bench.raw_tcp_server", READY_PREFIX, "the raw TCP echo server", startup_timeout)


@contextlib.contextmanager
def _broken_stream() -> Iterator[None]:
    """The baseline's failures as the project's: EnclaveUnavailable, so that `asylo bench` reports them alike."""
    try:
        yield
    except (OSError, FrameError) as exc:
        raise EnclaveUnavailable(f"the raw TCP echo stream broke: {exc}") from exc


class RawTcpClient:
    """Connections to the raw TCP echo server on 127.0.0.1, one per measurement (or per thread), TCP_NODELAY."""

    def __init__(self, port: int, connect_timeout: float = 10.0) -> None:
        self._address = ("127.0.0.1", port)
        self._connect_timeout = connect_timeout

    @contextlib.contextmanager
    def _connection(self, mode: bytes) -> Iterator[tuple[socket.socket, FrameReader]]:
        with _broken_stream():
            sock = socket.create_connection(self._address, timeout=self._connect_timeout)
            with sock:
                sock.settimeout(None)  # blocking: a timeout would add a poll() before every recv and send
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(mode)
                yield sock, FrameReader(sock)

    @staticmethod
    def _pingpongs(sock: socket.socket, reader: FrameReader, data: bytes, calls: int) -> list[int]:
        times = []
        for _ in range(calls):
            began = time.perf_counter_ns()
            sock.sendall(data)
            reply = reader.next()
            times.append(time.perf_counter_ns() - began)
            if reply is None or len(reply) != len(data):
                raise FrameError("the raw TCP echo server did not echo")
        return times

    def pingpong(self, size: int, calls: int) -> list[int]:
        """Nanoseconds per echo of one `size`-byte message, from this thread."""
        data = message(bytes(size))
        with self._connection(ECHO_MODE) as (sock, reader):
            return self._pingpongs(sock, reader, data, calls)

    def connections(self, gang: Gang, size: int, calls_per_thread: int) -> float:
        """Calls per second: one connection per thread of `gang`, each thread echoing `calls_per_thread` times."""
        data = message(bytes(size))
        with contextlib.ExitStack() as stack:
            links = [stack.enter_context(self._connection(ECHO_MODE)) for _ in range(gang.size)]
            with _broken_stream():
                for sock, reader in links:
                    self._pingpongs(sock, reader, data, 1)  # every connection open and warm before timing

                def work(index: int) -> None:
                    sock, reader = links[index]
                    self._pingpongs(sock, reader, data, calls_per_thread)

                elapsed = gang.run(work)
        return gang.size * calls_per_thread / elapsed

    def bulk_collected(self, size: int) -> float:
        """Seconds to send `size` bytes in CHUNK messages, then get them all back: upload, then download."""
        view = memoryview(bytes(size))
        messages = [message(bytes(view[i:i + CHUNK])) for i in range(0, size, CHUNK)]
        with self._connection(COLLECT_MODE) as (sock, reader):
            began = time.perf_counter()
            for data in messages:
                sock.sendall(data)
            sock.sendall(EMPTY)
            received = 0
            while (reply := reader.next()) is not None and len(reply) > HEADER:
                received += len(reply) - HEADER
            elapsed = time.perf_counter() - began
            if reply is None or received != size:
                raise FrameError(f"the raw TCP echo server sent {received} bytes back, not {size}")
        return elapsed
