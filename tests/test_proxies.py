"""The provision server's proxies: standby proxies assigned on demand, cold starts, the pool, idle timeouts,
orphans, and the parent-death signal. Real proxy processes and real gRPC on loopback throughout."""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import asylo
from asylo.cli.proxy_command import proxy as proxy_command
from asylo.identity import SimPlatformKey
from asylo.image import load_image
from asylo.provision_server.proxies import ProxyLauncher, ProxySettings, RunningProxy, kill_orphans
from asylo.remote.child_process import ListeningChild
from asylo.remote.provision import READY_PREFIX
from asylo.remote.proxy_process import ASSIGNED_PREFIX
from tests.conftest import child_processes, eventually, from_u64, u64

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

Launchers = Callable[..., ProxyLauncher]


@pytest.fixture
def launchers() -> Iterator[Launchers]:
    """ProxyLaunchers for the test, each closed afterwards, with every proxy it launched released."""
    made: list[ProxyLauncher] = []
    launched: list[RunningProxy] = []

    def make(warm: int = 0, *, pid_dir: Path | None = None, **settings: object) -> ProxyLauncher:
        launcher = ProxyLauncher(ProxySettings(**settings), warm=warm, pid_dir=pid_dir)  # type: ignore[arg-type]
        original = launcher.launch

        def launch(image_path: Path, token: bytes, **expectations: bytes | None) -> RunningProxy:
            proxy = original(image_path, token, **expectations)
            launched.append(proxy)
            return proxy

        launcher.launch = launch  # type: ignore[method-assign]
        made.append(launcher)
        return launcher

    yield make
    for proxy in launched:
        proxy.release()
    for launcher in made:
        launcher.close()


def connect(manager: asylo.EnclaveManager, image: Path, proxy: RunningProxy | int, token: bytes, name: str = "e",
            exit_calls: asylo.ExitCallRegistry | None = None) -> asylo.EnclaveClient:
    """Load the enclave through a proxy someone else started, as a provision server's client does."""
    port = proxy if isinstance(proxy, int) else proxy.port
    remote = asylo.RemoteLoadConfig(image, proxy=asylo.RemoteProxyClientConfig.defaults_with_provision(
        asylo.DirectProvision(f"127.0.0.1:{port}", token,
                              trusted_platforms=[SimPlatformKey.load_or_create().fingerprint])))
    return manager.load_enclave(asylo.EnclaveLoadConfig(name, remote=remote,
                                                        exit_calls=exit_calls or asylo.ExitCallRegistry()))


def wait_warm(launcher: ProxyLauncher, count: int, timeout: float = 20.0) -> None:
    assert eventually(lambda: launcher.warm_ready >= count, timeout), f"pool has {launcher.warm_ready} of {count}"


def gone(pid: int) -> bool:
    """The process has exited and been reaped (by us, or by whoever adopted it)."""
    return pid not in child_processes() and not Path(f"/proc/{pid}").exists()


def standby_child() -> ListeningChild:
    """A standby proxy started by hand, as the launcher does; release it after the test."""
    return ListeningChild([sys.executable, "-m", "asylo", "proxy", "--standby"], ready_prefix=READY_PREFIX,
                          what="a standby proxy", log=logging.getLogger("asylo.proxy"))


# -- standby proxies ------------------------------------------------------------------------------------------------

def test_warm_launch_serves_real_calls(manager: asylo.EnclaveManager, launchers: Launchers,
                                       primitives_image_file: Path, tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=1, pid_dir=pid_dir)
    launcher.start()
    wait_warm(launcher, 1)
    token = os.urandom(32)
    proxy = launcher.launch(primitives_image_file, token)
    assert (pid_dir / str(proxy.pid)).exists()
    assert (pid_dir.stat().st_mode & 0o777) == 0o700
    assert ((pid_dir / str(proxy.pid)).stat().st_mode & 0o777) == 0o600
    registry = asylo.ExitCallRegistry()

    @registry.register("greet")
    def greet(name: bytes) -> bytes:
        return b"hello " + name

    client = connect(manager, primitives_image_file, proxy, token, exit_calls=registry)
    assert from_u64(client.call("pid")) == proxy.pid  # the enclave runs in the proxy we were given
    assert client.call("echo", b"warm") == b"warm"
    assert client.call("call_host", b"greet", b"world") == b"hello world"
    manager.destroy_enclave(client)
    assert eventually(proxy.exited, 10)  # one session, then it exits
    assert proxy.returncode == 0
    proxy.release()
    assert not (pid_dir / str(proxy.pid)).exists()


def test_cold_launch_when_the_pool_is_empty(manager: asylo.EnclaveManager, launchers: Launchers,
                                            primitives_image_file: Path) -> None:
    launcher = launchers(warm=0)
    launcher.start()
    token = os.urandom(32)
    proxy = launcher.launch(primitives_image_file, token)
    assert launcher.warm_ready == 0
    client = connect(manager, primitives_image_file, proxy, token)
    assert client.call("echo", b"cold") == b"cold"
    manager.destroy_enclave(client)
    proxy.release()
    assert proxy.returncode == 0


def _tampered(image: Path, target: Path) -> Path:
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("case", ["missing", "tampered"])
@pytest.mark.parametrize("warm", [1, 0], ids=["warm", "cold"])
def test_a_bad_image_is_refused_and_the_proxy_reaped(launchers: Launchers, primitives_image_file: Path,
                                                     tmp_path: Path, case: str, warm: int) -> None:
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=warm, pid_dir=pid_dir)
    launcher.start()
    if warm:
        wait_warm(launcher, 1)
    image = tmp_path / "missing.aimg" if case == "missing" else _tampered(primitives_image_file,
                                                                            tmp_path / "tampered.aimg")
    before = set(child_processes())
    standby = _standby_pids(pid_dir)  # the proxy a warm launch takes
    why = "does not exist" if case == "missing" else "(signature|measurement|digest)"
    with pytest.raises(asylo.EnclaveUnavailable, match=rf"(?s)exit code [12]\); it said:.*{why}"):
        launcher.launch(image, os.urandom(32))
    # The refused proxy is reaped and its record removed (a warm pool then starts a replacement).
    if warm:
        [refused] = standby
        assert gone(refused) and refused not in _standby_pids(pid_dir)
        wait_warm(launcher, 1)
    else:
        assert set(child_processes()) == before and _standby_pids(pid_dir) == []


def _standby_pids(pid_dir: Path) -> list[int]:
    return [int(p.name) for p in pid_dir.iterdir()] if pid_dir.exists() else []


@pytest.mark.parametrize(("line", "why"), [
    (b"{not json", "not valid JSON"),
    (b'["image", "token"]', "must be a JSON object"),
    (b'{"image": 7, "token": "00"}', '"image"'),
    (b'{"image": "/x", "token": "abcd"}', "at least 16 bytes"),
    (b'{"image": "/x", "token": "' + b"ab" * 32 + b'", "eval": "x"}', "unknown keys: eval"),
    (b"x" * (70 * 1024), "longer than 65536 bytes"),
    (b'{"image": "/x", "token": "' + b"ab" * 32 + b'", "measurement": "zz"}', '"measurement" must be hexadecimal'),
    (b'{"image": "/x", "token": "' + b"ab" * 32 + b'", "measurement": "abcd"}', "must be 32 bytes"),
    (b'{"image": "/x", "token": "' + b"ab" * 32 + b'", "client_cert_sha256": 5}', "must be a hex string"),
])
def test_a_bad_assignment_line_is_refused(line: bytes, why: str) -> None:
    child = standby_child()
    try:
        child.start(b"", 30)
        with pytest.raises(asylo.EnclaveUnavailable, match=r"exit code 1") as caught:
            child.request(line, ASSIGNED_PREFIX, 10)
        assert why in str(caught.value)
    finally:
        child.release()
    assert child.process.returncode == 1


@pytest.mark.parametrize("warm", [1, 0], ids=["warm", "cold"])
def test_an_image_with_another_measurement_is_refused(launchers: Launchers, primitives_image_file: Path,
                                                      quickstart_image: asylo.VerifiedImage, tmp_path: Path,
                                                      warm: int) -> None:
    """The launcher names the measurement it expects; a proxy that finds another image at the path (a valid,
    signed one) refuses it before it serves anything, and is reaped."""
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=warm, pid_dir=pid_dir)
    launcher.start()
    if warm:
        wait_warm(launcher, 1)
    standby = set(_standby_pids(pid_dir))
    expected = quickstart_image.measurement  # what the store checked; primitives is what is there now
    with pytest.raises(asylo.EnclaveUnavailable, match=rf"(?s)exit code 1\); it said:.*not the expected "
                                                         rf"{expected.hex()}"):
        launcher.launch(primitives_image_file, os.urandom(32), measurement=expected)
    assert all(gone(pid) for pid in standby)
    if warm:
        wait_warm(launcher, 1)  # replaced
    else:
        assert _standby_pids(pid_dir) == []
    # The right expectation is met, warm or cold.
    proxy = launcher.launch(primitives_image_file, os.urandom(32), measurement=load_image(primitives_image_file)
                            .measurement)
    assert not proxy.exited()


FAKE_STANDBY = """#!/bin/sh
# Stands in for `python -m asylo proxy --standby` and claims to have loaded an image it did not: it answers every
# assignment with a measurement of zeros.
echo "ASYLO-PROXY-READY port=9"
read assignment
echo "ASYLO-PROXY-ASSIGNED measurement=0000000000000000000000000000000000000000000000000000000000000000"
exec cat >/dev/null
"""


def test_a_standby_that_reports_another_measurement_is_not_handed_out(tmp_path: Path,
                                                                      primitives_image_file: Path) -> None:
    """The launcher checks the measurement in the ASSIGNED line itself, not only the proxy's own check."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_STANDBY)
    fake.chmod(0o700)
    launcher = ProxyLauncher(ProxySettings(python=str(fake)), warm=1, pid_dir=tmp_path / "pids")
    launcher.start()
    try:
        wait_warm(launcher, 1)
        [liar] = _standby_pids(tmp_path / "pids")
        expected = load_image(primitives_image_file).measurement
        with pytest.raises(asylo.EnclaveUnavailable, match=f"loaded an image with measurement 0{{64}}, not the "
                                                           f"expected {expected.hex()}"):
            launcher.launch(primitives_image_file, os.urandom(32), measurement=expected)
        assert gone(liar)
    finally:
        launcher.close()


def test_pinning_a_client_certificate_needs_mutual_tls(launchers: Launchers, primitives_image_file: Path) -> None:
    with pytest.raises(ValueError, match="mutual TLS"):
        launchers().launch(primitives_image_file, os.urandom(32), client_cert_sha256=bytes(32))


@pytest.mark.parametrize(("args", "message"), [
    (["--standby", "--expect-measurement", "ab" * 32], "takes none of"),
    (["--image", "{image}", "--token-stdin", "--expect-measurement", "abcd"], "must be 32 bytes"),
    (["--image", "{image}", "--token-stdin", "--client-cert-sha256", "xy" * 32], "must be hexadecimal"),
    (["--image", "{image}", "--token-stdin", "--client-cert-sha256", "ab" * 32], "needs --tls-client-ca"),
])
def test_bad_expectations_are_usage_errors(primitives_image_file: Path, args: list[str], message: str) -> None:
    argv = [arg.format(image=primitives_image_file) for arg in args]
    result = CliRunner().invoke(proxy_command, argv, input="ab" * 32 + "\n")
    assert result.exit_code == 2, result.output
    assert message in result.output


CHATTY_CHILD = """
import sys
print("READY port=7", flush=True)
for i in range(5000):
    print("chatter", i)
sys.stdout.flush()
print("ANSWER", sys.stdin.readline().strip(), flush=True)
for i in range(5000):
    print("more chatter", i)
sys.stdout.flush()
sys.stdin.read()
"""


def test_a_child_that_keeps_printing_is_not_buffered_without_end() -> None:
    """After the line the parent waited for, a child's output (an enclave printing all day) is logged, not kept;
    a request still gets its answer."""
    child = ListeningChild([sys.executable, "-c", CHATTY_CHILD], ready_prefix="READY port=", what="a chatty child",
                           log=logging.getLogger("asylo.test"))
    try:
        assert child.start(b"", 30) == 7
        assert child.request(b"hello", "ANSWER ", 30) == "hello"  # all of the first chatter has been read by now
        assert child.held_lines == 0
    finally:
        child.release()
    assert child.held_lines == 0  # nor the chatter after the answer, read to the end by now
    assert child.process.returncode == 0


def test_standby_exits_quietly_when_let_go_before_its_assignment() -> None:
    child = standby_child()
    child.start(b"", 30)
    child.release()
    assert child.process.returncode == 0


def test_connecting_before_the_assignment_is_refused(manager: asylo.EnclaveManager,
                                                     primitives_image_file: Path) -> None:
    child = standby_child()
    try:
        port = child.start(b"", 30)
        token = os.urandom(32)
        started = time.monotonic()
        with pytest.raises(asylo.EnclaveUnavailable, match="not assigned yet"):
            connect(manager, primitives_image_file, port, token)
        assert time.monotonic() - started < 5  # refused, not held until a timeout
        # The refusal used nothing up: once assigned, the same proxy serves its host.
        assignment = json.dumps({"image": str(primitives_image_file), "token": token.hex()}).encode()
        measurement = child.request(assignment, ASSIGNED_PREFIX, 30)
        client = connect(manager, primitives_image_file, port, token)
        assert client.measurement.hex() == measurement
        assert client.call("echo", b"now") == b"now"
        manager.destroy_enclave(client)
    finally:
        child.release()
    assert child.process.returncode == 0


# -- the pool -------------------------------------------------------------------------------------------------------

def test_the_pool_refills_and_close_reaps_everything(launchers: Launchers, primitives_image_file: Path,
                                                     tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=2, pid_dir=pid_dir)
    launcher.start()
    wait_warm(launcher, 2)
    first = set(_standby_pids(pid_dir))
    assert len(first) == 2
    proxy = launcher.launch(primitives_image_file, os.urandom(32))
    assert proxy.pid in first
    wait_warm(launcher, 2)  # refilled behind the launch
    standby = set(_standby_pids(pid_dir)) - {proxy.pid}
    assert len(standby) == 2 and proxy.pid not in standby
    launcher.close()
    assert all(gone(pid) for pid in standby)
    assert not [t for t in threading.enumerate() if t.name == "asylo-proxy-pool"]
    assert _standby_pids(pid_dir) == [proxy.pid]  # a launched proxy is its owner's to release, not the pool's
    with pytest.raises(asylo.FailedPreconditionError, match="closed"):
        launcher.launch(primitives_image_file, os.urandom(32))
    launcher.close()  # idempotent
    proxy.release()
    assert gone(proxy.pid) and _standby_pids(pid_dir) == []


def test_a_killed_standby_is_replaced(manager: asylo.EnclaveManager, launchers: Launchers,
                                      primitives_image_file: Path, tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=1, pid_dir=pid_dir)
    launcher.start()
    wait_warm(launcher, 1)
    [victim] = _standby_pids(pid_dir)
    os.kill(victim, signal.SIGKILL)
    assert eventually(lambda: gone(victim) and launcher.warm_ready == 1 and _standby_pids(pid_dir) != [victim], 20)
    token = os.urandom(32)
    proxy = launcher.launch(primitives_image_file, token)
    assert proxy.pid != victim
    client = connect(manager, primitives_image_file, proxy, token)
    assert client.call("echo", b"replacement") == b"replacement"
    manager.destroy_enclave(client)


def test_a_proxy_started_from_a_thread_outlives_the_thread(manager: asylo.EnclaveManager, launchers: Launchers,
                                                           primitives_image_file: Path) -> None:
    """Linux sends the parent-death signal when the *thread* that started a child ends: the proxy must tell that
    from its parent's death, or every proxy started from a worker thread would die with that thread."""
    launcher = launchers(warm=0)
    token = os.urandom(32)
    result: list[RunningProxy] = []
    starter = threading.Thread(target=lambda: result.append(launcher.launch(primitives_image_file, token)))
    starter.start()
    starter.join()
    time.sleep(0.3)  # the signal, if the proxy took it wrongly, has arrived
    [proxy] = result
    assert not proxy.exited()
    client = connect(manager, primitives_image_file, proxy, token)
    assert client.call("echo", b"still here") == b"still here"
    manager.destroy_enclave(client)


def test_settings_refuse_plaintext_off_loopback() -> None:
    with pytest.raises(ValueError, match="need TLS"):
        ProxySettings(listen_host="0.0.0.0")
    assert ProxySettings(listen_host="::1").listen == "[::1]:0"


# -- idle timeout ---------------------------------------------------------------------------------------------------

def test_idle_timeout_ends_a_quiet_session_but_not_a_busy_one(manager: asylo.EnclaveManager, launchers: Launchers,
                                                              primitives_image_file: Path) -> None:
    launcher = launchers(warm=0, idle_timeout=1.0)
    token = os.urandom(32)
    proxy = launcher.launch(primitives_image_file, token)
    registry = asylo.ExitCallRegistry()

    @registry.register("slow")
    def slow() -> bytes:
        time.sleep(1.6)  # the host is busy in an exit call: its entry call is still running
        return b"slow but fine"

    client = connect(manager, primitives_image_file, proxy, token, exit_calls=registry)
    assert client.call("sleep", u64(2500)) == b"slept"  # a long computation in the enclave is not idle
    assert client.call("call_host", b"slow") == b"slow but fine"
    time.sleep(0.6)
    assert client.call("echo", b"still open") == b"still open"  # quiet, but not for long enough
    time.sleep(1.6)
    with pytest.raises(asylo.EnclaveUnavailable, match="idle for 1 s"):
        client.call("echo", b"too late")
    assert eventually(proxy.exited, 10)
    assert proxy.returncode == 1  # not an orderly end
    manager.destroy_enclave(client)


# -- orphans --------------------------------------------------------------------------------------------------------

def test_kill_orphans_kills_a_forgotten_proxy(launchers: Launchers, primitives_image_file: Path,
                                              tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    launcher = launchers(warm=0, pid_dir=pid_dir)
    proxy = launcher.launch(primitives_image_file, os.urandom(32))
    # As if the provision server had died with its proxy wedged: a new run finds the record and kills it.
    assert kill_orphans(pid_dir) == 1
    assert not (pid_dir / str(proxy.pid)).exists()
    assert eventually(proxy.exited)
    assert proxy.returncode == -signal.SIGKILL
    assert kill_orphans(pid_dir) == 0


def test_kill_orphans_leaves_stale_and_reused_pids_alone(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir(mode=0o700)
    finished = subprocess.Popen(["true"])
    finished.wait()
    (pid_dir / str(finished.pid)).write_text("12345\n")  # that process is gone
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        start_time = int(Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        (pid_dir / str(bystander.pid)).write_text(f"{start_time - 1}\n")  # its pid, but another process's record
        (pid_dir / "notes.txt").write_text("not a record")
        os.mkfifo(pid_dir / "4194303")  # a record name, but a FIFO: skipped, not waited on
        assert kill_orphans(pid_dir) == 0
        assert bystander.poll() is None
        assert sorted(p.name for p in pid_dir.iterdir()) == ["notes.txt"]
    finally:
        bystander.kill()
        bystander.wait()


def test_a_pid_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir(mode=0o700)
    pid_dir.chmod(0o777)
    with pytest.raises(asylo.FailedPreconditionError, match="nobody else can write"):
        kill_orphans(pid_dir)
    with pytest.raises(asylo.FailedPreconditionError, match="nobody else can write"):
        ProxyLauncher(ProxySettings(), pid_dir=pid_dir)


# -- the parent-death signal ----------------------------------------------------------------------------------------

PARENT_SCRIPT = """
import os, subprocess, sys, time
lifeline = int(sys.argv[1])
proxy = subprocess.Popen([sys.executable, "-m", "asylo", "proxy", "--standby"], stdin=lifeline,
                         stdout=subprocess.PIPE)
line = proxy.stdout.readline().decode()
print(proxy.pid, line.strip(), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.usefixtures("subreaper")  # the orphaned proxy becomes our child: we see it exit and reap it
def test_a_proxy_whose_parent_is_killed_exits_even_with_its_pipe_held_open() -> None:
    """The parent dies by SIGKILL while someone else (here: this test) still holds the write end of the proxy's
    standard input, so no end of file comes: the kernel's parent-death signal ends the proxy all the same."""
    read_end, write_end = os.pipe()
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(read_end)], pass_fds=(read_end,),
                              stdout=subprocess.PIPE, text=True)
    os.close(read_end)
    pid = 0
    try:
        assert parent.stdout is not None
        pid_text, ready = parent.stdout.readline().split(maxsplit=1)
        assert ready.startswith(READY_PREFIX)
        pid = int(pid_text)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        reaped, status = 0, 0
        while time.monotonic() < deadline:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == pid:
                break
            time.sleep(0.02)
        assert reaped == pid, "the proxy outlived its parent by more than 10 s"
        assert os.waitstatus_to_exitcode(status) == 0  # let go before any work came: nothing went wrong
    finally:
        os.close(write_end)  # if the signal did not end it, end of file does
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if pid and eventually(lambda: _reaped(pid), 10) is False:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True  # reaped already (or never ours)


# -- how much a warm proxy saves ------------------------------------------------------------------------------------

def test_warm_and_cold_provision_to_first_call(manager: asylo.EnclaveManager, launchers: Launchers,
                                               primitives_image_file: Path) -> None:
    """Not a benchmark with a threshold: it prints the medians, and checks every launch served its call."""

    def provision_to_first_call(launcher: ProxyLauncher, index: int) -> float:
        token = os.urandom(32)
        started = time.perf_counter()
        proxy = launcher.launch(primitives_image_file, token)
        client = connect(manager, primitives_image_file, proxy, token, name=f"e{index}")
        assert client.call("echo", b"first") == b"first"
        elapsed = time.perf_counter() - started
        manager.destroy_enclave(client)
        proxy.release()
        return elapsed

    warm = launchers(warm=2)
    warm.start()
    warm_times = []
    for index in range(10):
        wait_warm(warm, 2)  # a quiet machine for each measurement: no standby starting alongside
        warm_times.append(provision_to_first_call(warm, index))
    warm.close()
    cold = launchers(warm=0)
    cold_times = [provision_to_first_call(cold, index) for index in range(3)]
    print(f"\nprovision to first call: warm median {statistics.median(warm_times) * 1000:.1f} ms "
          f"(n={len(warm_times)}, min {min(warm_times) * 1000:.1f}, max {max(warm_times) * 1000:.1f}); "
          f"cold median {statistics.median(cold_times) * 1000:.1f} ms (n={len(cold_times)})")


def test_a_broken_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    """A launcher whose proxies cannot start says why; its pool backs off instead of spinning, and stays empty."""
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'no python here' >&2\nexit 3\n")
    broken.chmod(0o700)
    launcher = ProxyLauncher(ProxySettings(python=str(broken)), warm=1)
    launcher.start()
    try:
        with pytest.raises(asylo.EnclaveUnavailable, match=r"(?s)exit code 3.*no python here"):
            launcher.launch(tmp_path / "any.aimg", os.urandom(32))
        assert launcher.warm_ready == 0
    finally:
        launcher.close()
