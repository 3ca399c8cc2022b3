"""A TCP relay on loopback that records every byte going through it: what the network (or the proxy machine's
network stack) sees of a gRPC connection."""

from __future__ import annotations

import contextlib
import socket
import threading


class CaptureRelay:
    """Listens on 127.0.0.1 (an ephemeral port), forwards each connection to `target_port`, records both ways."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.to_proxy = bytearray()
        self.to_host = bytearray()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="capture-relay-accept", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            with self._lock:
                self._sockets += [client, upstream]
                for source, sink, record in ((client, upstream, self.to_proxy), (upstream, client, self.to_host)):
                    pump = threading.Thread(target=self._pump, args=(source, sink, record),
                                            name="capture-relay-pump", daemon=True)
                    self._threads.append(pump)
                    pump.start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bytearray) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                with self._lock:
                    record += data
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    @property
    def captured(self) -> bytes:
        with self._lock:
            return bytes(self.to_proxy) + bytes(self.to_host)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not, on Linux)
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
