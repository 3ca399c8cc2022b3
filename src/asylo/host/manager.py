"""EnclaveManager: loads, finds and destroys enclaves (Asylo's EnclaveManager)."""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass
from typing import ClassVar

from asylo.host.client import EnclaveClient
from asylo.host.config import EnclaveLoadConfig
from asylo.primitives import selectors
from asylo.proto.enclave_pb2 import EnclaveFinal
from asylo.status import AlreadyExistsError, AsyloError, FailedPreconditionError, NotFoundError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnclaveManagerOptions:
    """Process-wide settings, fixed by `EnclaveManager.configure` before the first `instance()`."""

    #: Finalize the loaded enclaves when the manager is shut down (at interpreter exit for the singleton).
    finalize_on_shutdown: bool = True


class EnclaveManager:
    """Owns the loaded enclaves of this process, by name.

    `EnclaveManager.instance()` is the process-wide manager, as in Asylo; separate managers may also be created
    directly (tests do).
    """

    _instance: ClassVar[EnclaveManager | None] = None
    _options: ClassVar[EnclaveManagerOptions | None] = None
    _class_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, options: EnclaveManagerOptions | None = None) -> None:
        self.options = options or EnclaveManagerOptions()
        self._clients: dict[str, EnclaveClient] = {}
        self._loading: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def configure(cls, options: EnclaveManagerOptions | None = None) -> None:
        """Set the options of the process-wide manager; only before `instance()` first creates it."""
        with cls._class_lock:
            if cls._instance is not None:
                raise FailedPreconditionError("EnclaveManager.configure must be called before EnclaveManager.instance")
            cls._options = options or EnclaveManagerOptions()

    @classmethod
    def instance(cls) -> EnclaveManager:
        """The process-wide manager, created with the configured (or default) options on first use."""
        with cls._class_lock:
            if cls._instance is None:
                cls._instance = cls(cls._options)
                # Enclaves outlive no process: finalize (or at least unload) them when the interpreter exits.
                atexit.register(cls._instance.shutdown)
            return cls._instance

    def load_enclave(self, config: EnclaveLoadConfig) -> EnclaveClient:
        """Load and initialize an enclave; return its client. A failed initialize leaves nothing behind."""
        with self._lock:
            if config.name in self._clients or config.name in self._loading:
                raise AlreadyExistsError(f"an enclave named {config.name!r} is already loaded")
            self._loading.add(config.name)
        try:
            enclave = config.backend().open(config.name, config.exit_calls.handler_for(config.name))
            client = EnclaveClient(enclave, self)
            try:
                client.enter(selectors.ENTRY_INITIALIZE, [config.enclave_config().SerializeToString()])
            except BaseException as exc:
                enclave.close(f"enclave {config.name!r} failed to initialize: {exc}")
                raise
            with self._lock:
                self._clients[config.name] = client
            _log.info("loaded enclave %r (measurement %s)", config.name, enclave.measurement.hex())
            return client
        finally:
            with self._lock:
                self._loading.discard(config.name)

    def get_client(self, name: str) -> EnclaveClient:
        """The client of the enclave loaded under `name`; NotFoundError if there is none."""
        client = self.get_client_or_none(name)
        if client is None:
            raise NotFoundError(f"no enclave named {name!r} is loaded")
        return client

    def get_client_or_none(self, name: str) -> EnclaveClient | None:
        with self._lock:
            return self._clients.get(name)

    def loaded_enclaves(self) -> list[str]:
        with self._lock:
            return sorted(self._clients)

    def destroy_enclave(self, client: EnclaveClient, final: EnclaveFinal | None = None, *,
                        skip_finalize: bool = False) -> None:
        """Finalize (unless skipped) and unload the enclave. It is unloaded even if finalize fails; the failure
        is raised afterwards."""
        with self._lock:
            if self._clients.get(client.name) is not client:
                raise FailedPreconditionError(f"enclave {client.name!r} is not loaded by this manager (already "
                                              f"destroyed?)")
            del self._clients[client.name]
        error: AsyloError | None = None
        try:
            if not skip_finalize and not client.closed:
                try:
                    client.enter(selectors.ENTRY_FINALIZE, [(final or EnclaveFinal()).SerializeToString()])
                except AsyloError as exc:
                    error = exc
        finally:  # even on KeyboardInterrupt: the enclave is no longer ours, so it must not outlive this call
            client.loaded_enclave.close(f"enclave {client.name!r} was destroyed")
        _log.info("destroyed enclave %r", client.name)
        if error is not None:
            raise error

    def shutdown(self) -> None:
        """Destroy every loaded enclave (finalizing them if the options say so)."""
        for name in self.loaded_enclaves():
            client = self.get_client_or_none(name)
            if client is None:
                continue
            try:
                self.destroy_enclave(client, skip_finalize=not self.options.finalize_on_shutdown)
            except AsyloError as exc:
                _log.warning("finalizing enclave %r at shutdown failed: %s", name, exc)
