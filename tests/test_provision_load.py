"""Load: 32 clients at once each provision an enclave, make 100 calls and release it.

Every call must be answered, no proxy may be left, and the server's memory must come back near where it was (a
server that kept something of every session would grow by megabytes here).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import asylo
from tests.conftest import from_u64, u64
from tests.provision_helpers import ALICE, ServerProcess, wait_gone
from tests.test_provision_server import load

CLIENTS = 32
CALLS = 100
#: How much the server's resident memory may grow over a full load round (after a warm-up round that lets its
#: allocators, gRPC's included, reach their working size).
MEMORY_SLACK = 24 << 20


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def one_client(server: ServerProcess, image: Path, answered: list[int], errors: list[BaseException]) -> None:
    manager = asylo.EnclaveManager()
    try:
        provision = asylo.RemoteProvision.instantiate(server.address, bearer_token=ALICE)
        client = load(manager, image, provision)
        for value in range(CALLS):
            answered.append(int(from_u64(client.call("square", u64(value))) == value * value))
        manager.destroy_enclave(client)
    except BaseException as exc:
        errors.append(exc)
    finally:
        manager.shutdown()


def run_round(server: ServerProcess, image: Path, clients: int) -> list[int]:
    answered: list[int] = []
    errors: list[BaseException] = []
    threads = [threading.Thread(target=one_client, args=(server, image, answered, errors)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[:3]
    return answered


def test_32_clients_100_calls_each(start_server: Callable[..., ServerProcess], images_dir: Path) -> None:
    server = start_server("--max-enclaves", str(CLIENTS), "--max-enclaves-per-client", str(CLIENTS),
                          "--hello-timeout", "120")
    image = images_dir / "primitives.aimg"
    run_round(server, image, 4)  # warm-up
    assert not wait_gone(server.proxy_pids())
    before = rss(server.process.pid)
    answered = run_round(server, image, CLIENTS)
    assert len(answered) == CLIENTS * CALLS
    assert set(answered) == {1}, "an answer did not match its call"
    assert not wait_gone(server.proxy_pids(), 30), "proxies outlived their sessions"
    assert asylo.RemoteProvision.instantiate(server.address, bearer_token=ALICE).sessions() == []  # type: ignore[attr-defined]
    after = rss(server.process.pid)
    print(f"server RSS before {before / 2**20:.1f} MiB, after {after / 2**20:.1f} MiB")
    assert after <= before + MEMORY_SLACK, f"server memory grew from {before} to {after} bytes"
    server.stop()

