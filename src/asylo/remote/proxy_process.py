"""What an `asylo proxy` process does, from start to exit.

Load and verify the image; listen; print the READY line with the port; wait for the one host session; when it is
over — or when no host came within the hello timeout, or the parent process went away (its pipe on our standard
input closed), or SIGTERM/SIGINT arrived — finalize what needs finalizing and exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import BinaryIO

from asylo.image import load_image
from asylo.remote.child_process import exit_with_parent as exit_with_parent_process
from asylo.remote.credentials import ServerCredentials
from asylo.remote.provision import READY_PREFIX
from asylo.remote.server import RemoteEnclaveProxyServer
from asylo.status import Status, StatusCode

_log = logging.getLogger(__name__)


def read_token(stream: BinaryIO) -> bytes:
    """The session token: one line of hex (64 characters for the 32 bytes LocalProvision makes)."""
    line = stream.readline(1024).strip()
    try:
        token = bytes.fromhex(line.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the token must be one line of hexadecimal") from None
    if len(token) < 16:
        raise ValueError("the token must be at least 16 bytes (32 hex characters)")
    return token


async def run_proxy(image_path: str, token: bytes, *, listen: str, credentials: ServerCredentials,
                    hello_timeout: float, exit_with_parent: bool) -> int:
    """Serve one session; return the process's exit code (0: the session ended in order)."""
    image = load_image(image_path)
    server = RemoteEnclaveProxyServer(image, token, credentials=credentials, hello_timeout=hello_timeout)
    port = await server.start(listen)
    print(f"{READY_PREFIX}{port}", flush=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.give_up, Status(StatusCode.CANCELLED, f"signal {signum.name}"))
    if exit_with_parent:
        exit_with_parent_process(loop, lambda: server.give_up(Status(StatusCode.UNAVAILABLE,
                                                                    "the parent process went away")),
                                 "asylo-proxy-parent-watch")
    # Until a host claims the session: a signal or the parent's end (give_up) ends the wait as well.
    if not await server.wait_claimed(hello_timeout):
        server.give_up(Status(StatusCode.DEADLINE_EXCEEDED, f"no host connected within {hello_timeout:g} s"))
    await server.wait_done()
    await server.stop(grace=5.0)
    status = server.end_status or Status()
    if status.ok:
        _log.info("proxy exits: the session ended in order")
        return 0
    _log.warning("proxy exits: %s", status)
    return 1
