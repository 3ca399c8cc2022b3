"""MessageWriter and MessageReader: typed values to and from the list of byte extents a call carries.

Asylo's primitives pass arguments as a sequence of extents, each pushed by a writer and popped in the same order by a
reader. Integers are fixed-width little-endian; strings are UTF-8. A reader that runs out, or finds an extent of the
wrong size, raises InvalidArgumentError: extents come from the other side of the boundary and are hostile input.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from asylo.status import InvalidArgumentError

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


def as_extents(value: Iterable[bytes | bytearray | memoryview] | None) -> list[bytes]:
    """What a selector handler returned (a sequence of bytes-like values, or None for none), as extents."""
    return [] if value is None else [bytes(extent) for extent in value]


class MessageWriter:
    """Collects extents in order; `extents()` gives the list to pass to a call."""

    def __init__(self, initial: Iterable[bytes] = ()) -> None:
        self._extents: list[bytes] = [bytes(e) for e in initial]

    def push(self, value: bytes | bytearray | memoryview) -> MessageWriter:
        self._extents.append(bytes(value))
        return self

    def push_str(self, value: str) -> MessageWriter:
        self._extents.append(value.encode("utf-8"))
        return self

    def push_u64(self, value: int) -> MessageWriter:
        self._extents.append(_U64.pack(value))
        return self

    def push_i64(self, value: int) -> MessageWriter:
        self._extents.append(_I64.pack(value))
        return self

    def extents(self) -> list[bytes]:
        return list(self._extents)

    def __len__(self) -> int:
        return len(self._extents)


class MessageReader:
    """Pops extents in the order they were pushed."""

    def __init__(self, extents: Sequence[bytes]) -> None:
        self._extents = extents
        self._next = 0

    def _pop(self, what: str) -> bytes:
        if self._next >= len(self._extents):
            raise InvalidArgumentError(f"expected {what} at extent {self._next}, but the message has only "
                                       f"{len(self._extents)} extents")
        value = self._extents[self._next]
        self._next += 1
        return value

    def next(self) -> bytes:
        return self._pop("bytes")

    def next_str(self) -> str:
        raw = self._pop("a string")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"extent {self._next - 1} is not UTF-8: {exc}") from None

    def _next_fixed(self, codec: struct.Struct, what: str) -> int:
        raw = self._pop(what)
        if len(raw) != codec.size:
            raise InvalidArgumentError(f"extent {self._next - 1} should be {what} ({codec.size} bytes), "
                                       f"got {len(raw)} bytes")
        value: int = codec.unpack(raw)[0]
        return value

    def next_u64(self) -> int:
        return self._next_fixed(_U64, "an unsigned 64-bit integer")

    def next_i64(self) -> int:
        return self._next_fixed(_I64, "a signed 64-bit integer")

    def rest(self) -> list[bytes]:
        """Every extent not read yet."""
        rest = list(self._extents[self._next:])
        self._next = len(self._extents)
        return rest

    def remaining(self) -> int:
        return len(self._extents) - self._next

    def expect_end(self) -> None:
        if self.remaining():
            raise InvalidArgumentError(f"{self.remaining()} unexpected extra extents after extent {self._next - 1}")
