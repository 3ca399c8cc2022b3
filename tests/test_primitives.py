"""Asylo's primitives_test scenarios, on the sim backend, through the public API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

import asylo
from asylo.primitives import selectors
from tests.conftest import enclave_worker_threads, eventually, from_u64, raising_into, u64

Load = Callable[..., asylo.EnclaveClient]


@pytest.fixture(params=["sim", "remote"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every scenario runs in-process and through a real proxy process over loopback gRPC."""
    return str(request.param)


def test_unknown_selector_is_not_found(load_primitives: Load) -> None:
    client = load_primitives()
    with pytest.raises(asylo.NotFoundError, match="selector 9999"):
        client.enter(9999, [b"x"])
    with pytest.raises(asylo.NotFoundError, match="no entry point named 'nope'"):
        client.call("nope")
    assert client.call("echo", b"still fine") == b"still fine"


def test_unknown_exit_handler_is_not_found_inside_the_enclave(load_primitives: Load) -> None:
    client = load_primitives()
    with pytest.raises(asylo.NotFoundError, match="no exit handler named 'missing'"):
        client.call("call_host", b"missing")
    with pytest.raises(asylo.NotFoundError, match="no exit handler for selector 4242"):
        client.call("host_selector", u64(4242))


def test_two_independent_enclave_instances(load_primitives: Load) -> None:
    first = load_primitives("first")
    second = load_primitives("second")
    assert [from_u64(first.call("module_calls")) for _ in range(3)] == [1, 2, 3]
    # The same image, but its own modules: the second instance starts from zero.
    assert from_u64(second.call("module_calls")) == 1
    assert first.call("enclave_name") == b"first"
    assert second.call("enclave_name") == b"second"
    first.destroy()
    assert second.call("echo", b"alive") == b"alive"


def test_call_after_destroy_fails(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    client = load_primitives()
    manager.destroy_enclave(client)
    with pytest.raises(asylo.EnclaveUnavailable, match="destroyed"):
        client.call("echo", b"x")
    with pytest.raises(asylo.EnclaveUnavailable):
        client.enter_and_run(asylo.EnclaveInput())
    with pytest.raises(asylo.FailedPreconditionError, match="already destroyed"):
        manager.destroy_enclave(client)
    with pytest.raises(asylo.NotFoundError):
        manager.get_client("primitives")


def test_abort(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    client = load_primitives()
    with pytest.raises(asylo.AbortedError, match="the test asked for it"):
        client.call("abort")
    assert eventually(lambda: client.closed)  # remote: the proxy's goodbye follows the aborting result
    with pytest.raises(asylo.EnclaveUnavailable, match="aborted: the test asked for it"):
        client.call("echo", b"x")
    # Destroying an aborted enclave skips the finalize it can no longer run, and still unloads it.
    manager.destroy_enclave(client)
    assert manager.loaded_enclaves() == []


def test_call_chain_fibonacci_through_reentrant_exit_handler(load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()
    client = load_primitives(exit_calls=registry)
    host_calls = 0

    @registry.register("fibonacci")
    def fibonacci(n: bytes) -> bytes:
        nonlocal host_calls
        host_calls += 1
        value = from_u64(n)
        if value < 2:
            return u64(value)
        # Back into the enclave from inside its own exit call: re-entrancy, to any depth.
        return u64(from_u64(client.call("fibonacci", u64(value - 1))) + from_u64(client.call("fibonacci",
                                                                                           u64(value - 2))))

    assert from_u64(client.call("fibonacci", u64(20))) == 6765
    assert host_calls > 1000


def test_32_threads_x_64_calls(load_primitives: Load) -> None:
    client = load_primitives()

    def worker(index: int) -> list[int]:
        return [from_u64(client.call("square", u64(index * 1000 + i))) for i in range(64)]

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(worker, range(32)))
    for index, squares in enumerate(results):
        assert squares == [(index * 1000 + i) ** 2 for i in range(64)]


def test_thread_local_state_per_host_thread(load_primitives: Load) -> None:
    """64 host threads x 256 calls: each host thread sees its own enclave thread, and only its own."""
    client = load_primitives()
    barrier = threading.Barrier(64)
    seen: dict[int, tuple[list[int], set[int]]] = {}

    def worker(index: int) -> None:
        barrier.wait()  # all 64 alive at once, so no enclave thread can be handed from one to the next
        counts = [from_u64(client.call("thread_counter")) for _ in range(256)]
        ids = {from_u64(client.call("thread_id")) for _ in range(4)}
        seen[index] = (counts, ids)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 64
    enclave_threads: set[int] = set()
    for counts, ids in seen.values():
        assert counts == list(range(1, 257))
        assert len(ids) == 1
        enclave_threads |= ids
    assert len(enclave_threads) == 64


@pytest.mark.parametrize("backend", ["sim"])
def test_enclave_thread_ends_with_its_host_thread(load_primitives: Load) -> None:
    client = load_primitives()  # loading ran initialize on this thread: it has an enclave thread already
    before = set(enclave_worker_threads())
    thread = threading.Thread(target=client.call, args=("echo", b"x"))
    thread.start()
    thread.join()
    del thread
    new = [worker for worker in enclave_worker_threads() if worker not in before]
    for worker in new:
        worker.join(timeout=5)
    assert [worker for worker in new if worker.is_alive()] == []
    assert set(enclave_worker_threads()) == before
    assert client.call("echo", b"main thread") == b"main thread"


def test_several_extents_each_way(load_primitives: Load) -> None:
    client = load_primitives()
    extents = [b"", b"a", b"bc", bytes(range(256)), b"x" * 100_000]
    answer = client.enter(300, extents)
    assert answer[:-1] == [e[::-1] for e in extents]
    assert from_u64(answer[-1]) == len(extents)
    assert client.enter(300, []) == [u64(0)]


def test_exit_call_with_selector_and_extents(load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()
    registry.register_selector(400, lambda extents: [e.upper() for e in extents] + [b"done"])
    client = load_primitives(exit_calls=registry)
    assert client.call("host_selector", u64(400), b"ab", b"", b"cd") == b"AB||CD|done"


def test_exit_handler_exception_comes_back_as_status(load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()

    @registry.register("explode")
    def explode() -> bytes:
        raise RuntimeError("host handler failed")

    @registry.register("denied")
    def denied() -> bytes:
        raise asylo.PermissionDeniedError("not for you")

    client = load_primitives(exit_calls=registry)
    with pytest.raises(asylo.UnknownError, match="RuntimeError: host handler failed"):
        client.call("call_host", b"explode")
    with pytest.raises(asylo.PermissionDeniedError, match="not for you"):
        client.call("call_host", b"denied")
    assert client.call("echo", b"ok") == b"ok"


def test_enclave_exceptions_come_back_as_status(load_primitives: Load) -> None:
    client = load_primitives()
    with pytest.raises(asylo.UnknownError, match="ValueError: an unexpected enclave error"):
        client.call("fail_unknown")
    with pytest.raises(asylo.NotFoundError, match="could not find it"):
        client.call("fail_not_found")
    with pytest.raises(asylo.InternalError, match="must return bytes"):
        client.call("wrong_return")
    with pytest.raises(asylo.InvalidArgumentError, match="'square' called with 0 arguments"):
        client.call("square")
    with pytest.raises(asylo.InvalidArgumentError, match="should be an unsigned 64-bit integer"):
        client.call("square", b"short")
    assert client.call("echo", b"ok") == b"ok"


class _Unprintable(Exception):  # noqa: N818 - named for what it does
    def __str__(self) -> str:
        raise ValueError("no message for you")


def test_exceptions_that_cannot_be_printed_still_come_back_as_status(load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()

    @registry.register("unprintable")
    def unprintable() -> bytes:
        raise _Unprintable

    client = load_primitives(exit_calls=registry)
    with pytest.raises(asylo.UnknownError, match=r"Unprintable: <the exception could not be printed>"):
        client.call("fail_unprintable")
    with pytest.raises(asylo.UnknownError, match=r"_Unprintable: <the exception could not be printed>"):
        client.call("call_host", b"unprintable")
    assert client.call("echo", b"ok") == b"ok"


@pytest.mark.parametrize("backend", ["sim"])
def test_a_host_thread_the_enclave_has_no_thread_for_is_refused(load_primitives: Load,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    client = load_primitives()
    start = threading.Thread.start

    def no_workers(thread: threading.Thread) -> None:
        if "-worker-" in thread.name:
            raise RuntimeError("can't start new thread")
        start(thread)

    errors: list[BaseException] = []
    monkeypatch.setattr(threading.Thread, "start", no_workers)
    # A new host thread: it needs an enclave thread of its own.
    caller = threading.Thread(target=raising_into(errors, lambda: client.call("echo", b"x")))
    caller.start()
    caller.join(10)
    monkeypatch.undo()
    assert not caller.is_alive() and len(errors) == 1
    assert isinstance(errors[0], asylo.ResourceExhaustedError) and "cannot start a thread" in str(errors[0])
    assert client.call("echo", b"still here") == b"still here"  # and destroying it (the fixture) works


def test_built_in_host_calls(load_primitives: Load, caplog: pytest.LogCaptureFixture,
                             capsys: pytest.CaptureFixture[str]) -> None:
    client = load_primitives("hosted")
    before = time.time_ns()
    with caplog.at_level(logging.INFO, logger="asylo.enclave.hosted"):
        host_time = from_u64(client.call("host_services", b"hello host"))
    assert before <= host_time <= time.time_ns()
    assert ("asylo.enclave.hosted", logging.WARNING, "hello host") in caplog.record_tuples
    assert capsys.readouterr().out == "stdout: hello host\n"


def test_reserved_selectors_refused_for_user_handlers() -> None:
    registry = asylo.ExitCallRegistry()
    with pytest.raises(ValueError, match="reserved"):
        registry.register_selector(selectors.EXIT_LOG, lambda e: e)
    with pytest.raises(ValueError, match="reserved"):
        asylo.trusted.entry_selector(129)


def test_enclave_code_comes_from_the_image(load_primitives: Load) -> None:
    client = load_primitives()
    assert client.call("origin") == b"image"


@pytest.mark.parametrize("backend", ["sim"])
def test_worker_thread_limit(load_primitives: Load) -> None:
    client = load_primitives(max_threads=2)  # this thread holds one enclave thread already (it ran initialize)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        client.call("echo", b"x")  # a live host thread keeps its enclave thread
        held.set()
        release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        errors: list[BaseException] = []
        refused = threading.Thread(target=raising_into(errors, lambda: client.call("echo", b"third thread")))
        refused.start()
        refused.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], asylo.ResourceExhaustedError)
        assert "already serves 2 host threads" in str(errors[0])
        assert client.call("echo", b"the others still work") == b"the others still work"
    finally:
        release.set()
        holder.join(10)
