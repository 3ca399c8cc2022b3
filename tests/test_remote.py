"""The remote backend end to end: real proxy processes, real gRPC on loopback, real kills.

Asylo's communicator_test scenarios that test_primitives.py does not already run on both backends, and what Asylo's
remote backend got wrong: liveness, payload size, tokens, plaintext off loopback, TLS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import asylo
from asylo.remote import ProxyTls
from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.devca import create_dev_ca
from asylo.remote.direct_client import DirectEnclaveProxyClient
from asylo.remote.direct_link import DirectWriter
from asylo.remote.link import Outbox
from asylo.remote.provision import READY_PREFIX
from asylo.session import SessionLimits
from asylo.session.body import BodyFrames
from tests.conftest import eventually, from_u64, raising_into, u64

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

Load = Callable[..., asylo.EnclaveClient]
MiB = 1 << 20


@pytest.fixture
def backend() -> str:
    return "remote"


def proxy_pid(client: asylo.EnclaveClient) -> int:
    enclave = client.loaded_enclave
    assert isinstance(enclave, RemoteEnclaveProxyClient | DirectEnclaveProxyClient)
    assert enclave.proxy.pid is not None
    return enclave.proxy.pid


def test_no_calls(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    client = load_primitives()
    pid = proxy_pid(client)
    assert pid != os.getpid()
    manager.destroy_enclave(client)
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_enclave_runs_in_the_proxy_process(load_primitives: Load) -> None:
    client = load_primitives()
    assert from_u64(client.call("pid")) == proxy_pid(client)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are read on Linux")
def test_local_provisioning_starts_the_proxy_with_huge_pages_for_malloc(load_primitives: Load) -> None:
    environ = Path(f"/proc/{proxy_pid(load_primitives())}/environ").read_bytes().split(b"\0")
    tunables = [entry for entry in environ if entry.startswith(b"GLIBC_TUNABLES=")]
    assert len(tunables) == 1 and b"glibc.malloc.hugetlb=1" in tunables[0].split(b"=", 1)[1].split(b":")


def test_a_large_call_the_host_cannot_build_fails_the_session_without_a_hang(
        load_primitives: Load, monkeypatch: pytest.MonkeyPatch) -> None:
    client = load_primitives()
    pid = proxy_pid(client)

    def out_of_memory(*_: object) -> bytes:
        raise MemoryError("test: no memory for a fragment")

    # Bodies over 8 MiB are built fragment by fragment by the host's writer, on its I/O loop.
    monkeypatch.setattr(BodyFrames, "fragment_parts", out_of_memory)
    began = time.monotonic()
    with pytest.raises(asylo.EnclaveUnavailable, match=r"writing (to its proxy )?failed"):
        client.call("echo", b"x" * (9 * MiB))
    assert time.monotonic() - began < 10
    with pytest.raises(asylo.EnclaveUnavailable):
        client.call("echo", b"small")
    assert eventually(lambda: not Path(f"/proc/{pid}").exists() or
               Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=15)


def test_a_result_the_proxy_cannot_build_fails_the_call_or_the_session_without_a_hang(load_primitives: Load) -> None:
    client = load_primitives()
    assert client.call("break_large_bodies") == b"broken"
    assert client.call("echo", b"x" * 1000) == b"x" * 1000  # one frame: no fragments to build
    # A body of a few frames is built by the worker before anything is sent: that call fails, the session goes on.
    with pytest.raises(asylo.ResourceExhaustedError, match="the result could not be encoded: MemoryError"):
        client.call("echo", b"x" * MiB)
    assert client.call("echo", b"y" * 1000) == b"y" * 1000
    # A larger one is built by the proxy's writer as it goes out: frames are lost, so the session ends.
    began = time.monotonic()
    with pytest.raises(asylo.EnclaveUnavailable):
        client.call("echo", b"x" * (9 * MiB))
    assert time.monotonic() - began < 10
    with pytest.raises(asylo.EnclaveUnavailable):
        client.call("echo", b"small")


@pytest.mark.parametrize("queued", [False, True], ids=["before-queueing", "after-queueing"])
def test_an_interrupt_while_a_call_goes_out_leaves_the_thread_usable(load_primitives: Load,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     queued: bool, transport: str) -> None:
    client = load_primitives()
    sink: type[Outbox | DirectWriter] = DirectWriter if transport == "direct" else Outbox
    put = sink.put

    def interrupted(outbox: Outbox, *args: object, **kwargs: object) -> None:
        monkeypatch.setattr(sink, "put", put)  # once
        if queued:
            put(outbox, *args, **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(sink, "put", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.call("sleep", u64(300))
    for i in range(3):  # the same host thread: it got a fresh slot, and a late answer to the old one is absorbed
        assert client.call("echo", f"next {i}".encode()) == f"next {i}".encode()
    if queued:
        # The old slot's enclave thread is retired once its call is over: the enclave serves one host thread again.
        # (Interrupted before its frames were queued, the call stays in progress for the session, which then never
        # reports that thread gone: its enclave thread lives until the enclave is closed. Telling the two apart
        # is not possible where an interrupt can land between any two bytecodes.)
        assert eventually(lambda: from_u64(client.call("worker_count")) == 1, timeout=10)


def test_ctrl_c_while_waiting_leaves_the_thread_usable(load_primitives: Load) -> None:
    """A real SIGINT while the main thread waits for a long call (over the direct stream it is the thread reading
    the socket): KeyboardInterrupt, and the same thread's next calls work."""
    assert threading.current_thread() is threading.main_thread()
    client = load_primitives()
    assert client.call("echo", b"warm") == b"warm"
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            client.call("sleep", u64(1500))
    finally:
        timer.join()
    for i in range(3):
        assert client.call("echo", f"after {i}".encode()) == f"after {i}".encode()


def test_an_interrupt_after_the_answer_came_retires_the_old_enclave_thread(load_primitives: Load,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client = load_primitives()
    raise_for_status = asylo.Status.raise_for_status

    def interrupted(status: asylo.Status) -> None:
        monkeypatch.setattr(asylo.Status, "raise_for_status", raise_for_status)  # once
        raise KeyboardInterrupt  # the answer is in: it was taken from the thread's inbox a moment ago

    monkeypatch.setattr(asylo.Status, "raise_for_status", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.call("echo", b"answered")
    assert client.call("echo", b"next") == b"next"
    assert eventually(lambda: from_u64(client.call("worker_count")) == 1, timeout=10)


def test_calls_from_inside_the_transport_are_refused_not_a_deadlock(load_primitives: Load,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client = load_primitives()
    enclave = client.loaded_enclave
    assert isinstance(enclave, RemoteEnclaveProxyClient | DirectEnclaveProxyClient)
    errors: list[BaseException] = []
    call_from_here = raising_into(errors, lambda: client.call("echo", b"nested"))

    # A finalizer run by the garbage collector on the connection's I/O thread (the direct stream's keeper)...
    done = threading.Event()
    if isinstance(enclave, DirectEnclaveProxyClient):
        tick = enclave._link.tick

        def tick_with_a_finalizer(now: float) -> object:
            monkeypatch.setattr(enclave._link, "tick", tick)
            call_from_here()
            done.set()
            return tick(now)

        monkeypatch.setattr(enclave._link, "tick", tick_with_a_finalizer)
    else:
        enclave._loop.call_soon_threadsafe(lambda: (call_from_here(), done.set()))
    assert done.wait(10)
    # ... and one run while this thread holds the session's lock, in the middle of sending a call.
    session = enclave._link.session
    send_call = session.send_call

    def send_call_with_a_finalizer(call: object) -> object:
        monkeypatch.setattr(session, "send_call", send_call)
        call_from_here()
        return send_call(call)  # type: ignore[arg-type]

    monkeypatch.setattr(session, "send_call", send_call_with_a_finalizer)
    assert client.call("echo", b"outer") == b"outer"
    assert [type(error) for error in errors] == [asylo.FailedPreconditionError] * 2
    assert "I/O thread" in str(errors[0]) and "while this thread is sending" in str(errors[1])


def test_100_echoes(load_primitives: Load) -> None:
    client = load_primitives()
    for i in range(100):
        payload = f"echo {i}".encode() * (i + 1)
        assert client.call("echo", payload) == payload


def test_64_threads_x_256_calls_with_check_back(load_primitives: Load) -> None:
    client = load_primitives()

    def worker(index: int) -> None:
        for i in range(256):
            value = index * 1_000_000 + i
            assert from_u64(client.call("square", u64(value))) == value * value

    with ThreadPoolExecutor(64) as pool:
        for future in [pool.submit(worker, i) for i in range(64)]:
            future.result()


def test_duplex_nested_multithreaded_fibonacci(load_primitives: Load) -> None:
    """Fibonacci 0..19, each on its own host thread, recursing host -> enclave -> host ...; every exit call is
    served on the host thread whose entry call caused it."""
    registry = asylo.ExitCallRegistry()
    client = load_primitives(exit_calls=registry)
    owner = threading.local()
    wrong_thread: list[str] = []

    @registry.register("fibonacci")
    def fibonacci(n: bytes) -> bytes:
        if getattr(owner, "n", None) is None:
            wrong_thread.append(threading.current_thread().name)
        value = from_u64(n)
        if value < 2:
            return u64(value)
        return u64(from_u64(client.call("fibonacci", u64(value - 1))) + from_u64(client.call("fibonacci",
                                                                                           u64(value - 2))))

    def compute(n: int) -> int:
        owner.n = n
        return from_u64(client.call("fibonacci", u64(n)))

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(compute, range(20)))
    expected = [0, 1]
    while len(expected) < 20:
        expected.append(expected[-1] + expected[-2])
    assert results == expected
    assert wrong_thread == []


def test_slow_exit_call_inside_an_entry_call(load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()

    @registry.register("slow")
    def slow() -> bytes:
        time.sleep(3)  # longer than the keepalive interval: the session must not mistake it for a dead peer
        return b"done slowly"

    client = load_primitives(exit_calls=registry)
    started = time.monotonic()
    assert client.call("call_host", b"slow") == b"done slowly"
    assert time.monotonic() - started >= 3
    assert client.call("echo", b"after") == b"after"


def test_64_mib_each_way(load_primitives: Load) -> None:
    client = load_primitives()
    payload = os.urandom(1024) * (64 * 1024)
    assert len(payload) == 64 * MiB
    answer = client.enter(300, [payload])
    assert answer[0] == payload[::-1]
    assert from_u64(answer[1]) == 1


def test_payload_over_the_limit_is_a_clear_error(load_primitives: Load) -> None:
    limits = SessionLimits(max_message_size=2 * MiB, max_reassembly_bytes=4 * MiB)
    proxy = asylo.RemoteProxyClientConfig(asylo.LocalProvision(), limits=limits)
    client = load_primitives(proxy=proxy)
    with pytest.raises(asylo.ResourceExhaustedError, match="exceeds max_message_size"):
        client.call("echo", b"x" * (3 * MiB))
    assert client.call("echo", b"y" * MiB) == b"y" * MiB  # the session goes on


@pytest.mark.parametrize("frame_size", [64 * 1024, 4 * MiB])
def test_host_limits_are_negotiated_with_the_proxy(load_primitives: Load, frame_size: int) -> None:
    """The proxy runs with its defaults; a host with smaller or larger frames still talks to it."""
    limits = SessionLimits(max_frame_size=frame_size, max_message_size=64 * MiB, max_reassembly_bytes=128 * MiB)
    client = load_primitives(proxy=asylo.RemoteProxyClientConfig(asylo.LocalProvision(), limits=limits))
    payload = os.urandom(3 * MiB + 5)
    answer = client.enter(300, [payload, b"", b"tail"])
    assert answer[:3] == [payload[::-1], b"", b"liat"]


def test_concurrent_large_calls_stay_within_the_reassembly_budget(load_primitives: Load) -> None:
    """Eight threads send 1.5 MiB at once into a 4 MiB reassembly budget: the writers hold bodies back until the
    peer has room, instead of the peer ending the session."""
    limits = SessionLimits(max_frame_size=256 * 1024, max_message_size=2 * MiB, max_reassembly_bytes=4 * MiB)
    client = load_primitives(proxy=asylo.RemoteProxyClientConfig(asylo.LocalProvision(), limits=limits))

    def echo(index: int) -> bool:
        payload = bytes([index]) * (3 * MiB // 2)
        return client.enter(300, [payload])[0] == payload[::-1]

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(echo, range(8)))
    assert client.call("echo", b"still open") == b"still open"


def test_large_bodies_both_ways_at_once_with_small_calls_between_do_not_deadlock(load_primitives: Load) -> None:
    """Four threads echo 12 MiB each at once (bodies filling both sockets in both directions, the pings going on)
    while a fifth makes small calls: everything completes. On the direct stream this is the rule that a thread
    holding the turn to read never waits to write; without it two peers writing into full sockets stop for good."""
    client = load_primitives()
    stop = threading.Event()
    small: list[bool] = []

    def echo(index: int) -> bool:
        payload = bytes([index]) * (12 * MiB)
        return client.enter(300, [payload])[0] == payload[::-1]

    def small_calls() -> None:
        while not stop.is_set():
            small.append(client.call("echo", b"small") == b"small")

    chatter = threading.Thread(target=small_calls)
    chatter.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(echo, range(4), timeout=120))
    finally:
        stop.set()
        chatter.join(30)
    assert results == [True] * 4
    assert small and all(small)


def start_long_call(client: asylo.EnclaveClient) -> tuple[threading.Thread, list[BaseException]]:
    """A call that sleeps a minute in the enclave, on a thread of its own; what it raises lands in the list."""
    errors: list[BaseException] = []

    def long_call() -> None:
        try:
            client.call("sleep", u64(60_000))
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=long_call)
    caller.start()
    time.sleep(0.5)  # the call is in the enclave by now
    return caller, errors


def test_proxy_killed_mid_call(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    client = load_primitives()
    caller, errors = start_long_call(client)
    killed = time.monotonic()
    os.kill(proxy_pid(client), signal.SIGKILL)
    caller.join(10)
    assert not caller.is_alive()
    assert time.monotonic() - killed < 5
    assert len(errors) == 1
    assert isinstance(errors[0], asylo.EnclaveUnavailable)
    with pytest.raises(asylo.EnclaveUnavailable, match="unavailable"):
        client.call("echo", b"later")
    manager.destroy_enclave(client)  # reaps the dead proxy; the autouse fixture checks no child is left


def test_stopped_proxy_is_noticed_by_keepalive(manager: asylo.EnclaveManager, load_primitives: Load,
                                               transport: str) -> None:
    """A proxy that stops answering without closing its socket (SIGSTOP: a hung machine, a cut cable) turns the
    waiting call into EnclaveUnavailable within seconds, through gRPC's keepalive pings (or the session's own:
    test_liveness freezes a proxy over both transports, with tighter bounds)."""
    if transport != "grpc":
        pytest.skip("gRPC's keepalive; the session's pings are test_liveness's frozen-proxy test, on both transports")
    client = load_primitives()
    caller, errors = start_long_call(client)
    pid = proxy_pid(client)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        caller.join(15)
        assert not caller.is_alive()
        assert time.monotonic() - stopped < 10
        assert len(errors) == 1
        assert isinstance(errors[0], asylo.EnclaveUnavailable)
    finally:
        manager.destroy_enclave(client)  # kills the stopped proxy and reaps it


def test_load_destroy_cycles_leak_nothing(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    """Pipes, sockets and event fds do not pile up over load/destroy cycles (gRPC keeps a few of its own for the
    process, so what is checked is growth, not an exact count)."""

    def cycles(count: int) -> int:
        for index in range(count):
            client = load_primitives(f"cycle-{index}")
            assert client.call("echo", b"x") == b"x"
            manager.destroy_enclave(client)
        return len(list(Path("/proc/self/fd").iterdir()))

    after_warm_up = cycles(3)
    assert cycles(10) <= after_warm_up + 6


HOST_SCRIPT = """
import sys, time
import asylo
manager = asylo.EnclaveManager()
config = asylo.EnclaveLoadConfig("victim", remote=asylo.RemoteLoadConfig(sys.argv[1]),
                                 config=asylo.EnclaveConfig(data=b"finalize-marker:" + sys.argv[2].encode()))
client = manager.load_enclave(config)
print(client.loaded_enclave.proxy.pid, flush=True)
client.call("sleep", (60_000).to_bytes(8, "little"))
"""


@pytest.mark.usefixtures("subreaper")  # the orphaned proxy becomes our child: we see it exit and reap it
def test_host_killed_mid_session(primitives_image_file: Path, tmp_path: Path) -> None:
    """The host dies (SIGKILL) in the middle of a call: its proxy finalizes the enclave and exits within 10 s."""
    marker = tmp_path / "finalized"
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, str(primitives_image_file), str(marker)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pid = int(host.stdout.readline())
        time.sleep(0.5)  # the host is now blocked in its call
        host.kill()
        host.wait()
        killed = time.monotonic()
        deadline = killed + 10
        status = None
        while time.monotonic() < deadline:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                break
            time.sleep(0.05)
        assert status is not None and reaped == pid, "the proxy outlived its host by more than 10 s"
        assert marker.read_text() == "finalized"
    finally:
        if host.poll() is None:
            host.kill()
            host.wait()


@pytest.fixture
def manual_proxy(primitives_image_file: Path) -> Callable[..., tuple[subprocess.Popen[str], int, bytes]]:
    """Start `asylo proxy` by hand, as an operator would; it is reaped after the test."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], int, bytes]:
        token = os.urandom(32)
        proxy = subprocess.Popen([sys.executable, "-m", "asylo", "proxy", "--image", str(primitives_image_file),
                                  "--token-stdin", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        started.append(proxy)
        assert proxy.stdin is not None and proxy.stdout is not None
        proxy.stdin.write(token.hex() + "\n")
        proxy.stdin.close()
        line = proxy.stdout.readline()
        assert line.startswith(READY_PREFIX), line + (proxy.stderr.read() if proxy.stderr else "")
        return proxy, int(line.removeprefix(READY_PREFIX).split()[0]), token

    yield start
    for proxy in started:
        if proxy.poll() is None:
            proxy.terminate()
        proxy.wait(10)
        for stream in (proxy.stdout, proxy.stderr):
            if stream is not None:
                stream.close()


def test_wrong_token_is_permission_denied(manager: asylo.EnclaveManager, primitives_image_file: Path,
                                          manual_proxy: Callable[..., tuple[subprocess.Popen[str], int, bytes]],
                                          local_platform: str) -> None:
    proxy, port, token = manual_proxy()
    wrong = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        asylo.DirectProvision(f"127.0.0.1:{port}", bytes(32), trusted_platforms=[local_platform])))
    with pytest.raises(asylo.PermissionDeniedError, match="wrong session token"):
        manager.load_enclave(asylo.EnclaveLoadConfig("intruder", remote=wrong))
    # The proxy still waits for its real host.
    right = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        asylo.DirectProvision(f"127.0.0.1:{port}", token, trusted_platforms=[local_platform])))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("owner", remote=right))
    assert client.call("echo", b"mine") == b"mine"
    manager.destroy_enclave(client)
    assert proxy.wait(10) == 0  # one session, then it exits


def test_proxy_gives_up_when_no_host_comes(manual_proxy: Callable[..., tuple[subprocess.Popen[str], int, bytes]]
                                           ) -> None:
    proxy, _, _ = manual_proxy("--hello-timeout", "0.5")
    assert proxy.wait(10) == 1
    assert proxy.stderr is not None
    assert "no host connected within" in proxy.stderr.read()


def test_plaintext_to_a_non_loopback_address_is_refused(manager: asylo.EnclaveManager,
                                                        primitives_image_file: Path) -> None:
    # Refused before any connection is attempted: no packet leaves for this address.
    remote = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        asylo.DirectProvision("192.0.2.10:4321", os.urandom(32))))
    with pytest.raises(asylo.FailedPreconditionError, match="TLS"):
        manager.load_enclave(asylo.EnclaveLoadConfig("far", remote=remote))
    assert manager.loaded_enclaves() == []


def _tls_provision(tmp_path: Path, *, trusted_ca: Path | None = None, client_cert: bool = True,
                   mutual: bool = True) -> asylo.LocalProvision:
    ca = create_dev_ca(tmp_path / "ca")
    client_ca = trusted_ca or ca.ca_cert
    credentials = asylo.ClientCredentials.tls(client_ca, cert_file=ca.client_cert if client_cert else None,
                                              key_file=ca.client_key if client_cert else None)
    tls = ProxyTls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert if mutual else None)
    return asylo.LocalProvision(tls=tls, credentials=credentials)


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
def test_tls(manager: asylo.EnclaveManager, primitives_image_file: Path, tmp_path: Path, mutual: bool) -> None:
    remote = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        _tls_provision(tmp_path, mutual=mutual)))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("tls", remote=remote))
    assert client.call("echo", b"over TLS") == b"over TLS"


def test_tls_with_an_untrusted_ca_is_refused(manager: asylo.EnclaveManager, primitives_image_file: Path,
                                             tmp_path: Path) -> None:
    other_ca = create_dev_ca(tmp_path / "other").ca_cert
    remote = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        _tls_provision(tmp_path, trusted_ca=other_ca), connect_timeout=5))
    with pytest.raises(asylo.EnclaveUnavailable):
        manager.load_enclave(asylo.EnclaveLoadConfig("untrusted", remote=remote))
    assert manager.loaded_enclaves() == []


def test_mtls_without_a_client_certificate_is_refused(manager: asylo.EnclaveManager, primitives_image_file: Path,
                                                      tmp_path: Path) -> None:
    remote = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        _tls_provision(tmp_path, client_cert=False), connect_timeout=5))
    with pytest.raises(asylo.EnclaveUnavailable):
        manager.load_enclave(asylo.EnclaveLoadConfig("anonymous", remote=remote))


def test_proxy_that_fails_to_start_is_a_clear_error(manager: asylo.EnclaveManager, primitives_image_file: Path,
                                                    tmp_path: Path) -> None:
    broken_python = tmp_path / "broken-python"
    broken_python.write_text("#!/bin/sh\necho 'cannot start: no enclave support here' >&2\nexit 3\n")
    broken_python.chmod(0o700)
    remote = asylo.RemoteLoadConfig(primitives_image_file, asylo.RemoteProxyClientConfig(
        asylo.LocalProvision(python=str(broken_python))))
    with pytest.raises(asylo.EnclaveUnavailable, match=r"(?s)failed to start \(exit code 3\).*no enclave support"):
        manager.load_enclave(asylo.EnclaveLoadConfig("broken", remote=remote))


def test_debug_image_needs_debug_remotely(manager: asylo.EnclaveManager, tmp_path: Path,
                                          quickstart_image: asylo.VerifiedImage, signing_key: object) -> None:
    from asylo.cli.quickstart import quickstart_enclave_dir  # noqa: PLC0415
    from asylo.image import build_image, write_image  # noqa: PLC0415

    path = tmp_path / "demo.aimg"
    write_image(path, build_image(quickstart_enclave_dir(), signing_key))  # type: ignore[arg-type]
    with pytest.raises(asylo.FailedPreconditionError, match="debug enclave"):
        manager.load_enclave(asylo.EnclaveLoadConfig("demo", remote=asylo.RemoteLoadConfig(path)))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("demo", remote=asylo.RemoteLoadConfig(path, debug=True)))
    assert eventually(lambda: not client.closed)


def test_a_hostile_host_gets_a_clear_goodbye_on_the_direct_stream(
        manual_proxy: Callable[..., tuple[subprocess.Popen[str], int, bytes]], primitives_image: asylo.VerifiedImage,
        transport: str) -> None:
    """The same over the direct stream: a record longer than any the session takes is refused before it is read."""
    if transport != "direct":
        pytest.skip("the direct stream's framing (the gRPC stream's is the test below)")
    import socket  # noqa: PLC0415
    import struct  # noqa: PLC0415

    from asylo.proto import enclave_pb2, session_pb2  # noqa: PLC0415
    from asylo.session import Role, Session  # noqa: PLC0415

    proxy, port, token = manual_proxy()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        session = Session(Role.HOST)
        config = enclave_pb2.EnclaveLoadConfig(name="x", measurement=primitives_image.measurement)
        hello = session.send_hello(token, config)
        sock.sendall(struct.pack(">I", len(hello)) + hello)
        sock.sendall(struct.pack(">I", 0xFFFFFFFF))  # a record of 4 GiB: refused before a byte of it is read
        received = b""
        while data := sock.recv(65536):
            received += data
    frames = []
    while received:
        (length,) = struct.unpack(">I", received[:4])
        frames.append(session_pb2.Frame.FromString(received[4:4 + length]))
        received = received[4 + length:]
    assert frames[0].WhichOneof("kind") == "welcome"
    goodbye = frames[-1]
    assert goodbye.WhichOneof("kind") == "goodbye"
    assert goodbye.goodbye.code == asylo.StatusCode.RESOURCE_EXHAUSTED
    assert "malformed record" in goodbye.goodbye.message and "4294967295 bytes" in goodbye.goodbye.message
    assert proxy.wait(10) == 1


def test_a_hostile_host_gets_a_clear_goodbye(manual_proxy: Callable[..., tuple[subprocess.Popen[str], int, bytes]],
                                             primitives_image: asylo.VerifiedImage, transport: str) -> None:
    """A host that breaks the protocol after the handshake (a malformed message) is told why, and the proxy
    finalizes its enclave and exits with an error status instead of crashing or hanging."""
    if transport != "grpc":
        pytest.skip("gRPC's framing (the direct stream's is the test above)")
    import asyncio  # noqa: PLC0415

    import grpc  # noqa: PLC0415

    from asylo.proto import enclave_pb2, session_pb2  # noqa: PLC0415
    from asylo.remote import batching  # noqa: PLC0415
    from asylo.remote.service import CONNECT_METHOD  # noqa: PLC0415
    from asylo.session import Role, Session  # noqa: PLC0415

    proxy, port, token = manual_proxy()

    async def misbehave() -> list[session_pb2.Frame]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(CONNECT_METHOD)()
            session = Session(Role.HOST)
            config = enclave_pb2.EnclaveLoadConfig(name="x", measurement=primitives_image.measurement)
            await call.write(batching.pack([session.send_hello(token, config)]))
            received = []
            first = await asyncio.wait_for(call.read(), 10)
            received += [session_pb2.Frame.FromString(f) for f in batching.unpack(first, 1 << 21)]
            await call.write(b"\x80\x80\x80")  # a length prefix that never ends
            while True:
                data = await asyncio.wait_for(call.read(), 10)
                if data is grpc.aio.EOF:
                    return received
                received += [session_pb2.Frame.FromString(f) for f in batching.unpack(data, 1 << 21)]

    frames = asyncio.run(misbehave())
    assert frames[0].WhichOneof("kind") == "welcome"
    goodbye = frames[-1]
    assert goodbye.WhichOneof("kind") == "goodbye"
    assert goodbye.goodbye.code == asylo.StatusCode.INTERNAL
    assert "malformed message" in goodbye.goodbye.message
    assert proxy.wait(10) == 1
