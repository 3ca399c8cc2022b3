"""`asylo bench --provision`: how long from asking a provision server for an enclave to its first answered call.

Two real `asylo provision-server` processes run on loopback: one without a warm pool (every provision starts a
proxy process: cold) and one with `--warm 1` (a pre-started proxy is assigned the image: warm). Rounds alternate
between them, so a machine that gets busier slows both alike. One measurement is: `load_enclave` through
`RemoteProvision.instantiate(server)` (provision RPC, proxy start or assignment, connect, hello/welcome,
initialize) plus the first entry call. Before each warm round the benchmark waits until the server's metrics say
the pool is full again, so no warm round silently starts a cold proxy. Target: warm median <= 50 ms.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asylo
from asylo.bench.remote_side import ECHO, ENCLAVE_DIR, ENCLAVE_NAME
from asylo.image import build_image, generate_signing_key, public_key_bytes, signer_id, write_image
from asylo.remote.child_process import ListeningChild
from asylo.status import DeadlineExceededError, InternalError

#: The issue's target for a warm provision-to-first-call, in milliseconds.
WARM_TARGET_MS = 50.0
_READY_PREFIX = "ASYLO-PROVISION-SERVER-READY port="
_log = logging.getLogger("asylo.bench.provision-server")


@dataclass
class ProvisionBenchResult:
    """Milliseconds per provision-to-first-call, every round of both kinds."""

    cold_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)

    @property
    def cold_median(self) -> float:
        return statistics.median(self.cold_ms)

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_ms)

    @property
    def target_met(self) -> bool:
        return self.warm_median <= WARM_TARGET_MS

    def table(self) -> str:
        rows = [("cold (proxy started per request)", self.cold_ms, "(info)"),
                ("warm (--warm 1, pre-started proxy)", self.warm_ms, f"<= {WARM_TARGET_MS:g} ms")]
        lines = [f"{'provision -> first call':<36} | {'rounds':>6} | {'median':>9} | {'min':>9} | {'max':>9} | target"]
        for label, values, target in rows:
            lines.append(f"{label:<36} | {len(values):>6} | {statistics.median(values):>6.1f} ms | "
                         f"{min(values):>6.1f} ms | {max(values):>6.1f} ms | {target}")
        lines.append(f"warm / cold: {self.warm_median / self.cold_median:.3f}x")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"schema": "asylo-bench-provision/1", "unit": "ms", "cold": self.cold_ms, "warm": self.warm_ms,
                "cold_median": self.cold_median, "warm_median": self.warm_median,
                "target": {"warm_median_at_most_ms": WARM_TARGET_MS}, "met": self.target_met}


class _Server:
    """An `asylo provision-server` child on loopback, anonymous clients allowed (it is the benchmark's own)."""

    def __init__(self, state_dir: Path, images: Path, signer: bytes, warm: int) -> None:
        args = [sys.executable, "-m", "asylo", "provision-server", "--listen", "127.0.0.1:0", "--allow-anonymous",
                "--state-dir", str(state_dir), "--images", str(images), "--trusted-signer", signer.hex(),
                "--warm", str(warm), "--metrics-listen", "127.0.0.1:0", "--exit-with-parent"]
        self.child = ListeningChild(args, ready_prefix=_READY_PREFIX, what="the provision server", log=_log)
        try:
            self.port = self.child.start(b"", 60)
            # The rest of the ready line: "platform=<fingerprint> metrics_port=<port>".
            fields = dict(item.split("=", 1) for item in self.child.ready_line.split()[1:])
            self.metrics_port = int(fields["metrics_port"])
            self.platform = fields["platform"]
        except BaseException:
            self.child.release()
            raise

    def warm_proxies(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith("asylo_provision_warm_proxies "):
                    return float(line.split()[1])
        raise InternalError("the provision server's metrics have no warm-pool gauge")

    def wait_warm(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.warm_proxies() < 1:
            if time.monotonic() > deadline:
                raise DeadlineExceededError(f"the warm pool did not refill within {timeout:g} s")
            time.sleep(0.05)

    def provision_to_first_call(self, image: Path) -> float:
        """Milliseconds from `load_enclave` through this server to the first entry call's answer."""
        manager = asylo.EnclaveManager()
        try:
            provision = asylo.RemoteProvision.instantiate(f"127.0.0.1:{self.port}")
            proxy = asylo.RemoteProxyClientConfig(provision, trusted_platforms=(self.platform,))
            config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, remote=asylo.RemoteLoadConfig(
                image, proxy=proxy, debug=True))
            began = time.perf_counter()
            client = manager.load_enclave(config)
            answer = client.enter(ECHO, [b"first"])
            elapsed = time.perf_counter() - began
            if answer != [b"first"]:
                raise InternalError("the benchmark enclave did not echo")
            manager.destroy_enclave(client)
            return elapsed * 1000
        finally:
            manager.shutdown()


@contextlib.contextmanager
def _servers() -> Iterator[tuple[_Server, _Server, Path]]:
    with tempfile.TemporaryDirectory(prefix="asylo-bench-provision-") as directory:
        root = Path(directory)
        key = generate_signing_key()
        (root / "images").mkdir()
        image = root / "images" / "bench.aimg"
        write_image(image, build_image(ENCLAVE_DIR, key))
        signer = signer_id(public_key_bytes(key))
        with contextlib.ExitStack() as stack:
            cold = _Server(root / "cold-state", root / "images", signer, warm=0)
            stack.callback(cold.child.release)
            warm = _Server(root / "warm-state", root / "images", signer, warm=1)
            stack.callback(warm.child.release)
            yield cold, warm, image


def run_provision_bench(rounds: int = 20, progress: Callable[[str], None] = lambda _: None) -> ProvisionBenchResult:
    """`rounds` cold and `rounds` warm provision-to-first-call measurements, interleaved."""
    result = ProvisionBenchResult()
    progress("starting two provision servers (cold, and --warm 1)")
    with _servers() as (cold, warm, image):
        cold.provision_to_first_call(image)  # the first load of a process pays for imports: not measured
        warm.wait_warm()
        warm.provision_to_first_call(image)
        for round_number in range(rounds):
            result.cold_ms.append(cold.provision_to_first_call(image))
            warm.wait_warm()
            result.warm_ms.append(warm.provision_to_first_call(image))
            if (round_number + 1) % 5 == 0:
                progress(f"{round_number + 1}/{rounds} rounds")
    return result
