"""The `sim` backend: the enclave runs in this process, on worker threads matched to the host's threads.

Like Asylo's sgx-sim, it gives the programming model of an enclave — a verified image, its own modules, entry and exit
calls across a boundary, thread matching, the lifecycle — and none of the isolation: host and enclave share one
address space. For development and tests; the remote backend runs the same runtime in another process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from asylo.backends.image_modules import ImageModules
from asylo.image import VerifiedImage
from asylo.primitives.interfaces import EnclaveRuntime, RuntimeFactory
from asylo.primitives.matching import (
    DEFAULT_MAX_THREADS,
    Call,
    EnclaveThreads,
    Handler,
    HostThreads,
    Message,
    Result,
)
from asylo.status import AsyloError, FailedPreconditionError, InternalError, InvalidArgumentError

_log = logging.getLogger(__name__)


def start_runtime(image: VerifiedImage, modules: ImageModules, host: object) -> EnclaveRuntime:
    """Import the image's entry point and start its runtime with `host` as the exit-call port."""
    try:
        entry_class = modules.load_attribute(image.manifest.entry_point)
    except AsyloError:
        raise
    except Exception as exc:
        # The enclave's own code failed while being imported: its error, reported like any enclave error.
        raise InternalError(f"enclave {image.manifest.name!r} failed to load its entry point "
                            f"{image.manifest.entry_point!r}: {type(exc).__name__}: {exc}") from exc
    factory: RuntimeFactory | None = getattr(entry_class, "enclave_runtime", None)
    if not isinstance(entry_class, type) or factory is None or not callable(factory):
        raise InvalidArgumentError(f"entry point {image.manifest.entry_point!r} is not a TrustedApplication "
                                   f"subclass")
    return factory(host)  # type: ignore[arg-type]


class SimEnclave:
    """One enclave loaded in-process (a `LoadedEnclave`)."""

    def __init__(self, name: str, image: VerifiedImage, exit_handler: Handler, *, debug: bool = False,
                 max_threads: int = DEFAULT_MAX_THREADS) -> None:
        if image.manifest.debug and not debug:
            raise FailedPreconditionError(f"image {image.manifest.name!r} is a debug enclave; load it with "
                                          f"debug=True to accept that")
        self._name = name
        self._image = image
        self._teardown_lock = threading.Lock()
        self._torn_down = False
        self._modules = ImageModules(image.files, label=f"{name}:{image.manifest.name}")
        self._enclave = EnclaveThreads(self._to_host, self._enter_runtime, name=name, max_threads=max_threads)
        self._host = HostThreads(self._enclave.deliver, exit_handler)
        try:
            self._runtime = start_runtime(image, self._modules, self._enclave)
        except BaseException:
            self._teardown("the enclave failed to load")
            raise

    @property
    def name(self) -> str:
        return self._name

    @property
    def measurement(self) -> bytes:
        return self._image.measurement

    @property
    def signer(self) -> bytes:
        return self._image.signer

    @property
    def closed(self) -> bool:
        return self._host.closed

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        return self._host.enter(selector, extents)

    def _enter_runtime(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        return self._runtime.enter(selector, extents)

    def _to_host(self, message: Message) -> None:
        assert isinstance(message, Call | Result)
        self._host.deliver(message)
        # Closed only after the aborting call's own result is delivered, so that call reports ABORTED and the
        # others UNAVAILABLE.
        # The workers are stopped later, by close(), not from this worker thread.
        reason = self._runtime.abort_reason if isinstance(message, Result) else None
        if reason is not None and not self._host.closed:
            self._host.close(f"enclave {self._name!r} aborted: {reason}")

    def close(self, reason: str) -> None:
        self._teardown(reason)

    def _teardown(self, reason: str) -> None:
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
        self._host.close(reason)
        self._enclave.close(reason)
        self._modules.unload()
        _log.debug("enclave %r closed: %s", self._name, reason)
