"""The two interfaces that meet at the enclave boundary.

A backend (sim in-process, or a remote proxy) holds an `EnclaveRuntime` — what the trusted side exposes — and gives
the runtime an `ExitCallPort` — how trusted code reaches the host. Both are blocking calls on the calling thread; how
the call travels (a queue in the same process, a gRPC stream to another machine) is the backend's business, which is
why neither the trusted runtime nor the host API changes between backends.

An error is raised as an `AsyloError` on one side and raised again, with the same code and message, on the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from asylo.identity import Platform


class ExitCallPort(Protocol):
    """How trusted code makes an exit call (host call): blocks until the host's handler answers."""

    def exit_call(self, selector: int, extents: Sequence[bytes]) -> list[bytes]: ...


class EnclaveRuntime(Protocol):
    """The trusted side of one loaded enclave, as a backend sees it."""

    def enter(self, selector: int, extents: Sequence[bytes]) -> list[bytes]:
        """Run entry call `selector` on the calling (enclave worker) thread; raise AsyloError on failure."""
        ...

    @property
    def abort_reason(self) -> str | None:
        """Why the enclave aborted itself, or None: an aborted enclave takes no more calls."""
        ...


class RuntimeFactory(Protocol):
    """What an image's entry point must provide: a TrustedApplication subclass's `enclave_runtime` hook. `platform`
    is what the enclave runs on (its identity, evidence and sealing keys); None where there is none."""

    def __call__(self, host: ExitCallPort, platform: Platform | None, /) -> EnclaveRuntime: ...
