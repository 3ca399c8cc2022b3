"""What a host may require of a TDX or SGX launch: reference measurements, acceptable TCB statuses, no debug.

The verifier reports a quote's TCB status as Intel's collateral rates it; whether a platform that needs a
configuration change or carries open advisories is good enough is the host's decision, made here. UpToDate is
always accepted; every other status only if the expectation names it, and a refusal names the status and its
advisories so the operator can look them up. Revoked is never accepted (and never verifies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from asylo.identity.launch import LaunchExpectation, LaunchIdentity, expected_bytes
from asylo.identity.tdx.quote import (
    REVOKED,
    SGX_MEASUREMENT_SIZE,
    TCB_STATUSES,
    TDX_MEASUREMENT_SIZE,
    TDX_RTMR_COUNT,
    UP_TO_DATE,
    SgxLaunchIdentity,
    TdxLaunchIdentity,
    check_u16,
    tcb_text,
)
from asylo.status import InvalidArgumentError


def _accepted_statuses(owner: str, accept_tcb_status: Iterable[str]) -> frozenset[str]:
    if isinstance(accept_tcb_status, str | bytes):
        # A bare string is an iterable of characters, so accept_tcb_status="OutOfDate" would accept nothing.
        raise InvalidArgumentError(f"{owner} accept_tcb_status takes a list of status names, not one string "
                                   f"({accept_tcb_status!r})")
    try:
        names = list(accept_tcb_status)
    except TypeError:
        raise InvalidArgumentError(f"{owner} accept_tcb_status must be an iterable of status names, got "
                                   f"{type(accept_tcb_status).__name__}") from None
    valid = [status for status in TCB_STATUSES if status != REVOKED]
    for name in names:
        if name == REVOKED:
            raise InvalidArgumentError(f"{owner} cannot accept TCB status {REVOKED}: a revoked platform's keys are "
                                       f"not trusted, and such a quote does not verify")
        if not isinstance(name, str) or name not in valid:
            raise InvalidArgumentError(f"{owner} accept_tcb_status: unknown TCB status {name!r} "
                                       f"(valid: {', '.join(valid)})")
    return frozenset(names) | {UP_TO_DATE}


def _tcb_mismatch(tcb_status: str, advisory_ids: tuple[str, ...], accepted: frozenset[str]) -> list[str]:
    if tcb_status in accepted:
        return []
    others = sorted(accepted - {UP_TO_DATE}, key=TCB_STATUSES.index)
    also = f"; also accepted: {', '.join(others)}" if others else ""
    return [f"TCB status is {tcb_text(tcb_status, advisory_ids)}, which is not accepted "
            f"(UpToDate is{also}; accept_tcb_status=[{tcb_status!r}] accepts it)"]


def _tcb_description(accepted: frozenset[str]) -> str:
    return "TCB " + " or ".join(sorted(accepted, key=TCB_STATUSES.index))


def _check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{owner} {name} must be a bool, got {value!r}")
    return value


class TdxLaunch(LaunchExpectation):
    """A TD with this MRTD and these RTMRs (each register given is compared; those not given are not), optionally
    this MRCONFIGID and MROWNER, on a platform whose TCB status is UpToDate or one of `accept_tcb_status`, and
    not a debug TD unless `allow_debug` (a debug TD's memory and registers are open to the host).

    MRTD measures the firmware that measures everything after it into the RTMRs, so only an expectation with an
    MRTD pins the TD's code: other firmware could extend any RTMR values it likes. One with RTMRs only is
    accepted as a further condition (in `AllOf` with one that names the MRTD), but on its own it does not
    constrain the launch, and the host refuses hardware evidence on its strength alone. MRCONFIGID and MROWNER are
    chosen by whoever creates the TD, so they can only add to reference values, never stand for them.
    """

    __slots__ = ("accepted_tcb_statuses", "allow_debug", "mrconfigid", "mrowner", "mrtd", "rtmrs")

    kind = "tdx"

    def __init__(self, mrtd: bytes | None = None, *, rtmrs: Mapping[int, bytes] | None = None,
                 mrconfigid: bytes | None = None, mrowner: bytes | None = None,
                 accept_tcb_status: Iterable[str] = (), allow_debug: bool = False) -> None:
        owner = "TdxLaunch"
        self.mrtd = expected_bytes(mrtd, f"{owner} mrtd", TDX_MEASUREMENT_SIZE)
        self.rtmrs = self._check_rtmrs(rtmrs)
        self.mrconfigid = expected_bytes(mrconfigid, f"{owner} mrconfigid", TDX_MEASUREMENT_SIZE)
        self.mrowner = expected_bytes(mrowner, f"{owner} mrowner", TDX_MEASUREMENT_SIZE)
        if self.mrtd is None and not self.rtmrs:
            raise InvalidArgumentError("TdxLaunch needs reference values: an mrtd, or rtmrs (mrconfigid and mrowner "
                                       "are chosen by the host that creates the TD and measure no code)")
        self.accepted_tcb_statuses = _accepted_statuses(owner, accept_tcb_status)
        self.allow_debug = _check_bool(owner, "allow_debug", allow_debug)

    @staticmethod
    def _check_rtmrs(rtmrs: Mapping[int, bytes] | None) -> dict[int, bytes]:
        if rtmrs is None:
            return {}
        if not isinstance(rtmrs, Mapping):
            raise InvalidArgumentError(f"TdxLaunch rtmrs must map register numbers 0..{TDX_RTMR_COUNT - 1} to "
                                       f"values, got {type(rtmrs).__name__}")
        checked: dict[int, bytes] = {}
        for index in sorted(rtmrs, key=repr):
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < TDX_RTMR_COUNT:
                raise InvalidArgumentError(f"TdxLaunch rtmrs: register {index!r} is not one of "
                                           f"0..{TDX_RTMR_COUNT - 1}")
            value = expected_bytes(rtmrs[index], f"TdxLaunch rtmr{index}", TDX_MEASUREMENT_SIZE)
            if value is None:
                raise InvalidArgumentError(f"TdxLaunch rtmrs: register {index} has no value")
            checked[index] = value
        return dict(sorted(checked.items()))

    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        if not isinstance(launch, TdxLaunchIdentity):
            return f"expected a TDX launch identity, got {type(launch).__name__}"
        problems = []
        if self.mrtd is not None and launch.mrtd != self.mrtd:
            problems.append(f"mrtd is {launch.mrtd.hex()}, expected {self.mrtd.hex()}")
        for index, expected in self.rtmrs.items():
            if launch.rtmrs[index] != expected:
                problems.append(f"rtmr{index} is {launch.rtmrs[index].hex()}, expected {expected.hex()}")
        if self.mrconfigid is not None and launch.mrconfigid != self.mrconfigid:
            problems.append(f"mrconfigid is {launch.mrconfigid.hex()}, expected {self.mrconfigid.hex()}")
        if self.mrowner is not None and launch.mrowner != self.mrowner:
            problems.append(f"mrowner is {launch.mrowner.hex()}, expected {self.mrowner.hex()}")
        problems += _tcb_mismatch(launch.tcb_status, launch.advisory_ids, self.accepted_tcb_statuses)
        if launch.debug and not self.allow_debug:
            problems.append("it is a debug TD (TDATTRIBUTES.DEBUG) and debug TDs are not allowed "
                            "(allow_debug=True accepts them)")
        return "; ".join(problems) or None

    def constrains_launch(self, kind: str) -> bool:
        # MRTD measures only the TD's firmware, which records what it loads but loads whatever it is given: the
        # kernel and initrd (RTMR1) and the command line (RTMR2) must be pinned too, or any TD booted on that
        # firmware (on a cloud: any tenant's) could run a runtime that claims any image. And without an MRTD any
        # firmware may run, which writes the RTMRs as it likes.
        return kind != self.kind or (self.mrtd is not None and {1, 2} <= set(self.rtmrs))

    def describe(self) -> str:
        parts = ["tdx launch"]
        if self.mrtd is not None:
            parts.append(f"mrtd {self.mrtd.hex()}")
        parts += [f"rtmr{index} {value.hex()}" for index, value in self.rtmrs.items()]
        if self.mrconfigid is not None:
            parts.append(f"mrconfigid {self.mrconfigid.hex()}")
        if self.mrowner is not None:
            parts.append(f"mrowner {self.mrowner.hex()}")
        parts.append(_tcb_description(self.accepted_tcb_statuses))
        text = " ".join(parts)
        return text + (", debug allowed" if self.allow_debug else "")


class SgxEnclave(LaunchExpectation):
    """An SGX enclave with this MRENCLAVE, or signed by this MRSIGNER (optionally for `isv_prod_id`, at
    ISVSVN >= `min_isv_svn`), or both; on a platform whose TCB status is UpToDate or one of `accept_tcb_status`;
    not a debug enclave unless `allow_debug`. At least one of `mrenclave` and `mrsigner` is required, since
    without either any enclave would do.
    """

    __slots__ = ("accepted_tcb_statuses", "allow_debug", "isv_prod_id", "min_isv_svn", "mrenclave", "mrsigner")

    kind = "sgx"

    def __init__(self, mrenclave: bytes | None = None, *, mrsigner: bytes | None = None,
                 isv_prod_id: int | None = None, min_isv_svn: int = 0,
                 accept_tcb_status: Iterable[str] = (), allow_debug: bool = False) -> None:
        owner = "SgxEnclave"
        self.mrenclave = expected_bytes(mrenclave, f"{owner} mrenclave", SGX_MEASUREMENT_SIZE)
        self.mrsigner = expected_bytes(mrsigner, f"{owner} mrsigner", SGX_MEASUREMENT_SIZE)
        if self.mrenclave is None and self.mrsigner is None:
            raise InvalidArgumentError("SgxEnclave needs an mrenclave or an mrsigner (or both)")
        self.isv_prod_id = None if isv_prod_id is None else check_u16(isv_prod_id, "SgxEnclave isv_prod_id")
        self.min_isv_svn = check_u16(min_isv_svn, "SgxEnclave min_isv_svn")
        self.accepted_tcb_statuses = _accepted_statuses(owner, accept_tcb_status)
        self.allow_debug = _check_bool(owner, "allow_debug", allow_debug)

    def launch_mismatch(self, launch: LaunchIdentity) -> str | None:
        if not isinstance(launch, SgxLaunchIdentity):
            return f"expected an SGX launch identity, got {type(launch).__name__}"
        problems = []
        if self.mrenclave is not None and launch.mrenclave != self.mrenclave:
            problems.append(f"mrenclave is {launch.mrenclave.hex()}, expected {self.mrenclave.hex()}")
        if self.mrsigner is not None and launch.mrsigner != self.mrsigner:
            problems.append(f"mrsigner is {launch.mrsigner.hex()}, expected {self.mrsigner.hex()}")
        if self.isv_prod_id is not None and launch.isv_prod_id != self.isv_prod_id:
            problems.append(f"isv_prod_id is {launch.isv_prod_id}, expected {self.isv_prod_id}")
        if launch.isv_svn < self.min_isv_svn:
            problems.append(f"isv_svn is {launch.isv_svn}, below the minimum {self.min_isv_svn}")
        problems += _tcb_mismatch(launch.tcb_status, launch.advisory_ids, self.accepted_tcb_statuses)
        if launch.debug and not self.allow_debug:
            problems.append("it is a debug enclave (ATTRIBUTES.DEBUG) and debug enclaves are not allowed "
                            "(allow_debug=True accepts them)")
        return "; ".join(problems) or None

    def describe(self) -> str:
        parts = ["sgx enclave"]
        if self.mrenclave is not None:
            parts.append(f"mrenclave {self.mrenclave.hex()}")
        if self.mrsigner is not None:
            parts.append(f"mrsigner {self.mrsigner.hex()}")
        if self.isv_prod_id is not None:
            parts.append(f"isv_prod_id {self.isv_prod_id}")
        if self.min_isv_svn:
            parts.append(f"isv_svn >= {self.min_isv_svn}")
        parts.append(_tcb_description(self.accepted_tcb_statuses))
        text = " ".join(parts)
        return text + (", debug allowed" if self.allow_debug else "")
