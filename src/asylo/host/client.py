"""EnclaveClient: the host's handle on one loaded enclave."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from asylo.backends.base import LoadedEnclave
from asylo.primitives import selectors
from asylo.primitives.extents import MessageReader
from asylo.primitives.named import MAX_CALL_NAME, call_name_bytes
from asylo.proto.enclave_pb2 import EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.status import InternalError, InvalidArgumentError, Status

if TYPE_CHECKING:
    from asylo.host.manager import EnclaveManager


class EnclaveClient:
    """Calls into one enclave: `enter_and_run` (Asylo's EnterAndRun), named entry points, raw selectors.

    Every method may be called from any number of threads at once; the calls of one thread run on one enclave
    thread. Use as a context manager to destroy the enclave on exit.
    """

    def __init__(self, enclave: LoadedEnclave, manager: EnclaveManager) -> None:
        self._enclave = enclave
        self._manager = manager

    @property
    def name(self) -> str:
        return self._enclave.name

    @property
    def measurement(self) -> bytes:
        return self._enclave.measurement

    @property
    def signer(self) -> bytes:
        return self._enclave.signer

    @property
    def closed(self) -> bool:
        """True once the enclave was destroyed or became unavailable (aborted, its connection lost)."""
        return self._enclave.closed

    @property
    def loaded_enclave(self) -> LoadedEnclave:
        return self._enclave

    def enter_and_run(self, enclave_input: EnclaveInput | None = None) -> EnclaveOutput:
        """Run the enclave's `run` with `enclave_input`; return its output, or raise the error it returned."""
        reader = MessageReader(self._enclave.enter(selectors.ENTRY_RUN,
                                                   [(enclave_input or EnclaveInput()).SerializeToString()]))
        raw = reader.next()
        reader.expect_end()
        try:
            output = EnclaveOutput.FromString(raw)
        except DecodeError as exc:
            raise InternalError(f"enclave {self.name!r} returned a malformed EnclaveOutput: {exc}") from None
        Status.from_proto(output.status).raise_for_status()
        return output

    def call(self, name: str, *args: bytes) -> bytes:
        """Call the enclave's entry point declared `@entry_point` under `name` with bytes arguments."""
        encoded = call_name_bytes(name)
        if encoded is None:
            raise InvalidArgumentError(f"entry point names are 1..{MAX_CALL_NAME} bytes, got {name!r}")
        reader = MessageReader(self._enclave.enter(selectors.ENTRY_CALL_NAMED, [encoded, *map(bytes, args)]))
        result = reader.next()
        reader.expect_end()
        return result

    def enter(self, selector: int, extents: Sequence[bytes] = ()) -> list[bytes]:
        """The raw primitive: make entry call `selector` with byte extents; return the answer's extents."""
        return self._enclave.enter(selector, [bytes(e) for e in extents])

    def destroy(self, final: EnclaveFinal | None = None, *, skip_finalize: bool = False) -> None:
        """Shorthand for `manager.destroy_enclave(client, final, skip_finalize)`."""
        self._manager.destroy_enclave(self, final, skip_finalize=skip_finalize)

    def __enter__(self) -> EnclaveClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._manager.get_client_or_none(self.name) is self:
            self.destroy()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "loaded"
        return f"<EnclaveClient {self.name!r} {state} measurement={self.measurement.hex()[:16]}...>"
