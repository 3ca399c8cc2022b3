"""TrustedApplication: the class an enclave's code subclasses, and the decorators that declare its entry points.

As in Asylo, an enclave has a lifecycle driven by three entry calls — initialize when it is loaded, run for each
`EnclaveClient.enter_and_run`, finalize when it is destroyed — and may declare more entry points: named ones
(`@entry_point`, called with `EnclaveClient.call(name, *args)`) and raw user selectors (`@entry_selector(n)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, overload

from asylo.identity import Platform, SealPolicy
from asylo.primitives.interfaces import EnclaveRuntime, ExitCallPort
from asylo.primitives.named import MAX_CALL_NAME, call_name_bytes
from asylo.primitives.selectors import check_user_selector
from asylo.proto.enclave_pb2 import EnclaveConfig, EnclaveFinal, EnclaveInput, EnclaveOutput
from asylo.status import UnimplementedError
from asylo.trusted import sealing

if TYPE_CHECKING:
    from asylo.trusted.host_calls import HostCalls

_F = TypeVar("_F", bound=Callable[..., Any])

_ENTRY_POINT_ATTR = "__asylo_entry_point__"
_ENTRY_SELECTOR_ATTR = "__asylo_entry_selector__"


class EnclaveAbort(BaseException):
    """Raised by `TrustedApplication.abort`: the enclave stops taking calls.

    A BaseException (a signal like SystemExit, not an error to handle), so that a broad `except Exception` in
    enclave code does not swallow it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TrustedApplication:
    """Base class of an enclave's trusted code (Asylo's TrustedApplication).

    Override `initialize`, `run` and `finalize` as needed. `self.host` makes host calls and `self.platform` is the
    platform the enclave runs on (None where there is none): its `identity`, `kind`, `evidence(report_data)` and its
    own `sealing_key(...)`, never the platform's root or another enclave's keys. Both are set before `initialize`
    runs. The class is instantiated inside the enclave, with no arguments.
    """

    #: Named entry points of this class and its bases: name -> method name.
    _asylo_entry_points: ClassVar[dict[str, str]] = {}
    #: User entry selectors: selector -> method name.
    _asylo_entry_selectors: ClassVar[dict[int, str]] = {}

    host: HostCalls
    platform: Platform | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = dict(cls._asylo_entry_points)
        numbers = dict(cls._asylo_entry_selectors)
        for attr, value in vars(cls).items():
            name = getattr(value, _ENTRY_POINT_ATTR, None)
            if name is not None:
                names[name] = attr
            number = getattr(value, _ENTRY_SELECTOR_ATTR, None)
            if number is not None:
                numbers[number] = attr
        cls._asylo_entry_points = names
        cls._asylo_entry_selectors = numbers

    def initialize(self, config: EnclaveConfig) -> None:
        """Called once, when the enclave is loaded. Raising fails the load and leaves no enclave behind."""

    def run(self, enclave_input: EnclaveInput) -> EnclaveOutput:
        """Called by `EnclaveClient.enter_and_run`. Raise an `AsyloError` to return a status other than OK."""
        raise UnimplementedError(f"{type(self).__name__} does not implement run()")

    def finalize(self, enclave_final: EnclaveFinal) -> None:
        """Called once, when the enclave is destroyed (unless the host skips it)."""

    def abort(self, reason: str) -> None:
        """Stop the enclave now: this call fails with ABORTED and every later call with UNAVAILABLE."""
        raise EnclaveAbort(reason)

    def seal(self, data: bytes, policy: SealPolicy = SealPolicy.MEASUREMENT, aad: bytes = b"") -> bytes:
        """Encrypt `data` so that only this enclave (MEASUREMENT: this exact build) or its signer's enclaves (SIGNER:
        same signer, product id and debug setting, this SVN or later: the key is bound to this SVN) on this
        platform can `unseal` it.

        The blob is safe to hand to the host (`self.host.store_sealed`). `aad` is authenticated, not stored: give the
        same bytes to `unseal`. Data over `asylo.trusted.sealing.MAX_SEAL_DATA_SIZE` is INVALID_ARGUMENT; an enclave
        without a platform gets FAILED_PRECONDITION. The format and the key derivation: `asylo.trusted.sealing`.
        """
        return sealing.seal(self.platform, data, policy, aad)

    def unseal(self, blob: bytes, aad: bytes = b"") -> bytes:
        """The data `seal` put in `blob`. PERMISSION_DENIED if the blob was sealed for another identity or by a
        higher SVN; DATA_LOSS if it does not authenticate (altered, another `aad`, another platform, not a blob)."""
        return sealing.unseal(self.platform, blob, aad)

    @classmethod
    def enclave_runtime(cls, host: ExitCallPort, platform: Platform | None = None) -> EnclaveRuntime:
        """The hook an enclave loader calls to start this application's runtime (see asylo.primitives)."""
        from asylo.trusted.runtime import TrustedRuntime  # noqa: PLC0415 - runtime imports this module

        return TrustedRuntime(cls, host, platform)


@overload
def entry_point(func: _F, /) -> _F: ...
@overload
def entry_point(name: str | None = None, /) -> Callable[[_F], _F]: ...
def entry_point(arg: Any = None, /) -> Any:
    """Declare a method as a named entry point: `@entry_point` or `@entry_point("name")`.

    The method takes bytes arguments and returns bytes (or None for no result); the host calls it with
    `client.call("name", *args)`.
    """

    def mark(func: _F, name: str) -> _F:
        if call_name_bytes(name) is None:
            raise ValueError(f"entry point names are 1..{MAX_CALL_NAME} bytes, got {name!r}")
        setattr(func, _ENTRY_POINT_ATTR, name)
        return func

    if callable(arg):
        return mark(arg, arg.__name__)
    return lambda func: mark(func, arg or func.__name__)


def entry_selector(selector: int) -> Callable[[_F], _F]:
    """Declare a method as the handler of user entry selector `selector` (256 and up).

    The method takes the call's extents (a list of bytes) and returns a sequence of bytes (or None): the raw
    primitive, for callers that use `EnclaveClient.enter(selector, extents)`.
    """
    check_user_selector(selector)

    def mark(func: _F) -> _F:
        setattr(func, _ENTRY_SELECTOR_ATTR, selector)
        return func

    return mark

