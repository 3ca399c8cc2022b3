"""The blocking-TCP baseline's wire format, shared by its server process and its client (neither imports the other).

A connection starts with one mode byte, then carries messages, each a 4-byte big-endian length and that many bytes:

- `ECHO_MODE`: every message goes straight back, prefix included (ping-pong);
- `COLLECT_MODE`: messages are kept until an empty one, then all sent back, followed by an empty one (upload, then
  download: what one call with a large argument and an equally large result does). This repeats until the client
  closes.

A mode byte, not a message type: a connection does one thing for its whole life, so the server decides once and its
echo loop looks at nothing but lengths. There is no session, no encryption, no thread matching and no event loop:
this is the floor, what moving the same bytes between two Python processes over a blocking socket costs.
"""

from __future__ import annotations

import socket

KiB = 1 << 10
MiB = 1 << 20

#: The line the server prints on standard output once it listens: the prefix, then the port.
READY_PREFIX = "ASYLO-BENCH-RAW-TCP-READY port="
ECHO_MODE = b"E"
COLLECT_MODE = b"C"
HEADER = 4
#: Largest message either side accepts. The benchmark sends at most its bulk payload in one message (64 MiB by
#: default; it sends 1 MiB pieces, but a caller of this module may not), and 64 KiB of slack leaves room for whatever
#: a caller frames inside it. Anything above is a corrupt or hostile prefix: refused before a byte is allocated for
#: it, so that four bytes cannot make the server allocate 4 GiB.
MAX_MESSAGE = 64 * MiB + 64 * KiB
#: Most bytes a collecting connection holds before it answers: the project's largest call or result
#: (`SessionLimits.max_message_size`, 256 MiB), since collect mode stands for one call's upload and download.
MAX_HELD = 256 * MiB
#: Bytes read past the message being assembled, at most. Reading ahead lets one `recv_into` bring a small message's
#: prefix and body (and the next messages) at once; bounding it bounds what moving a partial message to the front
#: of the buffer copies, so a 1 MiB message is received in place and never copied again.
READ_AHEAD = 64 * KiB
EMPTY = bytes(HEADER)


class FrameError(Exception):
    """The stream broke the format: a length above the bound, or the end of the stream inside a message."""


def header(length: int) -> bytes:
    return length.to_bytes(HEADER, "big")


def message(payload: bytes) -> bytes:
    """`payload` with its length prefix, ready for one `sendall`."""
    return header(len(payload)) + payload


class FrameReader:
    """Messages from a blocking socket, received with `recv_into` into one buffer that is kept and reused.

    The buffer starts small and grows (never shrinks) to the largest message seen plus READ_AHEAD, so a connection
    that only ever moves 64-byte messages holds 64 KiB, not the 64 MiB bound.
    """

    def __init__(self, sock: socket.socket, limit: int = MAX_MESSAGE) -> None:
        self._sock = sock
        self._limit = limit
        self._buffer = bytearray(2 * READ_AHEAD)
        self._view = memoryview(self._buffer)
        self._start = 0  # first byte not yet handed out
        self._end = 0  # end of the bytes received

    def next(self) -> memoryview | None:
        """The next message, its length prefix included (an echo sends it back as it is); None if the stream ended
        cleanly between messages. The view is valid until the next call. FrameError if the length is above the
        bound (nothing more is read) or the stream ends inside a message."""
        if not self._fill(HEADER):
            if self._end == self._start:
                return None
            raise FrameError("the stream ended inside a length prefix")
        start = self._start
        length = int.from_bytes(self._view[start:start + HEADER], "big")
        if length > self._limit:
            raise FrameError(f"a message of {length} bytes is above the bound of {self._limit}")
        if not self._fill(HEADER + length):
            raise FrameError("the stream ended inside a message")
        start = self._start  # _fill may have moved the bytes to the front
        self._start = start + HEADER + length
        return self._view[start:self._start]

    def _fill(self, needed: int) -> bool:
        """At least `needed` bytes from `_start` on in the buffer; False if the stream ends first."""
        if self._start == self._end:
            self._start = self._end = 0
        if self._start + needed > len(self._buffer):
            self._make_room(needed)
        while self._end - self._start < needed:
            stop = min(len(self._buffer), self._start + needed + READ_AHEAD)
            got = self._sock.recv_into(self._view[self._end:stop])
            if not got:
                return False
            self._end += got
        return True

    def _make_room(self, needed: int) -> None:
        """Move the pending bytes (at most READ_AHEAD plus a prefix) to the front, into a larger buffer if need be."""
        pending = bytes(self._view[self._start:self._end])
        if needed + READ_AHEAD > len(self._buffer):
            # A new buffer rather than a resize: the caller may still hold a view of the old one.
            self._buffer = bytearray(needed + READ_AHEAD)
            self._view = memoryview(self._buffer)
        self._view[:len(pending)] = pending
        self._start, self._end = 0, len(pending)
