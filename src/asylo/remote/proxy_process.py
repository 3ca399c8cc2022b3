"""What an `asylo proxy` process does, from start to exit.

Load and verify the image; listen; print the READY line with the port; wait for the one host session; when it is
over — or when no host came within the hello timeout, or the session was idle too long, or the parent process went
away (its pipe on our standard input closed, or the kernel's parent-death signal came), or SIGTERM/SIGINT arrived —
finalize what needs finalizing and exit.

A standby proxy (`run_standby_proxy`) does the slow part first — start Python, import gRPC and the runtime, listen,
print READY — and then waits for its assignment: one line of JSON on standard input naming the image and the
session token. It loads the image, prints the ASSIGNED line, and from there on is an ordinary proxy.

A provision server tells its proxies which image it vetted — by measurement: `--expect-measurement`, or the
assignment's "measurement" — because it checked the file at its path once, and the file may have been replaced
since. A proxy that finds anything else at that path refuses to host it and exits 1 before it serves a byte. It
may also pin the session to one client certificate (`--client-cert-sha256`, the assignment's
"client_cert_sha256"; see RemoteEnclaveProxyServer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

# Imported here, before any assignment, so that a standby proxy has paid for them when it gets its work: an
# enclave's modules import the trusted runtime and its protobuf messages.
import asylo.proto.enclave_pb2
import asylo.trusted  # noqa: F401
from asylo.identity import PlatformProvider
from asylo.image import VerifiedImage, load_image
from asylo.image.measurement import MEASUREMENT_SIZE
from asylo.remote.child_process import (
    PARENT_DEATH_SIGNAL,
    arm_parent_death_signal,
    parent_is_gone,
)
from asylo.remote.child_process import exit_with_parent as exit_with_parent_process
from asylo.remote.credentials import ServerCredentials
from asylo.remote.direct_server import DirectEnclaveProxyServer
from asylo.remote.provision import READY_PREFIX
from asylo.remote.provision_api import CERTIFICATE_SHA256_SIZE
from asylo.remote.server import RemoteEnclaveProxyServer
from asylo.remote.transports import DEFAULT_TRANSPORT, Transport
from asylo.status import AsyloError, FailedPreconditionError, Status, StatusCode

_log = logging.getLogger(__name__)

#: The line a standby proxy prints once it has loaded and verified its assigned image: the prefix, then the image's
#: measurement in hex.
ASSIGNED_PREFIX = "ASYLO-PROXY-ASSIGNED measurement="

#: The longest assignment line a standby proxy reads. An image path and a token need far less; the bound keeps a
#: confused parent from making the proxy buffer without end.
MAX_ASSIGNMENT_LINE = 64 * 1024

#: The process that started us, as early as we can tell (this module is imported at `asylo proxy`'s start). If it
#: is gone by the time the parent-death signal is armed, the signal will never come: we check against this.
PARENT_AT_START = os.getppid()


def read_token(stream: BinaryIO) -> bytes:
    """The session token: one line of hex (64 characters for the 32 bytes LocalProvision makes)."""
    line = stream.readline(1024).strip()
    return parse_token(line)


def parse_token(text: str | bytes) -> bytes:
    """A session token from its hex form: at least 16 bytes."""
    try:
        token = bytes.fromhex(text.decode("ascii") if isinstance(text, bytes) else text)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the token must be one line of hexadecimal") from None
    if len(token) < 16:
        raise ValueError("the token must be at least 16 bytes (32 hex characters)")
    return token


def parse_hex_digest(text: str, size: int, what: str) -> bytes:
    """`size` bytes from `2 * size` hex digits (a measurement, a certificate fingerprint); ValueError names `what`."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{what} must be hexadecimal") from None
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes ({2 * size} hex digits), got {len(value)}")
    return value


@dataclass(frozen=True)
class Assignment:
    """A standby proxy's work: the image to host, the session token, and what its provision server expects."""

    image: str
    token: bytes
    #: The measurement the provision server vetted; anything else found at `image` is refused.
    measurement: bytes | None = None
    #: Serve only the client with this TLS certificate (SHA-256 of its DER encoding).
    client_cert_sha256: bytes | None = None


def parse_assignment(line: bytes) -> Assignment:
    """A standby proxy's assignment: `{"image": "<path>", "token": "<hex>"}` on one line, optionally with
    `"measurement": "<hex>"` and `"client_cert_sha256": "<hex>"`. ValueError says what is wrong with it. Only JSON:
    nothing in it is ever evaluated."""
    if len(line.rstrip(b"\r\n")) > MAX_ASSIGNMENT_LINE:
        raise ValueError(f"the assignment line is longer than {MAX_ASSIGNMENT_LINE} bytes")
    try:
        assignment = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the assignment is not valid JSON") from None
    if not isinstance(assignment, dict):
        raise ValueError("the assignment must be a JSON object")
    unknown = set(assignment) - {"image", "token", "measurement", "client_cert_sha256"}
    if unknown:
        raise ValueError(f"the assignment has unknown keys: {', '.join(sorted(unknown))}")
    image, token = assignment.get("image"), assignment.get("token")
    if not isinstance(image, str) or not image:
        raise ValueError('the assignment needs "image": the image\'s path, a string')
    if not isinstance(token, str):
        raise ValueError('the assignment needs "token": the session token in hex, a string')
    digests: dict[str, bytes | None] = {}
    for key, size in (("measurement", MEASUREMENT_SIZE), ("client_cert_sha256", CERTIFICATE_SHA256_SIZE)):
        value = assignment.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f'the assignment\'s "{key}" must be a hex string')
        digests[key] = None if value is None else parse_hex_digest(value, size, f'the assignment\'s "{key}"')
    return Assignment(image, parse_token(token), digests["measurement"], digests["client_cert_sha256"])


def check_measurement(image: VerifiedImage, expected: bytes | None, path: str) -> None:
    """Refuse to host an image other than the one the provision server vetted (FailedPreconditionError): the file
    at `path` was replaced after the server checked it, and whoever replaced it does not choose what runs."""
    if expected is not None and image.measurement != expected:
        raise FailedPreconditionError(
            f"{path}: the image has measurement {image.measurement.hex()}, not the expected {expected.hex()}: the "
            f"file changed after the provision server checked it; refusing to host it")


async def run_proxy(image_path: str, token: bytes, *, listen: str, credentials: ServerCredentials,
                    hello_timeout: float, exit_with_parent: bool, idle_timeout: float | None = None,
                    expect_measurement: bytes | None = None, client_cert_sha256: bytes | None = None,
                    platform_key: PlatformProvider | None = None, transport: Transport = DEFAULT_TRANSPORT) -> int:
    """Serve one session; return the process's exit code (0: the session ended in order). With
    `expect_measurement`, an image with another measurement is refused (FailedPreconditionError) before listening;
    with `client_cert_sha256`, only the host with that client certificate is served."""
    image = load_image(image_path)
    check_measurement(image, expect_measurement, image_path)
    try:
        server = _server_class(transport)(image, token, credentials=credentials, hello_timeout=hello_timeout,
                                          idle_timeout=idle_timeout, client_cert_sha256=client_cert_sha256,
                                          platform_key=platform_key)
    except ValueError as exc:
        raise FailedPreconditionError(str(exc)) from None
    port = await server.start(listen)
    _end_on_signals(server)
    if exit_with_parent:
        _watch_parent(server)
    print(f"{READY_PREFIX}{port}{_platform_word(platform_key)}", flush=True)
    return await _serve(server, hello_timeout)


async def run_standby_proxy(*, listen: str, credentials: ServerCredentials, hello_timeout: float,
                            idle_timeout: float | None = None, platform_key: PlatformProvider | None = None,
                            transport: Transport = DEFAULT_TRANSPORT) -> int:
    """Listen, print READY, wait for the assignment on standard input, then serve one session as `run_proxy`.

    The parent's pipe is the lifeline throughout: if it closes before the assignment, there is nothing to finalize
    and the proxy exits 0 without a word. A bad assignment (not JSON, wrong fields, an image that does not load or
    verify, or that has another measurement than the assignment expects) is reported on standard error and ends
    the proxy with exit code 1.
    """
    server = _server_class(transport).standby(credentials=credentials, hello_timeout=hello_timeout,
                                              idle_timeout=idle_timeout, platform_key=platform_key)
    port = await server.start(listen)
    loop = asyncio.get_running_loop()
    # The assignment line; b"" if the parent went away (or a signal came) before sending one.
    assignment: asyncio.Future[bytes] = loop.create_future()

    def assigned(line: bytes) -> None:
        if not assignment.done():
            assignment.set_result(line)

    _end_on_signals(server, also=lambda: assigned(b""))
    _watch_parent(server, first_line=assigned)
    print(f"{READY_PREFIX}{port}{_platform_word(platform_key)}", flush=True)
    line = await assignment
    if not line or server.end_status is not None:
        # Let go (or stopped) before any work came: nothing to finalize, nothing went wrong.
        await server.stop(grace=0)
        return 0
    try:
        if not line.endswith(b"\n"):
            raise ValueError(f"the assignment line is longer than {MAX_ASSIGNMENT_LINE} bytes"
                             if len(line) > MAX_ASSIGNMENT_LINE else "the input ended inside the assignment line")
        work = parse_assignment(line)
        image = await loop.run_in_executor(None, load_image, work.image)
        check_measurement(image, work.measurement, work.image)
        server.assign(image, work.token, client_cert_sha256=work.client_cert_sha256)
    except (ValueError, OSError, AsyloError) as exc:
        await server.stop(grace=0)
        raise AssignmentError(str(exc)) from None
    print(f"{ASSIGNED_PREFIX}{image.measurement.hex()}", flush=True)
    return await _serve(server, hello_timeout)


def _server_class(transport: Transport) -> type[RemoteEnclaveProxyServer]:
    return DirectEnclaveProxyServer if transport == "direct" else RemoteEnclaveProxyServer


class AssignmentError(Exception):
    """A standby proxy's assignment was refused: what was wrong with it."""


def _end_on_signals(server: RemoteEnclaveProxyServer, also: Callable[[], None] | None = None) -> None:
    """SIGTERM and SIGINT end the proxy in order (`give_up`); `also` is called with it (a standby's wait)."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        server.give_up(Status(StatusCode.CANCELLED, f"signal {signum.name}"))
        if also is not None:
            also()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


def _watch_parent(server: RemoteEnclaveProxyServer, *, first_line: Callable[[bytes], None] | None = None) -> None:
    """End the proxy when its parent is gone: end of file on standard input, or (Linux) the parent-death signal,
    whichever comes first. With `first_line`, standard input starts with a standby's assignment (see
    `exit_with_parent`), and `first_line(b"")` also tells a standby still waiting for it that the parent is gone."""
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        server.give_up(Status(StatusCode.UNAVAILABLE, "the parent process went away"))
        if first_line is not None:
            first_line(b"")

    def on_parent_death_signal() -> None:
        # Also sent when the parent's *thread* that started us ends (see PARENT_DEATH_SIGNAL): only an orphan quits.
        if parent_is_gone(PARENT_AT_START):
            parent_gone()

    loop.add_signal_handler(PARENT_DEATH_SIGNAL, on_parent_death_signal)
    if not arm_parent_death_signal(PARENT_AT_START):
        loop.call_soon(parent_gone)
    exit_with_parent_process(loop, parent_gone, "asylo-proxy-parent-watch", first_line=first_line,
                             line_limit=MAX_ASSIGNMENT_LINE)


async def _serve(server: RemoteEnclaveProxyServer, hello_timeout: float) -> int:
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


def _platform_word(platform_key: PlatformProvider | None) -> str:
    """The READY line's account of the platform the enclave attests with (after the port, which is read first)."""
    return "" if platform_key is None else f" platform={platform_key.kind}"
