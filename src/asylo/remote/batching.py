"""Several session frames in one gRPC message, when several are ready to go at once.

Each gRPC message costs a round through gRPC's completion queue on both sides, which is most of the work of a small
call; under load (many host threads) frames queue up faster than they go out one by one. The writer then packs the
ready frames, each prefixed with its length as a varint, into one message of at most a frame's size plus room for
the prefixes, and the reader unpacks them. A lone frame travels the same way, with its one prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

from asylo.session.body import encode_varint, read_varint
from asylo.status import InvalidArgumentError

#: Frames in one message at most. Each has a length prefix of at most 10 bytes; the gRPC message limit's room
#: beyond a frame (SessionLimits.grpc_message_limit) covers them.
MAX_FRAMES_PER_MESSAGE = 64


def pack(frames: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for frame in frames:
        parts.append(encode_varint(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def single_frame(message: bytes, max_frame_size: int) -> memoryview:
    """The frame of a message that must hold exactly one (the hello and the welcome travel alone)."""
    frames = unpack(message, max_frame_size)
    if len(frames) != 1:
        raise InvalidArgumentError(f"the first message holds {len(frames)} frames, not one")
    return frames[0]


def unpack(message: bytes, max_frame_size: int) -> list[memoryview]:
    """The frames of one message, as views into it (no copy: a frame may be a megabyte of payload);
    InvalidArgumentError for a malformed message (the peer broke the protocol)."""
    frames: list[memoryview] = []
    view = memoryview(message)
    pos = 0
    while pos < len(view):
        if len(frames) >= MAX_FRAMES_PER_MESSAGE:
            raise InvalidArgumentError(f"more than {MAX_FRAMES_PER_MESSAGE} frames in one message")
        try:
            size, pos = read_varint(view, pos)
        except ValueError:
            raise InvalidArgumentError("a malformed frame length") from None
        if size > max_frame_size or pos + size > len(view):
            raise InvalidArgumentError(f"a frame of {size} bytes where {min(max_frame_size, len(view) - pos)} "
                                       f"at most fit")
        frames.append(view[pos:pos + size])
        pos += size
    if not frames:
        raise InvalidArgumentError("an empty message")
    return frames
