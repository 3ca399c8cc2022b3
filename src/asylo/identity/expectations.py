"""Identity expectations: what a host requires of the enclave it talks to, checked before anything is sent.

Match on the measurement (exactly this code), or on the signer with a product id and a minimum SVN (any build
that signer releases for that product, at or after a security fix). Both refuse debug enclaves unless asked,
since a debug enclave's memory is open to whoever runs it. `AllOf`, `AnyOf` and `Not` combine them into ACLs.

A failed check says exactly which fields did not match, with the expected and the actual values, because
"attestation failed" alone sends an operator hunting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from asylo.identity.identity import MEASUREMENT_SIZE, SIGNER_SIZE, EnclaveIdentity, check_u32
from asylo.status import AttestationError, InvalidArgumentError

if TYPE_CHECKING:
    from asylo.image import VerifiedImage



class IdentityExpectation(ABC):
    """A predicate on `EnclaveIdentity`; `check` raises `AttestationError` saying what did not match."""

    __slots__ = ()

    @abstractmethod
    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        """Why `identity` does not meet this expectation, or None if it does."""

    @abstractmethod
    def describe(self) -> str:
        """What this expectation requires, in one line."""

    def check(self, identity: EnclaveIdentity) -> None:
        reason = self.mismatch(identity)
        if reason is not None:
            raise AttestationError(f"enclave identity not accepted: {reason} (enclave: {identity.describe()})")

    def matches(self, identity: EnclaveIdentity) -> bool:
        return self.mismatch(identity) is None

    def constrains_launch(self, kind: str) -> bool:
        """Whether every identity on platform `kind` that this accepts must have a verified hardware launch that
        meets reference values (asylo.identity.launch). The host refuses hardware evidence unless its expectation
        does: a runtime's word about the image it loaded is worth only as much as the launch that runs it."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


def _debug_mismatch(identity: EnclaveIdentity, allow_debug: bool) -> list[str]:
    if identity.debug and not allow_debug:
        return ["it is a debug enclave and debug enclaves are not allowed (allow_debug=True accepts them)"]
    return []


def _check_id(name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise InvalidArgumentError(f"expected {name} must be {size} bytes")
    return value


class MeasurementIs(IdentityExpectation):
    """Exactly the enclave with this measurement (and not a debug build unless `allow_debug`)."""

    __slots__ = ("allow_debug", "measurement")

    def __init__(self, measurement: bytes, *, allow_debug: bool = False) -> None:
        self.measurement = _check_id("measurement", measurement, MEASUREMENT_SIZE)
        self.allow_debug = bool(allow_debug)

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        problems = []
        if identity.measurement != self.measurement:
            problems.append(f"measurement is {identity.measurement.hex()}, expected {self.measurement.hex()}")
        problems += _debug_mismatch(identity, self.allow_debug)
        return "; ".join(problems) or None

    def describe(self) -> str:
        return f"measurement {self.measurement.hex()}{', debug allowed' if self.allow_debug else ''}"


class SignerIs(IdentityExpectation):
    """Any enclave this signer signed for `product_id` with SVN >= `min_svn` (no debug build unless allowed)."""

    __slots__ = ("allow_debug", "min_svn", "product_id", "signer")

    def __init__(self, signer: bytes, product_id: int, min_svn: int = 0, *, allow_debug: bool = False) -> None:
        self.signer = _check_id("signer", signer, SIGNER_SIZE)
        self.product_id = check_u32(product_id, "expected product_id")
        self.min_svn = check_u32(min_svn, "expected min_svn")
        self.allow_debug = bool(allow_debug)

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        problems = []
        if identity.signer != self.signer:
            problems.append(f"signer is {identity.signer.hex()}, expected {self.signer.hex()}")
        if identity.product_id != self.product_id:
            problems.append(f"product_id is {identity.product_id}, expected {self.product_id}")
        if identity.svn < self.min_svn:
            problems.append(f"svn is {identity.svn}, below the minimum {self.min_svn}")
        problems += _debug_mismatch(identity, self.allow_debug)
        return "; ".join(problems) or None

    def describe(self) -> str:
        return (
            f"signer {self.signer.hex()} product_id {self.product_id} svn >= {self.min_svn}"
            f"{', debug allowed' if self.allow_debug else ''}"
        )


def _check_expectations(kind: str, expectations: tuple[object, ...]) -> tuple[IdentityExpectation, ...]:
    # An empty AllOf would accept everything and an empty AnyOf nothing; both are bugs, not policies.
    if not expectations:
        raise InvalidArgumentError(f"{kind} needs at least one expectation")
    for expectation in expectations:
        if not isinstance(expectation, IdentityExpectation):
            raise InvalidArgumentError(f"{kind} takes IdentityExpectations, got {type(expectation).__name__}")
    return expectations  # type: ignore[return-value]  # checked just above


class AllOf(IdentityExpectation):
    """Every one of the expectations; a mismatch lists each that failed."""

    __slots__ = ("expectations",)

    def __init__(self, *expectations: IdentityExpectation) -> None:
        self.expectations = _check_expectations("AllOf", expectations)

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        problems = [reason for e in self.expectations if (reason := e.mismatch(identity)) is not None]
        return "; ".join(problems) or None

    def describe(self) -> str:
        return "all of (" + "; ".join(e.describe() for e in self.expectations) + ")"

    def constrains_launch(self, kind: str) -> bool:
        return any(e.constrains_launch(kind) for e in self.expectations)


class AnyOf(IdentityExpectation):
    """At least one of the expectations; a mismatch says why each alternative failed."""

    __slots__ = ("expectations",)

    def __init__(self, *expectations: IdentityExpectation) -> None:
        self.expectations = _check_expectations("AnyOf", expectations)

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        problems = []
        for index, expectation in enumerate(self.expectations, 1):
            reason = expectation.mismatch(identity)
            if reason is None:
                return None
            problems.append(f"({index}) {reason}")
        return f"none of {len(self.expectations)} alternatives matched: " + " ".join(problems)

    def describe(self) -> str:
        return "any of (" + "; ".join(e.describe() for e in self.expectations) + ")"

    def constrains_launch(self, kind: str) -> bool:
        return all(e.constrains_launch(kind) for e in self.expectations)


class Not(IdentityExpectation):
    """Anything the expectation does not match: a deny-list entry.

    On its own it accepts every other enclave, debug builds included; use it inside `AllOf` with a positive
    expectation (`AllOf(SignerIs(...), Not(MeasurementIs(revoked)))`).
    """

    __slots__ = ("expectation",)

    def __init__(self, expectation: IdentityExpectation) -> None:
        self.expectation = _check_expectations("Not", (expectation,))[0]

    def mismatch(self, identity: EnclaveIdentity) -> str | None:
        if self.expectation.matches(identity):
            return f"it matches the excluded {self.expectation.describe()}"
        return None

    def describe(self) -> str:
        return f"not ({self.expectation.describe()})"


def expectation_for_image(image: VerifiedImage, *, allow_debug: bool) -> IdentityExpectation:
    """The host's default: exactly the image it asked for (its measurement); debug only if the host allows it."""
    return MeasurementIs(image.measurement, allow_debug=allow_debug)
