"""EnclaveIdentity: who an enclave is, as a platform attests it and as expectations and sealing policies see it.

An identity is the measurement (what code runs), the signer id and the product id and SVN the signer put in the
manifest, whether it is a debug enclave, and the kind of platform it runs on. Every field is validated on
construction, so code that holds an `EnclaveIdentity` never has to wonder about a 3-byte measurement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asylo.proto import identity_pb2
from asylo.status import AttestationError, InvalidArgumentError

if TYPE_CHECKING:  # only for the annotation: identity sits below image in the layers and never imports it
    from asylo.identity.launch import LaunchIdentity
    from asylo.image import VerifiedImage

MEASUREMENT_SIZE = 32
SIGNER_SIZE = 32
SIM_PLATFORM = "sim"
_U32_MAX = 2**32 - 1
# Platform kinds are short protocol names ("sim", later "tdx", "snp", "sgx", "nitro").
_PLATFORM_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def check_u32(value: object, what: str) -> int:
    """`value` if it is an integer in 0..2**32-1 (a product id, an SVN); InvalidArgumentError naming `what` if not.
    A bool is refused although Python counts it as an int: `svn=True` is a bug, not SVN 1."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U32_MAX:
        raise InvalidArgumentError(f"{what} must be an integer in 0..{_U32_MAX}, got {value!r}")
    return value


@dataclass(frozen=True)
class EnclaveIdentity:
    """An enclave's identity; constructing one with a bad field raises `InvalidArgumentError` naming the field."""

    measurement: bytes
    signer: bytes
    product_id: int
    svn: int
    debug: bool
    platform: str
    #: On a hardware platform, what the hardware attested about the launch that runs this enclave (verified by
    #: the host); None on the simulated platform and on the enclave's own side. It never travels in an
    #: `EnclaveIdentity` message: the host gets it from the hardware's evidence.
    launch: LaunchIdentity | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name, size in (("measurement", MEASUREMENT_SIZE), ("signer", SIGNER_SIZE)):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
                raise InvalidArgumentError(f"enclave identity {name} must be {size} bytes, got {got}")
        for name in ("product_id", "svn"):
            check_u32(getattr(self, name), f"enclave identity {name}")
        if not isinstance(self.debug, bool):
            raise InvalidArgumentError(f"enclave identity debug must be a bool, got {self.debug!r}")
        if not isinstance(self.platform, str) or not _PLATFORM_PATTERN.fullmatch(self.platform):
            raise InvalidArgumentError(
                f"enclave identity platform must be a platform kind like 'sim', got {self.platform!r}"
            )
        if self.launch is not None and self.launch.kind != self.platform:
            raise InvalidArgumentError(f"a {self.launch.kind} launch for an identity on platform {self.platform!r}")

    @property
    def simulated(self) -> bool:
        """True when no hardware protects this enclave (the `sim` platform)."""
        return self.platform == SIM_PLATFORM

    @classmethod
    def from_image(cls, image: VerifiedImage, platform: str = SIM_PLATFORM) -> EnclaveIdentity:
        """The identity of an enclave loaded from `image` on a platform of kind `platform`."""
        manifest = image.manifest
        return cls(
            measurement=image.measurement,
            signer=image.signer,
            product_id=manifest.product_id,
            svn=manifest.svn,
            debug=manifest.debug,
            platform=platform,
        )

    def to_proto(self) -> identity_pb2.EnclaveIdentity:
        return identity_pb2.EnclaveIdentity(
            measurement=self.measurement,
            signer=self.signer,
            product_id=self.product_id,
            svn=self.svn,
            debug=self.debug,
            platform=self.platform,
        )

    @classmethod
    def from_proto(cls, proto: identity_pb2.EnclaveIdentity) -> EnclaveIdentity:
        """The identity in a message from a peer; a malformed one raises `AttestationError` naming the field."""
        try:
            return cls(
                measurement=proto.measurement,
                signer=proto.signer,
                product_id=proto.product_id,
                svn=proto.svn,
                debug=proto.debug,
                platform=proto.platform,
            )
        except InvalidArgumentError as exc:
            raise AttestationError(f"malformed enclave identity: {exc.message}") from exc

    def describe(self) -> str:
        """One line for logs and error messages; a simulated platform is named as such, loudly."""
        where = (
            "SIMULATED platform 'sim' (no hardware protection)" if self.simulated else f"platform {self.platform!r}"
        )
        kind = "DEBUG enclave" if self.debug else "enclave"
        launch = f" ({self.launch.describe()})" if self.launch is not None else ""
        return (
            f"{kind} measurement {self.measurement.hex()} signer {self.signer.hex()} "
            f"product_id {self.product_id} svn {self.svn} on {where}{launch}"
        )
