"""Test enclave: one entry point per scenario of Asylo's primitives_test."""

from __future__ import annotations

import os
import threading
import time

from asylo.primitives.extents import MessageReader, MessageWriter
from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.session.body import BodyFrames
from asylo.status import InvalidArgumentError, NotFoundError
from asylo.trusted import TrustedApplication, entry_point, entry_selector

from . import counter

_per_thread = threading.local()


def _int(raw: bytes) -> int:
    return MessageReader([raw]).next_u64()


def _u64(value: int) -> bytes:
    return MessageWriter().push_u64(value).extents()[0]


class Unprintable(Exception):  # noqa: N818 - named for what it does
    """An exception whose message cannot be made: the answer to the call must still go back."""

    def __str__(self) -> str:
        raise ValueError("no message for you")


class PrimitivesTestEnclave(TrustedApplication):
    def initialize(self, config: EnclaveConfig) -> None:
        if config.data == b"fail":
            raise InvalidArgumentError("initialize was told to fail")
        # A file for finalize to touch, so a test can see that finalize ran in a process it cannot ask.
        self.finalize_marker = config.data.removeprefix(b"finalize-marker:").decode() if config.data.startswith(
            b"finalize-marker:") else None
        self.name = config.name
        self.host.info(f"initialized as {config.name}")

    def run(self, enclave_input: EnclaveInput) -> EnclaveOutput:
        return EnclaveOutput(data=b"ran:" + enclave_input.data)

    def finalize(self, enclave_final: EnclaveFinal) -> None:
        if self.finalize_marker:
            with open(self.finalize_marker, "w") as marker:
                marker.write("finalized")
        if enclave_final.data:
            self.host.call("finalized", enclave_final.data)
        if enclave_final.data == b"fail":
            raise InvalidArgumentError("finalize was told to fail")

    @entry_point
    def echo(self, value: bytes) -> bytes:
        return value

    @entry_point("enclave_name")
    def name_of_enclave(self) -> bytes:
        return self.name.encode()

    @entry_selector(300)
    def reverse_each(self, extents: list[bytes]) -> list[bytes]:
        """Several extents each way: every extent reversed, then their count."""
        return [e[::-1] for e in extents] + [_u64(len(extents))]

    @entry_point
    def fibonacci(self, n: bytes) -> bytes:
        """Fibonacci through the host: each step below goes out to the host's 'fibonacci' handler and back."""
        value = _int(n)
        if value < 2:
            return _u64(value)
        return _u64(_int(self.host.call("fibonacci", _u64(value - 1))) + _int(self.host.call("fibonacci",
                                                                                                _u64(value - 2))))

    @entry_point
    def thread_counter(self) -> bytes:
        """Per-thread state: counts the calls made on this enclave thread."""
        _per_thread.count = getattr(_per_thread, "count", 0) + 1
        return _u64(_per_thread.count)

    @entry_point
    def worker_count(self) -> bytes:
        """How many enclave worker threads this process runs (one per host thread the enclave serves)."""
        return _u64(sum(1 for thread in threading.enumerate() if "-worker-" in thread.name))

    @entry_point
    def thread_id(self) -> bytes:
        return _u64(threading.get_ident())

    @entry_point
    def square(self, value: bytes) -> bytes:
        return _u64(_int(value) ** 2 % 2**64)

    @entry_point
    def module_calls(self) -> bytes:
        counter.calls += 1
        return _u64(counter.calls)

    @entry_point("abort")
    def abort_now(self) -> bytes:
        self.abort("the test asked for it")
        raise AssertionError("abort returned")

    @entry_point
    def fail_unknown(self) -> bytes:
        raise ValueError("an unexpected enclave error")

    @entry_point
    def fail_unprintable(self) -> bytes:
        raise Unprintable

    @entry_point
    def fail_not_found(self) -> bytes:
        raise NotFoundError("the enclave could not find it")

    @entry_point
    def call_host(self, name: bytes, *args: bytes) -> bytes:
        return self.host.call(name.decode(), *args)

    @entry_point
    def host_selector(self, selector: bytes, *extents: bytes) -> bytes:
        return b"|".join(self.host.exit_call(_int(selector), list(extents)))

    @entry_point
    def host_services(self, text: bytes) -> bytes:
        self.host.warning(text.decode())
        self.host.print("stdout:", text.decode())
        return _u64(self.host.time_ns())

    @entry_point
    def wrong_return(self) -> bytes:
        return "not bytes"  # type: ignore[return-value]

    @entry_point
    def origin(self) -> bytes:
        from . import helper_check  # noqa: PLC0415 - imported on demand, from the image

        return helper_check.ORIGIN.encode()

    @entry_point
    def sleep(self, seconds: bytes) -> bytes:
        time.sleep(_int(seconds) / 1000)
        return b"slept"

    @entry_point
    def pid(self) -> bytes:
        return _u64(os.getpid())

    @entry_point
    def break_large_bodies(self) -> bytes:
        """From now on, building a large body's fragments fails in this process (as if memory ran out), which the
        proxy does while writing large results: a test that the host is told rather than left waiting."""
        def out_of_memory(*_: object) -> bytes:
            raise MemoryError("test: no memory for a fragment")

        BodyFrames.fragment_parts = out_of_memory  # type: ignore[method-assign,assignment]
        return b"broken"
