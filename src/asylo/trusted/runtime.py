"""The in-enclave runtime: turns entry calls into TrustedApplication calls, enforcing Asylo's lifecycle.

    Uninitialized --initialize--> Running --finalize--> Finalizing --> Finalized

A call made in the wrong state fails with FAILED_PRECONDITION and changes nothing. Everything that arrives here came
from the host and is parsed as hostile input: a malformed message is INVALID_ARGUMENT, not a crash.
"""

from __future__ import annotations

import enum
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from asylo.identity import Platform
from asylo.primitives import selectors
from asylo.primitives.extents import MessageReader, as_extents
from asylo.primitives.interfaces import ExitCallPort
from asylo.primitives.named import named_call_result
from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.status import (
    AbortedError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    Status,
)
from asylo.trusted.application import EnclaveAbort, TrustedApplication
from asylo.trusted.host_calls import HostCalls

_M = TypeVar("_M", bound=Message)


class LifecycleState(enum.Enum):
    UNINITIALIZED = "Uninitialized"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    FINALIZED = "Finalized"


def _parse(message_type: type[_M], extents: Sequence[bytes], what: str) -> _M:
    reader = MessageReader(extents)
    raw = reader.next()
    reader.expect_end()
    try:
        return message_type.FromString(raw)
    except DecodeError as exc:
        raise InvalidArgumentError(f"{what}: not a valid {message_type.DESCRIPTOR.full_name}: {exc}") from None


class TrustedRuntime:
    """One enclave's trusted runtime: the `EnclaveRuntime` a backend drives."""

    def __init__(self, app_class: type[TrustedApplication], host: ExitCallPort,
                 platform: Platform | None = None) -> None:
        self._app_class = app_class
        #: The platform the enclave runs on (None: no platform), as enclave code sees it: its identity, evidence
        #: and own sealing keys only, never the platform's root (see asylo.identity.Platform).
        self.platform = platform
        self._host = HostCalls(host)
        self._app: TrustedApplication | None = None
        self._state = LifecycleState.UNINITIALIZED
        self._lock = threading.Lock()
        self._abort_reason: str | None = None
        self._signatures: dict[str, inspect.Signature] = {}

    @property
    def state(self) -> LifecycleState:
        return self._state

    @property
    def abort_reason(self) -> str | None:
        return self._abort_reason

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        if self._abort_reason is not None:
            raise FailedPreconditionError(f"the enclave aborted: {self._abort_reason}")
        try:
            return self._dispatch(selector, extents)
        except EnclaveAbort as abort:
            self._abort_reason = abort.reason
            raise AbortedError(f"the enclave aborted: {abort.reason}") from None

    def _dispatch(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        if selector == selectors.ENTRY_INITIALIZE:
            return self._initialize(_parse(EnclaveConfig, extents, "initialize"))
        if selector == selectors.ENTRY_RUN:
            return self._run(_parse(EnclaveInput, extents, "run"))
        if selector == selectors.ENTRY_FINALIZE:
            return self._finalize(_parse(EnclaveFinal, extents, "finalize"))
        if selector == selectors.ENTRY_CALL_NAMED:
            return self._call_named(extents)
        method_name = self._app_class._asylo_entry_selectors.get(selector)
        if method_name is None:
            raise NotFoundError(f"the enclave has no entry point for selector {selector}")
        app = self._running_app(f"entry selector {selector}")
        return as_extents(getattr(app, method_name)(list(extents)))

    def _require(self, state: LifecycleState, what: str) -> None:
        if self._state is not state:
            raise FailedPreconditionError(f"{what} needs the enclave to be {state.value}, but it is "
                                          f"{self._state.value}")

    def _running_app(self, what: str) -> TrustedApplication:
        with self._lock:
            self._require(LifecycleState.RUNNING, what)
            assert self._app is not None
            return self._app

    def _initialize(self, config: EnclaveConfig) -> list[bytes]:
        with self._lock:
            self._require(LifecycleState.UNINITIALIZED, "initialize")
            # Claimed before the application runs, so that a concurrent second initialize is refused.
            self._state = LifecycleState.FINALIZING
        try:
            app = self._app_class()
            app.host = self._host
            app.platform = self.platform
            app.initialize(config)
        except BaseException:
            with self._lock:
                self._state = LifecycleState.FINALIZED
            raise
        with self._lock:
            self._app = app
            self._state = LifecycleState.RUNNING
        return []

    def _run(self, enclave_input: EnclaveInput) -> list[bytes]:
        output = self._running_app("run").run(enclave_input)
        if output is None:
            output = EnclaveOutput()
        if not isinstance(output, EnclaveOutput):
            raise InternalError(f"run() must return asylo.EnclaveOutput, it returned {type(output).__name__}")
        output.status.CopyFrom(Status().to_proto())
        return [output.SerializeToString()]

    def _finalize(self, final: EnclaveFinal) -> list[bytes]:
        with self._lock:
            self._require(LifecycleState.RUNNING, "finalize")
            self._state = LifecycleState.FINALIZING
            app = self._app
        assert app is not None
        try:
            app.finalize(final)
        finally:
            with self._lock:
                self._state = LifecycleState.FINALIZED
        return []

    def _signature(self, method_name: str, method: Callable[..., object]) -> inspect.Signature:
        # Checked before the call, so that a wrong argument count is the caller's INVALID_ARGUMENT, not a
        # TypeError inside the enclave.
        signature = self._signatures.get(method_name)
        if signature is None:
            signature = self._signatures[method_name] = inspect.signature(method)
        return signature

    def _call_named(self, extents: Sequence[bytes]) -> list[bytes]:
        reader = MessageReader(extents)
        name = reader.next_str()
        method_name = self._app_class._asylo_entry_points.get(name)
        if method_name is None:
            raise NotFoundError(f"the enclave has no entry point named {name!r}")
        method: Callable[..., object] = getattr(self._running_app(f"entry point {name!r}"), method_name)
        args = reader.rest()
        try:
            self._signature(method_name, method).bind(*args)
        except TypeError as exc:
            raise InvalidArgumentError(f"entry point {name!r} called with {len(args)} arguments: {exc}") from None
        return named_call_result(method(*args), f"entry point {name!r}", InternalError)
