"""The `sim` backend: the enclave runs in this process, on worker threads matched to the host's threads.

Like Asylo's sgx-sim, it gives the programming model of an enclave — a verified image, its own modules, entry and exit
calls across a boundary, thread matching, the lifecycle — and none of the isolation: host and enclave share one
address space. For development and tests.

`HostedEnclave` is the enclave half on its own: the remote backend's proxy server runs exactly that, with the host
half at the other end of a gRPC stream instead of in the same process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from asylo.backends.image_modules import ImageModules
from asylo.identity import Platform
from asylo.image import VerifiedImage
from asylo.primitives import selectors
from asylo.primitives.interfaces import EnclaveRuntime, ExitCallPort, RuntimeFactory
from asylo.primitives.matching import (
    DEFAULT_MAX_THREADS,
    Call,
    EnclaveThreads,
    Handler,
    HostThreads,
    Message,
    Result,
    Send,
)
from asylo.proto.enclave_pb2 import EnclaveFinal
from asylo.status import AbortedError, AsyloError, FailedPreconditionError, InternalError, InvalidArgumentError

_log = logging.getLogger(__name__)


def start_runtime(image: VerifiedImage, modules: ImageModules, host: ExitCallPort,
                  platform: Platform | None = None) -> EnclaveRuntime:
    """Import the image's entry point and start its runtime with `host` as the exit-call port, on `platform`."""
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
    return factory(host, platform)


def check_debug(image: VerifiedImage, debug: bool) -> None:
    if image.manifest.debug and not debug:
        raise FailedPreconditionError(f"image {image.manifest.name!r} is a debug enclave; load it with "
                                      f"debug=True to accept that")


class HostedEnclave:
    """The enclave half: the image's modules, its trusted runtime, one worker thread per host thread.

    `send` delivers messages to the host half; `deliver` takes the host half's messages.
    """

    def __init__(self, name: str, image: VerifiedImage, send: Send, *, debug: bool = False,
                 max_threads: int = DEFAULT_MAX_THREADS, on_abort: Callable[[str], None] | None = None,
                 platform: Platform | None = None) -> None:
        check_debug(image, debug)
        self.name = name
        self.image = image
        self._send = send
        self._on_abort = on_abort
        self._local = threading.local()
        self._aborted = False
        self._modules = ImageModules(image.files, label=f"{name}:{image.manifest.name}")
        self._threads = EnclaveThreads(self._send_to_host, self._enter, name=name, max_threads=max_threads)
        self._closed = False
        self._lock = threading.Lock()
        try:
            self._runtime = start_runtime(image, self._modules, self._threads, platform)
        except BaseException:
            self.close("the enclave failed to load")
            raise

    @property
    def abort_reason(self) -> str | None:
        return self._runtime.abort_reason

    def _enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        try:
            return self._runtime.enter(selector, extents)
        except AbortedError:
            if self._runtime.abort_reason is not None:
                self._local.aborting = True  # this worker's call aborted the enclave; see _send_to_host
            raise

    def _send_to_host(self, message: Message) -> None:
        self._send(message)
        if isinstance(message, Result) and getattr(self._local, "aborting", False):
            # Only after the aborting call's own result is out, so that call reports ABORTED and the others
            # UNAVAILABLE; and from the aborting worker itself, so no other result can overtake it.
            self._local.aborting = False
            with self._lock:
                first, self._aborted = not self._aborted, True
            if first:
                reason = f"enclave {self.name!r} aborted: {self._runtime.abort_reason}"
                self._threads.close(reason, join_timeout=0)
                if self._on_abort is not None:
                    self._on_abort(reason)

    def deliver(self, message: Message) -> None:
        self._threads.deliver(message)

    def shutdown_abandoned(self, reason: str, timeout: float = 3.0) -> None:
        """End the enclave on behalf of a host that went away without destroying it: release the threads that wait
        for the host, run finalize if the enclave is still running, and unload it.

        Host calls fail from here on (the host is gone), so finalize code that needs the host fails rather than
        hangs; a finalize that does not return within `timeout` is left behind (its thread is a daemon).
        """
        self._threads.close(reason, join_timeout=timeout)
        self._finalize_abandoned(timeout)
        self.close(reason)

    def _finalize_abandoned(self, timeout: float) -> None:
        def finalize() -> None:
            try:
                self._runtime.enter(selectors.ENTRY_FINALIZE, [EnclaveFinal().SerializeToString()])
            except FailedPreconditionError:
                pass  # never initialized, already finalized, or aborted: nothing to do
            except AsyloError as exc:
                _log.warning("enclave %r: finalize after the host went away failed: %s", self.name, exc)

        worker = threading.Thread(target=finalize, name=f"{self.name}-finalize", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            _log.warning("enclave %r: finalize did not return within %.0f s; leaving it", self.name, timeout)

    def close(self, reason: str) -> None:
        """Stop the workers (waiting host calls fail with EnclaveUnavailable) and unload the modules."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._threads.close(reason)
        self._modules.unload()


class SimEnclave:
    """One enclave loaded in-process (a `LoadedEnclave`): a HostedEnclave wired directly to the host's threads.

    `platform` is what the enclave's sealing (and identity) run on; SimLoadConfig gives it this machine's
    simulated platform. None: an enclave that cannot seal.
    """

    def __init__(self, name: str, image: VerifiedImage, exit_handler: Handler, *, debug: bool = False,
                 max_threads: int = DEFAULT_MAX_THREADS, platform: Platform | None = None) -> None:
        self._name = name
        self._image = image
        self._host = HostThreads(self._to_enclave, exit_handler)
        self._hosted = HostedEnclave(name, image, self._to_host, debug=debug, max_threads=max_threads,
                                     on_abort=self._host.close, platform=platform)

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

    def _to_enclave(self, message: Message) -> None:
        self._hosted.deliver(message)

    def _to_host(self, message: Message) -> None:
        assert isinstance(message, Call | Result)
        self._host.deliver(message)

    def close(self, reason: str) -> None:
        self._host.close(reason)
        self._hosted.close(reason)
        _log.debug("enclave %r closed: %s", self._name, reason)
