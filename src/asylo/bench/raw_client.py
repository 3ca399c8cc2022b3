"""The baseline: the raw echo server in a child process, and a grpc.aio client of it.

The client's event loop runs on a thread of its own, like the remote backend's. "In-loop" measurements run entirely
on that loop (a coroutine times its own awaits: the best gRPC from Python does, and the baseline the targets use);
"sync" measurements are made from ordinary threads, each call handed to the loop and waited for, which is what a
synchronous API over grpc.aio can at best offer its callers.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

from asylo.bench.echo_process import EchoServerProcess
from asylo.bench.gang import Gang
from asylo.bench.raw_service import COLLECT_METHOD, ECHO_METHOD, READY_PREFIX
from asylo.remote.service import channel_options
from asylo.session import SessionLimits
from asylo.status import EnclaveUnavailable

_T = TypeVar("_T")

#: Largest message the baseline sends: the project's frame size, so both move the same pieces through gRPC.
CHUNK = SessionLimits().max_frame_size


def chunks(payload: bytes) -> list[bytes]:
    view = memoryview(payload)
    return [bytes(view[i:i + CHUNK]) for i in range(0, len(payload), CHUNK)] or [b""]


class RawServerProcess(EchoServerProcess):
    """`python -m asylo.bench.raw_server` as a child: started, asked for its port, and always reaped."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        super().__init__("asylo.bench.raw_server", READY_PREFIX, "the raw echo server", startup_timeout)


class RawEchoClient:
    """A grpc.aio channel to the raw echo server, with the project's channel options, on its own loop thread."""

    def __init__(self, target: str, connect_timeout: float = 10.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="asylo-bench-raw-loop", daemon=True)
        self._thread.start()
        self._channel: Any = None
        try:
            self._channel = self._run(self._connect(target, connect_timeout))
        except BaseException:
            self.close()
            raise

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @staticmethod
    async def _connect(target: str, timeout: float) -> Any:
        channel = grpc.aio.insecure_channel(target, options=channel_options(SessionLimits()))
        await asyncio.wait_for(channel.channel_ready(), timeout)
        return channel

    def close(self) -> None:
        if self._channel is not None:
            self._run(self._channel.close())
            self._channel = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- streams, on the loop ----------------------------------------------------------------------------------

    async def _open(self, method: str = ECHO_METHOD) -> Any:
        return self._channel.stream_stream(method)()

    @staticmethod
    async def _finish(call: Any) -> None:
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass
        code = await call.code()
        if code != grpc.StatusCode.OK:
            raise EnclaveUnavailable(f"the raw echo stream ended with {code.name}")

    @staticmethod
    async def _roundtrip(call: Any, pieces: list[bytes]) -> None:
        for piece in pieces:
            await call.write(piece)
        for piece in pieces:
            reply = await call.read()
            if reply is grpc.aio.EOF or len(reply) != len(piece):
                raise EnclaveUnavailable("the raw echo server did not echo")

    async def _pingpongs(self, call: Any, pieces: list[bytes], calls: int) -> list[int]:
        times = []
        for _ in range(calls):
            began = time.perf_counter_ns()
            await self._roundtrip(call, pieces)
            times.append(time.perf_counter_ns() - began)
        return times

    # -- measurements ------------------------------------------------------------------------------------------

    def pingpong_in_loop(self, size: int, calls: int) -> list[int]:
        """Nanoseconds per echo of `size` bytes, timed on the loop."""

        async def measure() -> list[int]:
            call = await self._open()
            times = await self._pingpongs(call, chunks(bytes(size)), calls)
            await self._finish(call)
            return times

        return self._run(measure())

    def pingpong_sync(self, size: int, calls: int) -> list[int]:
        """Nanoseconds per echo of `size` bytes, each handed to the loop by this thread and waited for here."""
        call = self._run(self._open())
        pieces = chunks(bytes(size))
        times = []
        try:
            for _ in range(calls):
                began = time.perf_counter_ns()
                self._run(self._roundtrip(call, pieces))
                times.append(time.perf_counter_ns() - began)
        finally:
            self._run(self._finish(call))
        return times

    def streams_in_loop(self, streams: int, size: int, calls_per_stream: int) -> float:
        """Calls per second: `streams` concurrent streams on the loop, each echoing `calls_per_stream` times."""

        async def measure() -> float:
            calls = [await self._open() for _ in range(streams)]
            pieces = chunks(bytes(size))
            await asyncio.gather(*(self._roundtrip(call, pieces) for call in calls))  # every stream open and warm
            began = time.perf_counter()
            await asyncio.gather(*(self._pingpongs(call, pieces, calls_per_stream) for call in calls))
            elapsed = time.perf_counter() - began
            await asyncio.gather(*(self._finish(call) for call in calls))
            return streams * calls_per_stream / elapsed

        return self._run(measure())

    def streams_sync(self, gang: Gang, size: int, calls_per_thread: int) -> float:
        """Calls per second: one stream per thread of `gang`, each thread echoing `calls_per_thread` times."""
        calls = [self._run(self._open()) for _ in range(gang.size)]
        pieces = chunks(bytes(size))
        try:
            for call in calls:
                self._run(self._roundtrip(call, pieces))

            def work(index: int) -> None:
                for _ in range(calls_per_thread):
                    self._run(self._roundtrip(calls[index], pieces))

            elapsed = gang.run(work)
        finally:
            for call in calls:
                self._run(self._finish(call))
        return gang.size * calls_per_thread / elapsed

    def bulk_pipelined(self, size: int) -> float:
        """Seconds to send `size` bytes and get them back on one echo stream, both directions in flight at once."""

        async def measure() -> float:
            call = await self._open()
            pieces = chunks(bytes(size))

            async def send() -> None:
                for piece in pieces:
                    await call.write(piece)

            async def receive() -> None:
                for piece in pieces:
                    reply = await call.read()
                    if reply is grpc.aio.EOF or len(reply) != len(piece):
                        raise EnclaveUnavailable("the raw echo server did not echo")

            began = time.perf_counter()
            await asyncio.gather(send(), receive())
            elapsed = time.perf_counter() - began
            await self._finish(call)
            return elapsed

        return self._run(measure())

    def bulk_collected(self, size: int) -> float:
        """Seconds to send `size` bytes, then get them all back: upload, then download, as one call does."""

        async def measure() -> float:
            call = await self._open(COLLECT_METHOD)
            pieces = chunks(bytes(size))
            began = time.perf_counter()
            for piece in pieces:
                await call.write(piece)
            await call.write(b"")
            received = 0
            while reply := await call.read():
                if reply is grpc.aio.EOF:
                    raise EnclaveUnavailable("the raw echo stream ended early")
                received += len(reply)
            elapsed = time.perf_counter() - began
            if received != size:
                raise EnclaveUnavailable(f"the raw echo server sent {received} bytes back, not {size}")
            await self._finish(call)
            return elapsed

        return self._run(measure())
