"""Host calls: the ways enclave code reaches the untrusted host (Asylo's exit calls).

Every answer comes from the host, which the enclave does not trust: host time may be wrong, a registered handler may
return anything. Validate what comes back before acting on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from asylo.primitives import selectors
from asylo.primitives.extents import MessageReader, MessageWriter
from asylo.primitives.interfaces import ExitCallPort
from asylo.primitives.named import MAX_CALL_NAME, call_name_bytes
from asylo.status import InvalidArgumentError


class HostCalls:
    """Stubs for the built-in host calls and for the handlers the host application registered."""

    def __init__(self, port: ExitCallPort) -> None:
        self._port = port

    def exit_call(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        """The raw primitive: call exit selector `selector` with `extents`; returns the handler's extents."""
        return self._port.exit_call(selector, extents)

    def call(self, name: str, *args: bytes) -> bytes:
        """Call the host handler registered under `name` (see ExitCallRegistry.register); returns its bytes."""
        encoded = call_name_bytes(name)
        if encoded is None:
            raise InvalidArgumentError(f"host handler names are 1..{MAX_CALL_NAME} bytes, got "
                                       f"{len(name.encode('utf-8'))}")
        reader = MessageReader(self._port.exit_call(selectors.EXIT_CALL_NAMED, [encoded, *args]))
        result = reader.next()
        reader.expect_end()
        return result

    def log(self, level: int, message: str) -> None:
        """Log `message` through the host's `logging`, under the logger `asylo.enclave.<enclave name>`."""
        self._port.exit_call(selectors.EXIT_LOG, MessageWriter().push_i64(level).push_str(message).extents())

    def info(self, message: str) -> None:
        self.log(logging.INFO, message)

    def warning(self, message: str) -> None:
        self.log(logging.WARNING, message)

    def error(self, message: str) -> None:
        self.log(logging.ERROR, message)

    def print(self, *values: object, sep: str = " ", end: str = "\n") -> None:
        """Write to the host's standard output, like the built-in `print`."""
        self.write_stdout(sep.join(str(v) for v in values) + end)

    def write_stdout(self, text: str) -> None:
        self._port.exit_call(selectors.EXIT_WRITE_STDOUT, [text.encode("utf-8")])

    def time_ns(self) -> int:
        """The host's clock, in nanoseconds since the epoch. UNTRUSTED: the host can report any time it likes."""
        reader = MessageReader(self._port.exit_call(selectors.EXIT_HOST_TIME, []))
        value = reader.next_i64()
        reader.expect_end()
        return value

    def time(self) -> float:
        """The host's clock in seconds since the epoch. UNTRUSTED, as `time_ns`."""
        return self.time_ns() / 1e9


