"""What a verified Intel DCAP quote says: the TDX and SGX launch identities, Intel's TCB status names, the quote's
header and the size bounds on quotes and collateral.

A DCAP quote is a 48-byte header, a report body (an SGX enclave REPORTBODY or a TDX TDREPORT), and the signature
data: an ECDSA P-256 signature over header and body by an attestation key, the Quoting Enclave's report binding
that key, and the certification data (usually the PCK certificate chain) binding the QE to Intel's root. The
identities here hold only fields of the signed body plus the TCB status that dcap-qvl derived from the signed
collateral, so every fact in them is covered by a verified signature.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from asylo.identity.launch import LaunchIdentity, hex_fields
from asylo.status import AttestationError, InvalidArgumentError

#: A quote is a fixed header and body plus signature data whose only variable part is the certification data
#: (the PCK certificate chain, three certificates: about 4 KB; the genuine samples are 4600 and 5006 bytes). 64 KiB
#: is ten times any real quote and still small enough to hand to a parser from an untrusted peer.
MAX_QUOTE_SIZE = 64 * 1024
#: DCAP collateral (TCB info, QE identity, two CRLs and three issuer chains, as JSON) is 14-16 KB for the genuine
#: samples; the PCK CRLs grow with revocations. 1 MiB leaves room for decades of those and bounds what an
#: untrusted proxy can make the host parse.
MAX_COLLATERAL_SIZE = 1024 * 1024
#: Hex text of a quote, as some tools print it: two characters a byte, plus line breaks and spaces.
MAX_QUOTE_FILE_SIZE = 4 * MAX_QUOTE_SIZE

#: The quote header (Intel's sgx_quote_3_t / tdx quote v4 and v5 share it): version, attestation key type, TEE
#: type, QE and PCE SVNs, QE vendor id, user data.
QUOTE_HEADER_SIZE = 48
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
_TEE_NAMES = {TEE_TYPE_SGX: "SGX", TEE_TYPE_TDX: "TDX"}

#: TDX measurement registers (MRTD, RTMRs, MRCONFIGID, MROWNER, MROWNERCONFIG, MRSEAM) are SHA-384 sized.
TDX_MEASUREMENT_SIZE = 48
TDX_RTMR_COUNT = 4
#: SGX MRENCLAVE and MRSIGNER are SHA-256 sized.
SGX_MEASUREMENT_SIZE = 32
REPORT_DATA_SIZE = 64
_TD_ATTRIBUTES_SIZE = 8
_XFAM_SIZE = 8
_TEE_TCB_SVN_SIZE = 16
_SGX_ATTRIBUTES_SIZE = 16
_U16_MAX = 0xFFFF

#: TDATTRIBUTES bit 0 (TUD.DEBUG): the TD's memory and CPU state are open to the host VMM.
TD_ATTRIBUTES_DEBUG = 0x01
#: SGX ATTRIBUTES.FLAGS bit 1 (DEBUG): the enclave's memory is readable with EDBGRD.
SGX_ATTRIBUTES_DEBUG = 0x02

#: Intel's TCB status names (TCB info and QE identity JSON, and the Intel QVL), best first. dcap-qvl reports
#: these names; "Revoked" is a verification failure there and here, never a status a verified quote carries.
UP_TO_DATE = "UpToDate"
TCB_STATUSES = (
    UP_TO_DATE,
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
REVOKED = "Revoked"
#: Older dcap-qvl documentation, and some other verifiers, spell the statuses in upper snake case ("OK" for
#: UpToDate); they are mapped to Intel's names so that an expectation names a status one way only.
_STATUS_ALIASES = {
    "OK": UP_TO_DATE,
    "UP_TO_DATE": UP_TO_DATE,
    "SW_HARDENING_NEEDED": "SWHardeningNeeded",
    "CONFIGURATION_NEEDED": "ConfigurationNeeded",
    "CONFIGURATION_AND_SW_HARDENING_NEEDED": "ConfigurationAndSWHardeningNeeded",
    "OUT_OF_DATE": "OutOfDate",
    "OUT_OF_DATE_CONFIGURATION_NEEDED": "OutOfDateConfigurationNeeded",
    "REVOKED": REVOKED,
}

_HEX_DIGITS = frozenset(string.hexdigits.encode())
_WHITESPACE = b" \t\r\n\v\f"


def normalise_tcb_status(status: str) -> str:
    """Intel's name for a TCB status as a verifier reported it; AttestationError for one it does not know (a
    verifier newer than this code must not have its new status taken for an old one)."""
    if status in TCB_STATUSES:
        return status
    name = _STATUS_ALIASES.get(status)
    if name is None:
        raise AttestationError(f"the quote verifier reported an unknown TCB status {status!r} "
                               f"(known: {', '.join(TCB_STATUSES)})")
    return name


def quote_tee_type(quote: bytes) -> int:
    """The TEE type in a DCAP quote's header (0 for SGX, 0x81 for TDX); AttestationError if `quote` is too short
    to have a header. Read here rather than by a full parse so a quote for the wrong verifier gets a clear
    message however mangled the rest of it is."""
    if len(quote) < QUOTE_HEADER_SIZE:
        raise AttestationError(f"not a DCAP quote: {len(quote)} bytes, shorter than its {QUOTE_HEADER_SIZE}-byte "
                               f"header")
    return int.from_bytes(quote[4:8], "little")


def tee_name(tee_type: int) -> str:
    """"SGX", "TDX", or the type in hex for anything else."""
    return _TEE_NAMES.get(tee_type, f"unknown TEE type {tee_type:#010x}")


def decode_quote_file(data: bytes) -> bytes:
    """A quote as read from a file: raw binary, or hex text as some tools print it (whitespace ignored).

    A binary quote never looks like hex: it starts with its version (3, 4 or 5) as a little-endian 16-bit number,
    so its first byte is a control character, never a hex digit. Hex text with an odd number of digits is a
    truncated copy and is refused rather than guessed at.
    """
    if not isinstance(data, bytes | bytearray):
        raise InvalidArgumentError(f"a quote file's contents are bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_QUOTE_FILE_SIZE:
        raise AttestationError(f"quote file is {len(data)} bytes, more than any DCAP quote ({MAX_QUOTE_SIZE} bytes, "
                               f"or {MAX_QUOTE_FILE_SIZE} as hex text)")
    digits = data.translate(None, _WHITESPACE)
    if not digits or not all(byte in _HEX_DIGITS for byte in digits):
        return data
    if len(digits) % 2:
        raise AttestationError(f"quote file is hex text with an odd number of digits ({len(digits)}): truncated?")
    return bytes.fromhex(digits.decode("ascii"))


def _check_bytes(owner: str, name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidArgumentError(f"{owner} {name} must be {size} bytes, got {got}")


def _check_tcb(owner: str, tcb_status: object, advisory_ids: object) -> None:
    if not isinstance(tcb_status, str) or tcb_status not in TCB_STATUSES:
        raise InvalidArgumentError(f"{owner} tcb_status must be one of {', '.join(TCB_STATUSES)}, "
                                   f"got {tcb_status!r}")
    if not isinstance(advisory_ids, tuple) or not all(isinstance(a, str) for a in advisory_ids):
        raise InvalidArgumentError(f"{owner} advisory_ids must be a tuple of strings, got {advisory_ids!r}")


def tcb_text(tcb_status: str, advisory_ids: tuple[str, ...]) -> str:
    """"UpToDate", or "ConfigurationNeeded (advisories INTEL-SA-00289, INTEL-SA-00615)"."""
    if not advisory_ids:
        return tcb_status
    return f"{tcb_status} (advisories {', '.join(advisory_ids)})"


@dataclass(frozen=True)
class TdxLaunchIdentity(LaunchIdentity):
    """A TD as a verified TDX quote describes it.

    `mrtd` measures the TD's initial memory (the firmware, TDVF); `rtmrs` are the four runtime registers the
    firmware and the guest extend (RTMR[0] firmware configuration, RTMR[1] the OS loader and kernel, RTMR[2] the
    kernel command line and initrd, RTMR[3] the guest's own). `mrseam`/`mrsignerseam` identify the TDX module,
    `mrconfigid`, `mrowner` and `mrownerconfig` are set by whoever created the TD (the host), so they are not
    measurements of its code. `td_attributes`, `xfam` and `tee_tcb_svn` are raw little-endian fields. `debug` is
    TDATTRIBUTES bit 0 and must agree with `td_attributes`. `tcb_status` (one of TCB_STATUSES) and
    `advisory_ids` are what dcap-qvl derived from the signed collateral; `quote_version` is 4 or 5.
    """

    kind: ClassVar[str] = "tdx"

    mrtd: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    mrseam: bytes
    mrsignerseam: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    td_attributes: bytes
    xfam: bytes
    tee_tcb_svn: bytes
    report_data: bytes
    tcb_status: str
    advisory_ids: tuple[str, ...]
    debug: bool
    quote_version: int

    def __post_init__(self) -> None:
        owner = "TDX launch identity"
        for name in ("mrtd", "mrseam", "mrsignerseam", "mrconfigid", "mrowner", "mrownerconfig"):
            _check_bytes(owner, name, getattr(self, name), TDX_MEASUREMENT_SIZE)
        if not isinstance(self.rtmrs, tuple) or len(self.rtmrs) != TDX_RTMR_COUNT:
            raise InvalidArgumentError(f"{owner} rtmrs must be a tuple of {TDX_RTMR_COUNT} registers")
        for index, rtmr in enumerate(self.rtmrs):
            _check_bytes(owner, f"rtmr{index}", rtmr, TDX_MEASUREMENT_SIZE)
        _check_bytes(owner, "td_attributes", self.td_attributes, _TD_ATTRIBUTES_SIZE)
        _check_bytes(owner, "xfam", self.xfam, _XFAM_SIZE)
        _check_bytes(owner, "tee_tcb_svn", self.tee_tcb_svn, _TEE_TCB_SVN_SIZE)
        _check_bytes(owner, "report_data", self.report_data, REPORT_DATA_SIZE)
        _check_tcb(owner, self.tcb_status, self.advisory_ids)
        if not isinstance(self.debug, bool) or self.debug != bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG):
            raise InvalidArgumentError(f"{owner} debug must be a bool equal to TDATTRIBUTES bit 0 "
                                       f"(td_attributes {self.td_attributes.hex()}), got {self.debug!r}")
        if not isinstance(self.quote_version, int) or isinstance(self.quote_version, bool):
            raise InvalidArgumentError(f"{owner} quote_version must be an integer, got {self.quote_version!r}")

    def describe(self) -> str:
        debug = ", DEBUG TD" if self.debug else ""
        return f"tdx launch mrtd {self.mrtd.hex()} (TCB {tcb_text(self.tcb_status, self.advisory_ids)}{debug})"

    def to_json(self) -> dict[str, object]:
        values: Mapping[str, object] = {
            "kind": self.kind,
            "mrtd": self.mrtd,
            "rtmrs": self.rtmrs,
            "mrseam": self.mrseam,
            "mrsignerseam": self.mrsignerseam,
            "mrconfigid": self.mrconfigid,
            "mrowner": self.mrowner,
            "mrownerconfig": self.mrownerconfig,
            "td_attributes": self.td_attributes,
            "xfam": self.xfam,
            "tee_tcb_svn": self.tee_tcb_svn,
            "report_data": self.report_data,
            "tcb_status": self.tcb_status,
            "advisory_ids": self.advisory_ids,
            "debug": self.debug,
            "quote_version": self.quote_version,
        }
        return hex_fields(values)


@dataclass(frozen=True)
class SgxLaunchIdentity(LaunchIdentity):
    """An SGX enclave as a verified SGX DCAP quote describes it.

    `mrenclave` measures the enclave's code and initial data, `mrsigner` is the hash of the key that signed its
    SIGSTRUCT, `isv_prod_id` and `isv_svn` what that signer put in it. `attributes` is the raw 16-byte
    ATTRIBUTES (FLAGS then XFRM, little-endian); `debug` is its DEBUG bit (bit 1) and must agree with it.
    `tcb_status` and `advisory_ids` as for TDX.
    """

    kind: ClassVar[str] = "sgx"

    mrenclave: bytes
    mrsigner: bytes
    isv_prod_id: int
    isv_svn: int
    attributes: bytes
    report_data: bytes
    tcb_status: str
    advisory_ids: tuple[str, ...]
    debug: bool

    def __post_init__(self) -> None:
        owner = "SGX launch identity"
        _check_bytes(owner, "mrenclave", self.mrenclave, SGX_MEASUREMENT_SIZE)
        _check_bytes(owner, "mrsigner", self.mrsigner, SGX_MEASUREMENT_SIZE)
        for name in ("isv_prod_id", "isv_svn"):
            check_u16(getattr(self, name), f"{owner} {name}")
        _check_bytes(owner, "attributes", self.attributes, _SGX_ATTRIBUTES_SIZE)
        _check_bytes(owner, "report_data", self.report_data, REPORT_DATA_SIZE)
        _check_tcb(owner, self.tcb_status, self.advisory_ids)
        if not isinstance(self.debug, bool) or self.debug != bool(self.attributes[0] & SGX_ATTRIBUTES_DEBUG):
            raise InvalidArgumentError(f"{owner} debug must be a bool equal to ATTRIBUTES bit 1 "
                                       f"(attributes {self.attributes.hex()}), got {self.debug!r}")

    def describe(self) -> str:
        debug = ", DEBUG enclave" if self.debug else ""
        return (f"sgx launch mrenclave {self.mrenclave.hex()} mrsigner {self.mrsigner.hex()} "
                f"isv_prod_id {self.isv_prod_id} isv_svn {self.isv_svn} "
                f"(TCB {tcb_text(self.tcb_status, self.advisory_ids)}{debug})")

    def to_json(self) -> dict[str, object]:
        values: Mapping[str, object] = {
            "kind": self.kind,
            "mrenclave": self.mrenclave,
            "mrsigner": self.mrsigner,
            "isv_prod_id": self.isv_prod_id,
            "isv_svn": self.isv_svn,
            "attributes": self.attributes,
            "report_data": self.report_data,
            "tcb_status": self.tcb_status,
            "advisory_ids": self.advisory_ids,
            "debug": self.debug,
        }
        return hex_fields(values)


def check_u16(value: object, what: str) -> int:
    """`value` if it is an integer in 0..65535 (SGX ISVPRODID and ISVSVN are 16-bit); InvalidArgumentError naming
    `what` if not. A bool is refused: `isv_svn=True` is a bug, not SVN 1."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U16_MAX:
        raise InvalidArgumentError(f"{what} must be an integer in 0..{_U16_MAX}, got {value!r}")
    return value
