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
from asylo.status import DataLossError, InvalidArgumentError
from asylo.trusted.sealing import check_sealed


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

    def store_sealed(self, name: str, blob: bytes) -> None:
        """Keep `blob`, made by `TrustedApplication.seal`, in the host's sealed-blob store under `name`.

        Anything that is not a sealed blob is refused here, inside the enclave, so plaintext never reaches the host
        by mistake. A host without a store answers FAILED_PRECONDITION. Seal with `aad` naming `name`, so that a
        host handing back another name's blob is caught by `unseal`.
        """
        payload = check_sealed(blob, "store_sealed's blob")
        reader = MessageReader(self._port.exit_call(selectors.EXIT_STORE_SEALED, [_sealed_name(name), payload]))
        reader.expect_end()

    def load_sealed(self, name: str) -> bytes | None:
        """The blob the host keeps under `name`, or None if it says it has none.

        UNTRUSTED, like every host answer: the bytes may be another name's blob, an old one or garbage, and "none"
        may be a lie. Believe only what `TrustedApplication.unseal` accepts.
        """
        answer = self._port.exit_call(selectors.EXIT_LOAD_SEALED, [_sealed_name(name)])
        if not answer:
            return None
        if len(answer) != 1:
            raise DataLossError(f"the host answered load_sealed with {len(answer)} extents instead of one blob")
        blob = answer[0]
        if len(blob) > selectors.MAX_SEALED_BLOB_SIZE:
            raise DataLossError(f"the host answered load_sealed with {len(blob)} bytes, over the sealed-blob limit "
                                f"of {selectors.MAX_SEALED_BLOB_SIZE}")
        return bytes(blob)


def _sealed_name(name: str) -> bytes:
    # Only what the enclave can check cheaply: the host, which turns names into file names, validates them fully.
    if not isinstance(name, str) or not 0 < len(name) <= selectors.MAX_SEALED_NAME_LENGTH:
        raise InvalidArgumentError(f"sealed blob names are 1..{selectors.MAX_SEALED_NAME_LENGTH} characters, "
                                   f"got {name!r}")
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file name can hold it
        raise InvalidArgumentError(f"sealed blob name {name!r} is not valid Unicode text") from None
