"""The bodies of large calls and results: their extents, cut into fragment frames and put back together.

A call or result too large for one frame travels as a header frame (the call without its extents, with their sizes)
followed by fragment frames holding the extents' bytes, concatenated. This module is the byte-level part, written for
as few copies as possible, because a 64 MiB payload copied ten times is most of the cost of moving it:

- sending, each fragment frame is encoded here directly (a Frame whose `fragment` field holds transfer id, total
  size and data, in canonical protobuf wire format) with one join over slices of the caller's extents, when the
  writer gets to it (`BodyFrames`);
- receiving, a fragment frame in that canonical form is decoded here into a memoryview of the received frame, and
  each extent is joined once from those views when the last fragment is in.

Anything that is not a canonical fragment frame is left to protobuf, so the wire format stays plain protobuf.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator, Sequence
from typing import overload

_FRAME_FRAGMENT_TAG = 0x2A  # Frame.fragment: field 5, length-delimited
_TRANSFER_ID_TAG = 0x08  # Fragment.transfer_id: field 1, varint
_TOTAL_SIZE_TAG = 0x10  # Fragment.total_size: field 2, varint
_DATA_TAG = 0x1A  # Fragment.data: field 3, length-delimited
#: Most bytes a fragment frame spends on its own fields around the data (three tags, four varints of <= 10 bytes).
FRAGMENT_OVERHEAD = 48


def encode_varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    """(value, next position); raises ValueError past the end or beyond 64 bits."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            # Beyond 64 bits protobuf truncates, so such a frame is not canonical: None, and protobuf reads it.
            if value >> 64:
                raise ValueError("varint beyond 64 bits")
            return value, pos
        shift += 7


class BodyFrames(Sequence[bytes]):
    """A body's header frame followed by its fragment frames, each fragment built only when it is asked for.

    Built all at once, the fragments of a 256 MiB call would double the memory the call takes, and most of the
    cost of sending it would be fresh memory (a page fault per 4 KiB). The writer asks for them one at a time as it
    writes, so one fragment's worth of memory is used over and over. The fragments are slices of the extents; an
    extent that is not `bytes` is copied once here, so that a caller changing its buffer after the call cannot
    change what is still to be sent.
    """

    def __init__(self, header: bytes, transfer_id: int, extents: Sequence[bytes], chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._header = header
        self._extents = [memoryview(extent if type(extent) is bytes else bytes(extent)) for extent in extents]
        self._starts = list(itertools.accumulate((len(extent) for extent in self._extents), initial=0))
        self.total = self._starts[-1]
        self._chunk = chunk_size
        self._head = (bytes([_TRANSFER_ID_TAG]) + encode_varint(transfer_id) + bytes([_TOTAL_SIZE_TAG])
                      + encode_varint(self.total))
        self._fragments = -(-self.total // chunk_size)

    def __len__(self) -> int:
        return 1 + self._fragments

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("frame index out of range")
        return self._header if index == 0 else self._fragment(index - 1)

    def __iter__(self) -> Iterator[bytes]:
        yield self._header
        for number in range(self._fragments):
            yield self._fragment(number)

    def _fragment(self, number: int) -> bytes:
        """Fragment `number`: the body's bytes from number * chunk_size, at most chunk_size of them."""
        return b"".join(self.fragment_parts(number))

    def frame_parts(self, index: int) -> list[bytes | memoryview]:
        """Frame `index` (as `self[index]`) as the pieces it is the concatenation of, without joining them: the
        fragment's own fields, then views of the extents. A transport that seals the pieces straight into its
        buffer (`RecordSealer.seal_into`) copies a fragment's data once."""
        if not 0 <= index < len(self):
            raise IndexError("frame index out of range")
        return [self._header] if index == 0 else self.fragment_parts(index - 1)

    def fragment_parts(self, number: int) -> list[bytes | memoryview]:
        start = number * self._chunk
        end = min(start + self._chunk, self.total)
        index = bisect.bisect_right(self._starts, start) - 1
        pieces: list[memoryview] = []
        while start < end:
            extent, offset = self._extents[index], start - self._starts[index]
            take = min(len(extent) - offset, end - start)
            if take:
                pieces.append(extent[offset:offset + take])
            start += take
            index += 1
        size = end - number * self._chunk
        inner_head = self._head + bytes([_DATA_TAG]) + encode_varint(size)
        return [bytes([_FRAME_FRAGMENT_TAG]) + encode_varint(len(inner_head) + size) + inner_head, *pieces]


def decode_fragment(frame: bytes | memoryview) -> tuple[int, int, memoryview] | None:
    """(transfer id, total size, data) of a canonical fragment frame, without copying the data; None for any other
    frame (which then goes to protobuf)."""
    view = memoryview(frame)
    try:
        if not view or view[0] != _FRAME_FRAGMENT_TAG:
            return None
        length, pos = read_varint(view, 1)
        if pos + length != len(view) or pos >= len(view) or view[pos] != _TRANSFER_ID_TAG:
            return None
        transfer_id, pos = read_varint(view, pos + 1)
        if pos >= len(view) or view[pos] != _TOTAL_SIZE_TAG:
            return None
        total, pos = read_varint(view, pos + 1)
        if pos >= len(view) or view[pos] != _DATA_TAG:
            return None
        size, pos = read_varint(view, pos + 1)
    except ValueError:
        return None
    if pos + size != len(view):
        return None
    return transfer_id, total, view[pos:]


def join_extents(pieces: Sequence[memoryview], sizes: Sequence[int]) -> list[bytes]:
    """Cut the concatenation of `pieces` into extents of `sizes` (which add up to its length), copying once."""
    extents: list[bytes] = []
    index, offset = 0, 0
    for size in sizes:
        parts: list[memoryview] = []
        needed = size
        while needed:
            piece = pieces[index]
            take = min(needed, len(piece) - offset)
            parts.append(piece[offset:offset + take])
            needed -= take
            offset += take
            if offset == len(piece):
                index, offset = index + 1, 0
        extents.append(b"".join(parts))
    return extents
