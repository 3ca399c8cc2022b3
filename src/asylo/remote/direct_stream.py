"""The direct stream's bytes: session records on one socket — TCP, TLS over TCP, or AF_VSOCK — each after its length.

    record := length (4 bytes, big-endian) || the sealed frame (exactly `length` bytes)

That is all the framing there is: the session core already numbers, seals and checks every frame, so the stream
only has to say where one ends. A reader checks each length against the largest record the session takes before it
reads a byte of the record, so a peer cannot make it buffer more than that (a frame and its fragment header, about
1 MiB by default; the welcome, with hardware evidence, at most ~80 KiB).

Addresses: "host:port" and "[v6]:port" are TCP; "vsock:CID:PORT" is AF_VSOCK, the only way a Nitro Enclave talks to
its parent instance. Plaintext is refused anywhere but loopback (`ClientCredentials.check_target`,
`ServerCredentials.check_listen_address`); vsock never leaves the machine, but it crosses from a VM to its host, so
it gets the same rule as any other address that is not loopback: TLS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import ssl
import struct
import threading

from asylo.remote.credentials import ClientCredentials, ServerCredentials
from asylo.status import DeadlineExceededError, EnclaveUnavailable, FailedPreconditionError, InvalidArgumentError

__all__ = ["RecordListener", "RecordStream", "StreamAddress", "connect", "listen", "parse_address"]

_HEADER = struct.Struct(">I")
HEADER_SIZE = _HEADER.size
#: Records this small are written with their length in one send (one TCP segment, one TLS record); larger ones in
#: two, rather than copying a megabyte to put four bytes in front of it.
_JOIN_BELOW = 64 * 1024
#: What one receive asks the kernel for at most when reading ahead: several small records in one system call.
_READ_AHEAD = 256 * 1024
VSOCK_SCHEME = "vsock:"


@dataclasses.dataclass(frozen=True)
class StreamAddress:
    """A parsed address: the socket family, the address tuple for connect/bind, and the host name TLS checks."""

    family: int
    sockaddr: tuple[str | int, int]
    host: str
    text: str

    @property
    def is_vsock(self) -> bool:
        return self.family == getattr(socket, "AF_VSOCK", -1)


def parse_address(text: str) -> StreamAddress:
    """"host:port", "[v6]:port" or "vsock:CID:PORT" (InvalidArgumentError for anything else)."""
    if text.startswith(VSOCK_SCHEME):
        cid, colon, port = text[len(VSOCK_SCHEME):].partition(":")
        if not (colon and cid.isdigit() and port.isdigit()):
            raise InvalidArgumentError(f"bad vsock address {text!r}: expected vsock:CID:PORT (numbers)")
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            raise FailedPreconditionError(f"{text}: this system has no AF_VSOCK sockets")
        return StreamAddress(family, (int(cid), int(port)), cid, text)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else ""
        family = socket.AF_INET6
    else:
        host, _, port = text.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not host or not port.isdigit() or int(port) > 65535:
        raise InvalidArgumentError(f"bad address {text!r}: expected host:port, [v6]:port or vsock:CID:PORT")
    if host == "localhost":
        host, family = "127.0.0.1", socket.AF_INET
    return StreamAddress(family, (host, int(port)), host, text)


class RecordStream:
    """One connected socket, read and written record by record.

    Not a lock of its own: one thread reads at a time and one writes at a time, which the direct link arranges
    (reading and writing at once is fine: a socket is two streams). `shutdown` may come from any thread at any time:
    it wakes a reader or writer blocked in the kernel, which then fails with EnclaveUnavailable."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # A small record must not wait for the peer's acknowledgement of the last one (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self.peer = peer
        self._buffer = bytearray(_READ_AHEAD)
        self._view = memoryview(self._buffer)
        self._start = 0  # unread bytes are self._buffer[start:end]
        self._end = 0
        self._shut = threading.Event()

    # -- writing ------------------------------------------------------------------------------------------------

    def write(self, record: bytes | bytearray | memoryview) -> None:
        """The record, after its length. EnclaveUnavailable if the stream is gone."""
        header = _HEADER.pack(len(record))
        try:
            if len(record) < _JOIN_BELOW:
                self._sock.sendall(header + record)
            else:
                self._sock.sendall(header)
                self._sock.sendall(record)
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
            raise EnclaveUnavailable(f"the connection to {self.peer} is gone: {exc}") from None

    def write_framed(self, buffer: bytearray, length: int) -> None:
        """The record already in `buffer[HEADER_SIZE:HEADER_SIZE + length]`: its length goes in front, in the room
        left for it, and both leave in one send, straight from the buffer."""
        _HEADER.pack_into(buffer, 0, length)
        try:
            self._sock.sendall(memoryview(buffer)[:HEADER_SIZE + length])
        except (OSError, ValueError) as exc:
            raise EnclaveUnavailable(f"the connection to {self.peer} is gone: {exc}") from None

    # -- reading ------------------------------------------------------------------------------------------------

    def read(self, limit: int) -> memoryview | None:
        """The next record (a view into this stream's buffer, valid until the next `read`), or None at the end of
        the stream between records. InvalidArgumentError for a record longer than `limit` (checked before it is
        read); EnclaveUnavailable if the stream breaks or ends inside a record."""
        if not self._fill(HEADER_SIZE, at_boundary=True):
            return None
        (length,) = _HEADER.unpack_from(self._buffer, self._start)
        if length > limit:
            raise InvalidArgumentError(f"a record of {length} bytes from {self.peer}, more than the {limit} the "
                                       f"session takes")
        self._fill(HEADER_SIZE + length, at_boundary=False)
        begin = self._start + HEADER_SIZE
        self._start = begin + length
        return self._view[begin:begin + length]

    def _fill(self, need: int, *, at_boundary: bool) -> bool:
        """At least `need` unread bytes in the buffer (False: the stream ended cleanly before any of them)."""
        if self._end - self._start >= need:
            return True
        if len(self._buffer) - self._start < need:
            self._make_room(need)
        while self._end - self._start < need:
            try:
                count = self._sock.recv_into(self._view[self._end:], len(self._buffer) - self._end)
            except (OSError, ValueError) as exc:
                raise EnclaveUnavailable(f"the connection to {self.peer} is gone: {exc}") from None
            if count == 0:
                if at_boundary and self._end == self._start:
                    return False
                raise EnclaveUnavailable(f"the connection to {self.peer} ended in the middle of a record")
            self._end += count
        return True

    def _make_room(self, need: int) -> None:
        """Move the unread bytes to the front, into a larger buffer if `need` does not fit. A new buffer rather than
        a resized one: views of the old one (the last record) may still be alive."""
        unread = self._end - self._start
        if need > len(self._buffer):
            buffer = bytearray(max(need, _READ_AHEAD))
            buffer[:unread] = self._view[self._start:self._end]
            self._buffer, self._view = buffer, memoryview(buffer)
        else:
            self._view[:unread] = self._view[self._start:self._end]
        self._start, self._end = 0, unread

    def readable_now(self) -> bool:
        """True if a read would find bytes at once (buffered here, in TLS, or in the kernel) or the end of the
        stream, without waiting for the peer."""
        if self._end > self._start or (isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()):
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True  # broken: the read will say so
        return bool(readable)

    # -- the end ------------------------------------------------------------------------------------------------

    def peer_certificate(self) -> bytes | None:
        """The peer's TLS certificate (DER), if it presented one."""
        if isinstance(self._sock, ssl.SSLSocket):
            return self._sock.getpeercert(binary_form=True)
        return None

    def end_writing(self) -> None:
        """Tell the peer nothing more comes (after the goodbye): it reads the end of the stream."""
        try:
            if isinstance(self._sock, ssl.SSLSocket):
                return  # a TLS close_notify would need the read side quiet; closing ends it for the peer
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop_reading(self) -> None:
        """Wake a blocked reader with the end of the stream, but keep writing possible (a last goodbye)."""
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._sock, socket.SHUT_RD)

    def shutdown(self) -> None:
        """Break the stream both ways now (from any thread): a blocked read or write wakes and fails."""
        if self._shut.is_set():
            return
        self._shut.set()
        with contextlib.suppress(OSError):  # the raw socket's: no TLS alert that could block
            socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def close(self) -> None:
        self.shutdown()
        self._sock.close()


def connect(target: str, credentials: ClientCredentials, timeout: float) -> RecordStream:
    """A stream to `target`, with TLS unless the credentials are for loopback only (checked first: plaintext
    anywhere else is refused before a packet is sent). DeadlineExceededError after `timeout` seconds,
    EnclaveUnavailable if the connection is refused or the TLS handshake fails."""
    credentials.check_target(target)
    address = parse_address(target)
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address.sockaddr)
        if not credentials.insecure:
            name = credentials.server_name_override or address.host
            sock = credentials.ssl_context().wrap_socket(sock, server_hostname=name)
        return RecordStream(sock, target)
    except TimeoutError:
        sock.close()
        raise DeadlineExceededError(f"no connection to {target} within {timeout:g} s") from None
    except ssl.SSLError as exc:
        sock.close()
        raise EnclaveUnavailable(f"the TLS handshake with {target} failed: {exc.reason or exc}") from None
    except OSError as exc:
        sock.close()
        raise EnclaveUnavailable(f"cannot connect to {target}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise


class RecordListener:
    """A listening socket; `accept` gives one RecordStream per connection (after its TLS handshake)."""

    def __init__(self, address: str, credentials: ServerCredentials) -> None:
        credentials.check_listen_address(address)
        parsed = parse_address(address)
        self._context = None if credentials.insecure else credentials.ssl_context()
        self._sock = socket.socket(parsed.family, socket.SOCK_STREAM)
        try:
            if not parsed.is_vsock:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(parsed.sockaddr)
            self._sock.listen(16)
        except OSError as exc:
            self._sock.close()
            raise FailedPreconditionError(f"could not listen on {address!r}: {exc.strerror or exc}") from None
        self.port = int(self._sock.getsockname()[1])
        self._closed = False

    def accept(self, handshake_timeout: float) -> RecordStream | None:
        """The next connection, or None once the listener is closed. A connection whose TLS handshake fails or
        takes longer than `handshake_timeout` is dropped and the next one awaited."""
        while True:
            try:
                sock, peer = self._sock.accept()
            except OSError:
                if self._closed:
                    return None
                continue  # the peer gave up between SYN and accept (ECONNABORTED): wait for the next
            name = _peer_name(peer)
            if self._context is None:
                return RecordStream(sock, name)
            try:
                sock.settimeout(handshake_timeout)
                return RecordStream(self._context.wrap_socket(sock, server_side=True), name)
            except (OSError, ssl.SSLError):
                sock.close()  # not a TLS client of ours (no certificate, another CA, a port scanner)

    def close(self) -> None:
        """Stop listening; a thread blocked in `accept` returns None."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def listen(address: str, credentials: ServerCredentials) -> RecordListener:
    """Listen on `address` ("host:port" with port 0 for an ephemeral one, or "vsock:CID:PORT")."""
    return RecordListener(address, credentials)


def _peer_name(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if isinstance(host, str) and ":" in host else f"{host}:{port}"
    return str(peer)
