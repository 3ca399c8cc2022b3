"""A TCP relay on loopback between a host and its proxy (plaintext gRPC) that can lose or corrupt one gRPC message of
the proxy's: what a faulty network, middlebox or proxy machine does to a stream.

It reads the proxy-to-host direction as HTTP/2 frames and the gRPC messages inside their DATA frames (a 5-byte prefix:
a compression flag and a big-endian length). Once armed with a predicate on a message's length, the first message it
matches (one that lies whole in one DATA frame) is

- dropped: cut out of its DATA frame (whose length shrinks to match), so the host's gRPC simply never sees that
  message (the proxy's flow-control window is a few hundred bytes short from then on: gRPC's own core refuses
  padded DATA frames, which would have kept it exact); or
- flipped: one bit of its gRPC length prefix is flipped (bit 16: 64 KiB longer), so the host's gRPC waits for bytes
  that never come, while HTTP/2 (and its keepalive pings) goes on as if nothing happened.

The host-to-proxy direction is forwarded untouched.

With `direct=True` it reads the direct stream instead (`asylo.remote.direct_stream`: records after a 4-byte
big-endian length): "drop" cuts one record out whole, "flip" flips bit 16 of its length, so the host reads 64 KiB
of what follows as that record's body.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

_DATA = 0x0
_PADDED = 0x8
_HEADER = 9  # HTTP/2 frame header: length (3), type, flags, stream id (4)
_PREFIX = 5  # gRPC message prefix: compressed flag, length (4)


class FaultRelay:
    def __init__(self, target_port: int, *, direct: bool = False) -> None:
        self._target_port = target_port
        self._direct = direct
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode = ""
        self._matches: Callable[[int], bool] | None = None
        #: Set once the armed fault was done; `acted_at` says when (time.monotonic).
        self.acted = threading.Event()
        self.acted_at = 0.0
        self.acted_on = 0  # the length of the message it acted on
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="fault-relay-accept", daemon=True)
        self._accepter.start()

    def arm(self, mode: str, matches: Callable[[int], bool]) -> None:
        """Drop (`mode` "drop") or corrupt the length of ("flip") the next message from the proxy whose length (its
        body, without the prefix) `matches`."""
        assert mode in ("drop", "flip")
        with self._lock:
            self._mode, self._matches = mode, matches
            self.acted.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            with self._lock:
                self._sockets += [client, upstream]
                frames = self._pump_records if self._direct else self._pump_frames
                for target, args in ((self._pump, (client, upstream)), (frames, (upstream, client))):
                    pump = threading.Thread(target=target, args=args, name="fault-relay-pump", daemon=True)
                    self._threads.append(pump)
                    pump.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _pump_frames(self, source: socket.socket, sink: socket.socket) -> None:
        buffer = bytearray()
        # Per stream: bytes of the current gRPC message still to come in later DATA frames.
        pending: dict[int, int] = {}
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                buffer += data
                out = bytearray()
                while len(buffer) >= _HEADER:
                    length = int.from_bytes(buffer[0:3], "big")
                    if len(buffer) < _HEADER + length:
                        break
                    frame = bytes(buffer[:_HEADER + length])
                    del buffer[:_HEADER + length]
                    out += self._process(frame, pending)
                sink.sendall(out)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _pump_records(self, source: socket.socket, sink: socket.socket) -> None:
        buffer = bytearray()
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                buffer += data
                out = bytearray()
                while len(buffer) >= 4:
                    size = int.from_bytes(buffer[0:4], "big")
                    if len(buffer) < 4 + size:
                        break
                    record = bytes(buffer[:4 + size])
                    del buffer[:4 + size]
                    out += self._record_fault(record, size)
                sink.sendall(out)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _claim(self, size: int) -> str | None:
        """The armed fault's mode if a message of `size` bytes is the one it waits for (disarming it), else None."""
        with self._lock:
            matches, mode = self._matches, self._mode
            if matches is None or not matches(size):
                return None
            self._matches = None
            self.acted_on = size
            self.acted_at = time.monotonic()
            self.acted.set()
            return mode

    def _record_fault(self, record: bytes, size: int) -> bytes:
        mode = self._claim(size)
        if mode is None:
            return record
        if mode == "drop":
            return b""
        return (size ^ (1 << 16)).to_bytes(4, "big") + record[4:]

    def _process(self, frame: bytes, pending: dict[int, int]) -> bytes:
        kind, flags = frame[3], frame[4]
        stream = int.from_bytes(frame[5:9], "big") & 0x7FFFFFFF
        if kind != _DATA or flags & _PADDED:
            return frame
        payload = frame[_HEADER:]
        pos = 0
        carried = pending.get(stream, 0)
        pos = min(carried, len(payload))
        pending[stream] = carried - pos
        while pos < len(payload):
            if len(payload) - pos < _PREFIX:  # a prefix split across frames: leave this frame alone
                pending[stream] = 0
                return frame
            size = int.from_bytes(payload[pos + 1:pos + 5], "big")
            end = pos + _PREFIX + size
            if end > len(payload):
                pending[stream] = end - len(payload)
                return frame
            acted = self._fault(frame, payload, pos, size)
            if acted is not None:
                return acted
            pos = end
        return frame

    def _fault(self, frame: bytes, payload: bytes, pos: int, size: int) -> bytes | None:
        mode = self._claim(size)
        if mode is None:
            return None
        header = bytearray(frame[:_HEADER])
        if mode == "flip":
            body = bytearray(payload)
            body[pos + 1:pos + 5] = (size ^ (1 << 16)).to_bytes(4, "big")
            return bytes(header) + bytes(body)
        rest = payload[:pos] + payload[pos + _PREFIX + size:]
        header[0:3] = len(rest).to_bytes(3, "big")
        return bytes(header) + rest

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accepter.join(5)
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(5)
