"""Liveness end to end (real proxy processes): a record the network loses, a corrupted gRPC length prefix, a frozen
proxy — each turns the waiting call into EnclaveUnavailable within 5 s, where before the first two waited forever
(gRPC's keepalive is answered all the same), and the proxy is reaped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import asylo
from asylo.remote.client import RemoteEnclaveProxyClient
from asylo.remote.direct_client import DirectEnclaveProxyClient
from asylo.remote.provision import ProvisionedProxy
from tests.fault_relay import FaultRelay
from tests.test_remote import HOST_SCRIPT

#: Every test here runs over both session transports (see conftest's `transport`).
pytestmark = pytest.mark.usefixtures("transport")

#: What the brief promises: a waiting call fails within this once its peer is dead, frozen or losing records.
DETECTION_BOUND = 5.0
#: The echo whose result the relay acts on: a distinctive size, far above a ping's or a pong's (~40 bytes).
PAYLOAD = b"r" * 120


def result_sized(size: int) -> bool:
    return len(PAYLOAD) < size < len(PAYLOAD) + 120


class FaultyProvision(asylo.RemoteProvision):
    """Local provisioning with a FaultRelay between the host and the proxy."""

    def __init__(self, transport: str) -> None:
        self._local = asylo.LocalProvision(transport=transport)  # type: ignore[arg-type]
        self.relays: list[FaultRelay] = []

    def provision(self, image_path: Path, *, transport: str | None = None) -> ProvisionedProxy:
        proxy = self._local.provision(image_path, transport=transport)  # type: ignore[arg-type]
        relay = FaultRelay(int(proxy.target.rsplit(":", 1)[1]), direct=proxy.transport == "direct")
        self.relays.append(relay)

        def release() -> None:
            proxy.release()
            relay.close()

        return ProvisionedProxy(f"127.0.0.1:{relay.port}", proxy.token, proxy.credentials, release, proxy.pid,
                                proxy.trusted_platforms, proxy.transport)


def load_relayed(manager: asylo.EnclaveManager, image: Path, *, attestation: bool = True
                 ) -> tuple[asylo.EnclaveClient, FaultRelay]:
    provision = FaultyProvision(os.environ.get("ASYLO_TRANSPORT", "direct"))
    config = asylo.RemoteLoadConfig(image, proxy=asylo.RemoteProxyClientConfig(provision, attestation=attestation))
    client = manager.load_enclave(asylo.EnclaveLoadConfig("liveness", remote=config))
    [relay] = provision.relays
    return client, relay


def proxy_pid(client: asylo.EnclaveClient) -> int:
    enclave = client.loaded_enclave
    assert isinstance(enclave, RemoteEnclaveProxyClient | DirectEnclaveProxyClient) and enclave.proxy.pid is not None
    return enclave.proxy.pid


def failed_call(client: asylo.EnclaveClient, relay: FaultRelay, mode: str) -> tuple[float, asylo.EnclaveUnavailable]:
    """Arm the relay, make the echo it acts on; return how long after the fault the call failed, and its error."""
    assert client.call("echo", b"warm") == b"warm"
    relay.arm(mode, result_sized)
    with pytest.raises(asylo.EnclaveUnavailable) as raised:
        client.call("echo", PAYLOAD)
    failed = time.monotonic()
    assert relay.acted.is_set(), "the relay never saw the result: the test would prove nothing"
    return failed - relay.acted_at, raised.value


@pytest.mark.parametrize("attestation", [True, False], ids=["records", "unencrypted"])
def test_a_result_the_network_drops_fails_the_call_within_5_s(manager: asylo.EnclaveManager,
                                                             primitives_image_file: Path, attestation: bool) -> None:
    """The proxy's result of a call, its last record, never arrives. Sealed, the proxy's next ping fails its
    authentication (DATA_LOSS); unencrypted, the pong to the proxy's ping counts one frame fewer than it sent, so
    the proxy ends the session and says so. Either way the call fails instead of waiting forever."""
    client, relay = load_relayed(manager, primitives_image_file, attestation=attestation)
    pid = proxy_pid(client)
    took, error = failed_call(client, relay, "drop")
    print(f"dropped result ({'records' if attestation else 'unencrypted'}): the call failed {took:.2f} s later: "
          f"{error.message}")
    assert took < DETECTION_BOUND
    assert "DATA_LOSS" in error.message
    with pytest.raises(asylo.EnclaveUnavailable):
        client.call("echo", b"later")
    manager.destroy_enclave(client)  # the proxy ended its session: it exits and is reaped
    assert not Path(f"/proc/{pid}").exists()


def test_a_flipped_bit_in_grpc_s_length_prefix_fails_the_call_within_5_s(manager: asylo.EnclaveManager,
                                                                         primitives_image_file: Path) -> None:
    """One bit of gRPC's own length prefix of the result flipped (plaintext gRPC): the host's gRPC waits for 64 KiB
    that never come, and the proxy's pongs wait behind them; the host's ping deadline ends the session. (Over the
    direct stream the same with its record length.) The proxy's pings are stuck behind the same bytes, so its own
    deadline runs out at about the same moment: when it wins, the host learns of it from the end of the stream
    (gRPC's, or inside the bogus record) — the call fails within the bound either way."""
    client, relay = load_relayed(manager, primitives_image_file)
    pid = proxy_pid(client)
    took, error = failed_call(client, relay, "flip")
    print(f"flipped length prefix: the call failed {took:.2f} s later: {error.message}")
    assert took < DETECTION_BOUND
    assert any(reason in error.message for reason in (
        "no answer to a ping",  # the host's deadline first
        "the enclave's proxy ended the session", "in the middle of a record"))  # the proxy's first
    manager.destroy_enclave(client)
    assert not Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("then", ["resumed", "killed"])
def test_a_frozen_proxy_fails_the_waiting_call_within_5_s_and_is_reaped(manager: asylo.EnclaveManager,
                                                                      primitives_image_file: Path,
                                                                      then: str) -> None:
    client, _ = load_relayed(manager, primitives_image_file)
    pid = proxy_pid(client)
    errors: list[BaseException] = []

    def long_call() -> None:
        try:
            client.call("sleep", (60_000).to_bytes(8, "little"))
        except BaseException as exc:
            errors.append(exc)

    caller = threading.Thread(target=long_call)
    caller.start()
    time.sleep(0.5)  # the call is in the enclave by now
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        caller.join(DETECTION_BOUND + 5)
        took = time.monotonic() - stopped
        print(f"frozen proxy: the call failed {took:.2f} s later: {errors}")
        assert not caller.is_alive()
        assert took < DETECTION_BOUND
        assert len(errors) == 1 and isinstance(errors[0], asylo.EnclaveUnavailable)
        if then == "resumed":
            os.kill(pid, signal.SIGCONT)
            # Woken, it finds the host gone (the stream cut, or its own pings unanswered) and exits on its own.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
                if reaped == pid:
                    break
                time.sleep(0.05)
            else:
                pytest.fail("the resumed proxy did not exit within 10 s")
            print(f"resumed proxy exited {time.monotonic() - stopped - took:.2f} s after the call failed")
    finally:
        if then == "killed":
            os.kill(pid, signal.SIGCONT)  # destroy_enclave kills it; SIGKILL works on a stopped process too
        manager.destroy_enclave(client)


@pytest.mark.usefixtures("subreaper")  # once its host is killed, the proxy becomes our child: we reap it
def test_a_frozen_host_makes_the_proxy_finalize_and_exit_within_10_s(primitives_image_file: Path,
                                                                     tmp_path: Path) -> None:
    """The host stops (SIGSTOP) in the middle of a call without closing anything: its proxy's pings go unanswered,
    and the proxy finalizes the enclave and exits (a zombie of the stopped host, until the host is gone)."""
    marker = tmp_path / "finalized"
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT, str(primitives_image_file), str(marker)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        pid = int(host.stdout.readline())
        time.sleep(0.5)  # the host is now blocked in its call
        host.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        while time.monotonic() < stopped + 10:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the proxy outlived its frozen host by more than 10 s")
        print(f"frozen host: its proxy exited {time.monotonic() - stopped:.2f} s later")
        assert marker.read_text() == "finalized"
    finally:
        host.kill()
        host.wait()
    reaped, _ = os.waitpid(pid, 0)  # adopted by us once the host is gone
    assert reaped == pid
