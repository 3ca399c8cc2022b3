"""The project's side: the benchmark enclave built into a throwaway image, loaded over the remote backend.

The enclave runs in a proxy process started by local provisioning (the default), so client and server are separate
processes on loopback, exactly as for the baseline.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import asylo
from asylo.bench.gang import Gang
from asylo.image import build_image, generate_signing_key, write_image
from asylo.remote import transports as remote_transports
from asylo.remote.transports import Transport
from asylo.status import InternalError

ENCLAVE_DIR = Path(__file__).parent / "enclave"
ENCLAVE_NAME = "asylo-bench"
#: The enclave's selectors (see enclave/bench_app.py).
ECHO = 300
NESTED = 301
HOST_ECHO = 400

#: The `transport` of each remote column: "asylo" (the default, the direct stream: named, so that ASYLO_TRANSPORT in
#: the environment cannot change what the column measures) and "asylo grpc".
DEFAULT_TRANSPORT: Transport | None = remote_transports.DEFAULT_TRANSPORT
GRPC_TRANSPORT: Transport | None = "grpc"


@contextlib.contextmanager
def bench_image() -> Iterator[Path]:
    """The benchmark enclave's image, signed with a key made for this run, in a directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="asylo-bench-") as directory:
        path = Path(directory) / "bench.aimg"
        write_image(path, build_image(ENCLAVE_DIR, generate_signing_key()))
        yield path


def _host_echo(extents: list[bytes]) -> Sequence[bytes]:
    return extents


class RemoteBench:
    """One remote benchmark enclave and the measurements made through it."""

    def __init__(self, image_path: Path, *, attestation: bool = True, transport: Transport | None = None) -> None:
        """`attestation` False: the same session without the attested handshake and record encryption, only to
        measure what they cost. `transport`: the proxy configuration's, if given (None: its default)."""
        exit_calls = asylo.ExitCallRegistry()
        exit_calls.register_selector(HOST_ECHO, _host_echo)
        self._manager = asylo.EnclaveManager()
        proxy = asylo.RemoteProxyClientConfig(asylo.LocalProvision(), attestation=attestation, transport=transport)
        try:
            self.client = self._manager.load_enclave(asylo.EnclaveLoadConfig(
                ENCLAVE_NAME, remote=asylo.RemoteLoadConfig(image_path, proxy=proxy, debug=True),
                exit_calls=exit_calls))
        except BaseException:
            self._manager.shutdown()
            raise

    def close(self) -> None:
        try:
            self._manager.destroy_enclave(self.client)
        finally:
            self._manager.shutdown()

    def _timed(self, selector: int, extents: list[bytes], calls: int, expect: int) -> list[int]:
        enter = self.client.enter
        times = []
        for _ in range(calls):
            began = time.perf_counter_ns()
            answer = enter(selector, extents)
            times.append(time.perf_counter_ns() - began)
        if len(answer[-1]) != expect:
            raise InternalError("the benchmark enclave did not echo")
        return times

    def echo(self, size: int, calls: int) -> list[int]:
        """Nanoseconds per entry call that sends `size` bytes and gets them back."""
        return self._timed(ECHO, [bytes(size)], calls, size)

    def nested(self, size: int, exits: int, calls: int) -> list[int]:
        """Nanoseconds per entry call that makes `exits` nested exit calls of `size` bytes each."""
        return self._timed(NESTED, [exits.to_bytes(4, "little"), bytes(size)], calls, size)

    def enter_and_run(self, size: int, calls: int) -> list[int]:
        """Nanoseconds per `enter_and_run` (the Run lifecycle call: protobuf EnclaveInput/EnclaveOutput)."""
        enclave_input = asylo.EnclaveInput(data=bytes(size))
        run = self.client.enter_and_run
        times = []
        for _ in range(calls):
            began = time.perf_counter_ns()
            output = run(enclave_input)
            times.append(time.perf_counter_ns() - began)
        if len(output.data) != size:
            raise InternalError("the benchmark enclave did not echo")
        return times

    def threads(self, gang: Gang, size: int, calls_per_thread: int) -> float:
        """Calls per second: every thread of `gang` making `calls_per_thread` echo calls of `size` bytes."""
        extents = [bytes(size)]
        enter = self.client.enter

        def work(calls: int) -> None:
            for _ in range(calls):
                enter(ECHO, extents)

        gang.run(lambda _: work(1))  # every host thread has its enclave worker before timing starts
        return gang.size * calls_per_thread / gang.run(lambda _: work(calls_per_thread))

    def bulk(self, size: int) -> float:
        """Seconds for one entry call that sends `size` bytes and gets them back."""
        payload = [bytes(size)]
        began = time.perf_counter()
        answer = self.client.enter(ECHO, payload)
        elapsed = time.perf_counter() - began
        if len(answer) != 1 or len(answer[0]) != size:
            raise InternalError("the benchmark enclave did not echo")
        return elapsed
