"""The baseline's server: a bare grpc.aio bidi-stream echo, run as its own process (`python -m asylo.bench.raw_server`).

It has what the proxy's transport has — one generic stream method, bytes in and out, the project's server options
and message limits — and nothing else: no session, no thread matching, no enclave. Two methods:

- Echo: every message straight back (ping-pong, and the pipelined "raw stream" for bulk transfers);
- Collect: keep messages until an empty one, then send them all back and an empty one (upload, then download:
  what a call does with a large argument and an equally large result).

It listens on 127.0.0.1 with an ephemeral port, prints `READY_PREFIX<port>`, and exits when its standard input
closes (the benchmark ended, whatever way) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc

from asylo.bench.raw_service import COLLECT, ECHO, READY_PREFIX, SERVICE
from asylo.remote.child_process import exit_with_parent
from asylo.remote.service import server_options
from asylo.session import SessionLimits


async def _echo(request_iterator: AsyncIterator[bytes], context: Any) -> None:
    del request_iterator  # read with context.read(), as the proxy does
    while True:
        message = await context.read()
        if message is grpc.aio.EOF:
            return
        await context.write(message)


async def _collect(request_iterator: AsyncIterator[bytes], context: Any) -> None:
    del request_iterator
    while True:
        held: list[bytes] = []
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            if not message:
                break
            held.append(message)
        for message in held:
            await context.write(message)
        await context.write(b"")


async def serve() -> None:
    server = grpc.aio.server(options=server_options(SessionLimits()))
    handlers = {ECHO: grpc.stream_stream_rpc_method_handler(_echo),
                COLLECT: grpc.stream_stream_rpc_method_handler(_collect)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    exit_with_parent(loop, stop.set, "asylo-bench-raw-parent-watch")
    print(f"{READY_PREFIX}{port}", flush=True)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    asyncio.run(serve())


if __name__ == "__main__":
    main()
