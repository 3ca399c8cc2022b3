"""Shared fixtures: enclave images built at test time with keys generated at test time."""

from __future__ import annotations

import shutil
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import asylo
from asylo.image import build_image, generate_signing_key, load_image

ENCLAVES = Path(__file__).parent / "enclaves"
QUICKSTART = Path(__file__).parent.parent / "examples" / "quickstart" / "enclave"


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def from_u64(raw: bytes) -> int:
    value: int = struct.unpack("<Q", raw)[0]
    return value


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


@pytest.fixture
def load_primitives(
    manager: asylo.EnclaveManager, primitives_image: asylo.VerifiedImage
) -> Callable[..., asylo.EnclaveClient]:
    def load(name: str = "primitives", exit_calls: asylo.ExitCallRegistry | None = None,
             **sim: object) -> asylo.EnclaveClient:
        config = asylo.EnclaveLoadConfig(name, sim=asylo.SimLoadConfig(primitives_image, **sim),  # type: ignore[arg-type]
                                         exit_calls=exit_calls or asylo.ExitCallRegistry())
        return manager.load_enclave(config)

    return load


@pytest.fixture(autouse=True)
def no_leftover_enclave_threads() -> Iterator[None]:
    """Every enclave worker a test started has ended by the time it is over (its manager shut down)."""
    yield
    for thread in enclave_worker_threads():
        thread.join(timeout=5)
    assert not enclave_worker_threads(), f"enclave worker threads left running: {enclave_worker_threads()}"


def enclave_worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "-worker-" in t.name]
