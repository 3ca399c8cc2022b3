"""What a host requires of a TPM-attested machine: the values of its PCRs, as its operator recorded them.

    PcrsAre({0: firmware, 7: secure_boot_policy})                     # the SHA-256 bank
    PcrsAre({0: pcr0}, hash_alg="sha384")

PCRs 0-7 hold the firmware's measurements of the boot (the PC Client Platform Firmware Profile assigns them: 0 the
firmware code, 2 option ROMs, 4 the boot loader, 7 the Secure Boot policy, ...). An operator reads them on the
machine they trust (`asylo platform show`, `tpm2_pcrread`) and hands them to hosts; a machine that booted something
else has other values, and a PCR the quote did not select is not evidence of anything, so it fails too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

from asylo.identity.launch import LaunchExpectation, LaunchIdentity
from asylo.identity.tpm.structures import MAX_PCRS, hash_algorithm_named
from asylo.identity.tpm.verifier import TPM_KIND, TpmLaunchIdentity
from asylo.status import InvalidArgumentError

#: PCRs that TPM 2.0's PC Client profile lets software reset at locality 0 (debug and application PCRs).
RESETTABLE_PCRS = frozenset({16, 23})


class PcrsAre(LaunchExpectation):
    """A TPM quote whose bank `hash_alg` (default "sha256") has these PCR values; PCRs not named may have any value,
    a PCR named but not quoted is a mismatch."""

    __slots__ = ("_alg_id", "hash_alg", "pcrs")

    kind: ClassVar[str] = TPM_KIND

    def __init__(self, pcrs: Mapping[int, bytes], *, hash_alg: str = "sha256") -> None:
        algorithm = hash_algorithm_named(hash_alg)
        if not isinstance(pcrs, Mapping) or not pcrs:
            # An empty one would accept every TPM-attested machine while claiming to check its boot state.
            raise InvalidArgumentError("PcrsAre needs at least one expected PCR")
        checked = {}
        for index, value in pcrs.items():
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_PCRS:
                raise InvalidArgumentError(f"a PCR index must be an integer in 0..{MAX_PCRS - 1}, got {index!r}")
            if not isinstance(value, bytes) or len(value) != algorithm.digest_size:
                got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
                raise InvalidArgumentError(f"expected PCR {index} must be {algorithm.digest_size} bytes "
                                           f"({algorithm.name}), got {got}")
            checked[index] = value
        self.pcrs: Mapping[int, bytes] = MappingProxyType(dict(sorted(checked.items())))
        self.hash_alg = algorithm.name
        self._alg_id = algorithm.alg_id

    @classmethod
    def from_hex(cls, pcrs: Mapping[int, str], *, hash_alg: str = "sha256") -> PcrsAre:
        """The same, with the values as hex text (as `asylo evidence verify` and `tpm2_pcrread` print them; a "0x"
        prefix is allowed)."""
        if not isinstance(pcrs, Mapping):
            raise InvalidArgumentError(f"pcrs must map PCR indices to hex values, got {type(pcrs).__name__}")
        values = {}
        for index, text in pcrs.items():
            if not isinstance(text, str):
                raise InvalidArgumentError(f"expected PCR {index} must be hex text, got {type(text).__name__}")
            digits = text.strip().removeprefix("0x").removeprefix("0X")
            try:
                values[index] = bytes.fromhex(digits)
            except ValueError:
                raise InvalidArgumentError(f"expected PCR {index} is not hex: {text!r}") from None
        return cls(values, hash_alg=hash_alg)

    def constrains_launch(self, kind: str) -> bool:
        # PCR 16 (debug) and PCR 23 (application) can be reset and extended by any TPM user at locality 0: an
        # expectation on them alone pins nothing of what the machine booted.
        return kind != self.kind or bool(set(self.pcrs) - RESETTABLE_PCRS)

    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        if not isinstance(launch, TpmLaunchIdentity):
            return f"expected a verified tpm launch, got a {launch.kind} launch"
        problems = []
        for index, expected in self.pcrs.items():
            actual = launch.pcr(index, self._alg_id)
            if actual is None:
                problems.append(f"PCR {index} was not quoted (the quote selects {launch.selection()}), expected "
                                f"{self.hash_alg} {expected.hex()}")
            elif actual != expected:
                problems.append(f"PCR {index} ({self.hash_alg}) is {actual.hex()}, expected {expected.hex()}")
        return "; ".join(problems) or None

    def describe(self) -> str:
        values = ", ".join(f"PCR {index} {value.hex()}" for index, value in self.pcrs.items())
        return f"tpm launch with {self.hash_alg} {values}"
