"""Asylo's enclave lifecycle: Uninitialized -> Running -> Finalizing -> Finalized, and every wrong-state call."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest

import asylo
from asylo.backends.sim import SimEnclave
from asylo.primitives import selectors
from tests.conftest import enclave_worker_threads

Load = Callable[..., asylo.EnclaveClient]

RUN = (selectors.ENTRY_RUN, [asylo.EnclaveInput().SerializeToString()])
FINALIZE = (selectors.ENTRY_FINALIZE, [asylo.EnclaveFinal().SerializeToString()])
INITIALIZE = (selectors.ENTRY_INITIALIZE, [asylo.EnclaveConfig(name="x").SerializeToString()])
NAMED = (selectors.ENTRY_CALL_NAMED, [b"echo", b"x"])
USER = (300, [b"x"])


def _no_exit_calls(selector: int, extents: object) -> list[bytes]:
    raise asylo.NotFoundError("no exit calls in this test")


@pytest.fixture
def uninitialized(primitives_image: asylo.VerifiedImage) -> SimEnclave:
    """An enclave the backend loaded but nobody initialized (EnclaveManager always initializes)."""
    enclave = SimEnclave("raw", primitives_image, _no_exit_calls)
    yield enclave
    enclave.close("test over")


@pytest.mark.parametrize("call", [RUN, FINALIZE, NAMED, USER], ids=["run", "finalize", "named", "user-selector"])
def test_calls_before_initialize_fail(uninitialized: SimEnclave, call: tuple[int, list[bytes]]) -> None:
    with pytest.raises(asylo.FailedPreconditionError, match="needs the enclave to be Running, but it is Uninitialized"):
        uninitialized.enter(*call)


def test_initialize_twice_fails(load_primitives: Load) -> None:
    client = load_primitives()
    with pytest.raises(asylo.FailedPreconditionError, match="needs the enclave to be Uninitialized, but it is Running"):
        client.enter(*INITIALIZE)
    assert client.call("echo", b"still running") == b"still running"


@pytest.mark.parametrize("call", [RUN, FINALIZE, NAMED, USER, INITIALIZE],
                         ids=["run", "finalize", "named", "user-selector", "initialize"])
def test_calls_after_finalize_fail(manager: asylo.EnclaveManager, load_primitives: Load,
                                   call: tuple[int, list[bytes]]) -> None:
    client = load_primitives()
    client.enter(*FINALIZE)
    with pytest.raises(asylo.FailedPreconditionError, match="but it is Finalized"):
        client.enter(*call)
    # Destroying it then tries to finalize again, which is refused; it is unloaded all the same.
    with pytest.raises(asylo.FailedPreconditionError, match="finalize needs"):
        manager.destroy_enclave(client)
    assert manager.loaded_enclaves() == []
    assert client.closed


def test_calls_while_finalizing_fail(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()
    client = load_primitives(exit_calls=registry)
    seen: list[BaseException] = []

    @registry.register("finalized")
    def finalized(data: bytes) -> None:
        # Called by the enclave's finalize: the enclave is Finalizing, so calls back in are refused.
        for selector, extents in (RUN, NAMED, FINALIZE):
            try:
                client.enter(selector, extents)
            except asylo.FailedPreconditionError as exc:
                seen.append(exc)

    manager.destroy_enclave(client, asylo.EnclaveFinal(data=b"bye"))
    assert len(seen) == 3
    assert all("but it is Finalizing" in str(exc) for exc in seen)


def test_finalize_gets_enclave_final_and_skip_finalize_skips_it(manager: asylo.EnclaveManager,
                                                                load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()
    finals: list[bytes] = []
    registry.register("finalized", finals.append)
    manager.destroy_enclave(load_primitives("a", exit_calls=registry), asylo.EnclaveFinal(data=b"goodbye"))
    manager.destroy_enclave(load_primitives("b", exit_calls=registry), asylo.EnclaveFinal(data=b"unseen"),
                            skip_finalize=True)
    assert finals == [b"goodbye"]


def test_failing_finalize_still_unloads(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    registry = asylo.ExitCallRegistry()
    registry.register("finalized", lambda data: None)
    client = load_primitives(exit_calls=registry)
    with pytest.raises(asylo.InvalidArgumentError, match="finalize was told to fail"):
        manager.destroy_enclave(client, asylo.EnclaveFinal(data=b"fail"))
    assert manager.loaded_enclaves() == []
    with pytest.raises(asylo.EnclaveUnavailable):
        client.call("echo", b"x")


def test_failing_initialize_leaves_no_enclave_behind(manager: asylo.EnclaveManager,
                                                     primitives_image: asylo.VerifiedImage) -> None:
    modules_before = {name for name in sys.modules if name.startswith("_asylo_enclave_")}
    config = asylo.EnclaveLoadConfig("failing", sim=asylo.SimLoadConfig(primitives_image),
                                     config=asylo.EnclaveConfig(data=b"fail"))
    with pytest.raises(asylo.InvalidArgumentError, match="initialize was told to fail"):
        manager.load_enclave(config)
    assert manager.loaded_enclaves() == []
    assert enclave_worker_threads() == []
    assert {name for name in sys.modules if name.startswith("_asylo_enclave_")} == modules_before
    # The name is free again.
    client = manager.load_enclave(asylo.EnclaveLoadConfig("failing", sim=asylo.SimLoadConfig(primitives_image)))
    assert client.call("enclave_name") == b"failing"


def test_initialize_gets_its_config_with_the_enclave_name(load_primitives: Load) -> None:
    assert load_primitives("named-by-host").call("enclave_name") == b"named-by-host"


def test_enter_and_run_round_trip(load_primitives: Load) -> None:
    output = load_primitives().enter_and_run(asylo.EnclaveInput(data=b"input"))
    assert output.data == b"ran:input"
    assert asylo.Status.from_proto(output.status).ok


def test_destroy_unloads_modules(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    before = set(sys.modules)
    client = load_primitives()
    assert client.call("origin") == b"image"
    loaded = {name for name in set(sys.modules) - before if name.startswith("_asylo_enclave_")}
    assert loaded
    manager.destroy_enclave(client)
    assert not loaded & set(sys.modules)
    assert not any(type(finder).__name__ == "_ImageFinder" for finder in sys.meta_path)


def test_context_manager_destroys(manager: asylo.EnclaveManager, load_primitives: Load) -> None:
    with load_primitives("scoped") as client:
        assert client.call("echo", b"in") == b"in"
    assert client.closed
    assert manager.loaded_enclaves() == []
