"""Shared fixtures: enclave images built at test time with keys generated at test time."""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.identity import DEFAULT_SIM_STATE_ENV, SimPlatformKey
from asylo.image import build_image, generate_signing_key, load_image, public_key_bytes, signer_id, write_image
from tests.provision_helpers import ALICE, BOB, ServerProcess

ENCLAVES = Path(__file__).parent / "enclaves"
QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart" / "enclave"


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def from_u64(raw: bytes) -> int:
    value: int = struct.unpack("<Q", raw)[0]
    return value


#: The run's base temporary directory (pytest's), noted by the first session fixture for `pytest_sessionfinish`.
_BASETEMP: list[Path] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A green run leaves nothing in /tmp: pytest's retention policy removes the directories of passing tests, but
    not those that session- and module-scoped fixtures made (images, state directories, the test platform's key).
    A run with failures keeps everything, for whoever has to look."""
    if exitstatus == 0 and _BASETEMP:
        basetemp = _BASETEMP[0]
        shutil.rmtree(basetemp, ignore_errors=True)
        root = basetemp.parent
        if root.name.startswith("pytest-of-"):  # pytest's per-user root, not a --basetemp's parent
            current = root / "pytest-current"  # pytest's link to the newest run: ours, now dangling
            with contextlib.suppress(OSError):
                if current.is_symlink() and current.readlink() == basetemp:
                    current.unlink()
            with contextlib.suppress(OSError):  # other runs' directories are still in it
                root.rmdir()


@pytest.fixture(scope="session", autouse=True)
def sim_platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The simulated platform's key lives in a directory of the test run, never in the home directory; proxies
    started by tests inherit the variable and so use the same platform."""
    _BASETEMP.append(tmp_path_factory.getbasetemp())
    path = tmp_path_factory.mktemp("sim-platform")
    before = os.environ.get(DEFAULT_SIM_STATE_ENV)
    os.environ[DEFAULT_SIM_STATE_ENV] = str(path)
    yield path
    if before is None:
        del os.environ[DEFAULT_SIM_STATE_ENV]
    else:
        os.environ[DEFAULT_SIM_STATE_ENV] = before


@pytest.fixture(scope="session")
def local_platform(sim_platform_dir: Path) -> str:
    """The fingerprint of the simulated platform that proxies started by tests run on."""
    return SimPlatformKey.load_or_create(sim_platform_dir).fingerprint


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="session")
def primitives_image(signing_key: Ed25519PrivateKey) -> asylo.VerifiedImage:
    return load_image(build_image(ENCLAVES / "primitives", signing_key))


@pytest.fixture(scope="session")
def quickstart_image(signing_key: Ed25519PrivateKey) -> asylo.VerifiedImage:
    return load_image(build_image(QUICKSTART, signing_key))


@pytest.fixture
def enclave_source(tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of a test enclave's sources, for tests that change them."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(ENCLAVES / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        return target

    return copy


@pytest.fixture
def manager() -> Iterator[asylo.EnclaveManager]:
    """A manager of the test's own; every enclave it still holds is destroyed afterwards."""
    manager = asylo.EnclaveManager()
    yield manager
    manager.shutdown()


@pytest.fixture(scope="session")
def primitives_image_file(tmp_path_factory: pytest.TempPathFactory, signing_key: Ed25519PrivateKey) -> Path:
    path = tmp_path_factory.mktemp("images") / "primitives.aimg"
    write_image(path, build_image(ENCLAVES / "primitives", signing_key))
    return path


@pytest.fixture(params=["direct", "grpc"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session transport of this test's proxies: ASYLO_TRANSPORT, which local provisioning, `asylo proxy` and
    the provision server default to. A module whose tests exercise the remote session runs them over both with
    `pytestmark = pytest.mark.usefixtures("transport")`."""
    monkeypatch.setenv("ASYLO_TRANSPORT", request.param)
    return str(request.param)


@pytest.fixture
def backend() -> str:
    """Which backend `load_primitives` uses; test modules that run on both parametrize this."""
    return "sim"


@pytest.fixture
def load_primitives(
    manager: asylo.EnclaveManager, primitives_image: asylo.VerifiedImage, primitives_image_file: Path, backend: str
) -> Callable[..., asylo.EnclaveClient]:
    def load(name: str = "primitives", exit_calls: asylo.ExitCallRegistry | None = None,
             **options: object) -> asylo.EnclaveClient:
        registry = exit_calls or asylo.ExitCallRegistry()
        if backend == "sim":
            config = asylo.EnclaveLoadConfig(name, sim=asylo.SimLoadConfig(primitives_image, **options),  # type: ignore[arg-type]
                                             exit_calls=registry)
        else:
            remote = asylo.RemoteLoadConfig(primitives_image_file, **options)  # type: ignore[arg-type]
            config = asylo.EnclaveLoadConfig(name, remote=remote, exit_calls=registry)
        return manager.load_enclave(config)

    return load


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every enclave thread, connection thread and proxy process a test started has ended when it is over."""
    children_before = set(child_processes())  # whatever started us may have given us children of its own

    def new_children() -> set[int]:
        return set(child_processes()) - children_before

    yield
    deadline = time.monotonic() + 10
    while (leftover_threads() or new_children()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftover_threads(), f"threads left running: {leftover_threads()}"
    assert not new_children(), f"child processes left behind: {describe_processes(new_children())}"


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process adopts its orphaned descendants for the test, and only for it: later tests' orphans (a killed
    provision server's proxies, the helpers swtpm_setup starts) must go to init, not become zombies of the test run."""
    import ctypes  # noqa: PLC0415 - Linux only, and only these tests need it

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_child_subreaper = 36
    if libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0) != 0:
        pytest.skip("cannot become a child subreaper here")
    yield
    libc.prctl(pr_set_child_subreaper, 0, 0, 0, 0)


def raising_into(errors: list[BaseException], call: Callable[[], object]) -> Callable[[], None]:
    """`call`, made to put what it raises into `errors`: for calls made where the test cannot catch (another thread,
    the I/O loop)."""

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    return run


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether `predicate` holds within `timeout` (for what a remote peer tells us asynchronously)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def enclave_worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-worker-" in t.name]


def leftover_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-worker-" in t.name or t.name.startswith(
        ("asylo-remote-", "asylo-proxy-", "asylo-child-", "asylo-thread-reporter-"))]


def describe_processes(pids: set[int]) -> dict[int, str]:
    """Each pid with its command line (or its state, for a zombie), for a message that says what was left."""
    described: dict[int, str] = {}
    for pid in sorted(pids):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            described[pid] = command.strip() or "<zombie: " + Path(f"/proc/{pid}/stat").read_text().split()[2] + ">"
        except OSError:
            described[pid] = "<gone>"
    return described


def child_processes() -> list[int]:
    """Live or unreaped children of this process (from /proc; empty where there is none)."""
    children: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            children += [int(pid) for pid in task.read_text().split()]
        except OSError:
            continue
    return children


# -- provision server fixtures (module scope: one server per test module) ----------------------------------------

@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory, signing_key: Ed25519PrivateKey) -> Path:
    directory = tmp_path_factory.mktemp("operator-images")
    write_image(directory / "quickstart.aimg", build_image(QUICKSTART, signing_key))
    write_image(directory / "primitives.aimg", build_image(ENCLAVES / "primitives", signing_key))
    return directory


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(f"# clients\nalice {ALICE}\nbob {BOB}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory, images_dir: Path, tokens_file: Path,
                 signing_key: Ed25519PrivateKey) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []
    trusted = signer_id(public_key_bytes(signing_key)).hex()

    def start(*extra: str, state_dir: Path | None = None) -> ServerProcess:
        state = state_dir or tmp_path_factory.mktemp("state") / "state"
        server = ServerProcess(state, ["--images", str(images_dir), "--trusted-signer", trusted,
                                       "--client-tokens", str(tokens_file), "--metrics-listen", "127.0.0.1:0",
                                       *extra])
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
