"""The AMD SEV-SNP attestation report: its layout, and parsing it from untrusted bytes.

The layout is AMD's "SEV Secure Nested Paging Firmware ABI Specification" (publication 56860), table
"ATTESTATION_REPORT Structure" (Table 22 in revision 1.55; the table keeps its name in later revisions), with the
TCB_VERSION structure of the same specification ("TCB_VERSION Structure") and the guest policy of its table
"Guest Policy Structure". Every field below is a named (offset, size) constant from that table; parsing reads no
byte without first checking that the field lies inside the buffer, and fails with an `AttestationError` naming
the field.

Parsing checks structure only (size, version, encodings of the fields it interprets). Whether the report is
AMD's is `asylo.identity.snp.verifier`'s business: nothing here is authenticated until the signature over
`signed_bytes` verifies with a VCEK that chains to a pinned ARK.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from asylo.status import AttestationError, InvalidArgumentError


@dataclass(frozen=True)
class ReportField:
    """One field of the ATTESTATION_REPORT table: its name in the specification, offset and size in bytes."""

    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


#: The report is exactly this long in every version this module knows (ABI spec, ATTESTATION_REPORT: 0h..49Fh).
REPORT_SIZE = 0x4A0

# Offsets and sizes from the ABI specification's ATTESTATION_REPORT Structure table.
VERSION = ReportField("VERSION", 0x000, 4)
GUEST_SVN = ReportField("GUEST_SVN", 0x004, 4)
POLICY = ReportField("POLICY", 0x008, 8)
FAMILY_ID = ReportField("FAMILY_ID", 0x010, 16)
IMAGE_ID = ReportField("IMAGE_ID", 0x020, 16)
VMPL = ReportField("VMPL", 0x030, 4)
SIGNATURE_ALGO = ReportField("SIGNATURE_ALGO", 0x034, 4)
CURRENT_TCB = ReportField("CURRENT_TCB", 0x038, 8)
PLATFORM_INFO = ReportField("PLATFORM_INFO", 0x040, 8)
#: AUTHOR_KEY_EN (bit 0), MASK_CHIP_KEY (bit 1), SIGNING_KEY (bits 4:2); the rest reserved.
KEY_INFO = ReportField("KEY_INFO", 0x048, 4)
REPORT_DATA = ReportField("REPORT_DATA", 0x050, 64)
MEASUREMENT = ReportField("MEASUREMENT", 0x090, 48)
HOST_DATA = ReportField("HOST_DATA", 0x0C0, 32)
ID_KEY_DIGEST = ReportField("ID_KEY_DIGEST", 0x0E0, 48)
AUTHOR_KEY_DIGEST = ReportField("AUTHOR_KEY_DIGEST", 0x110, 48)
REPORT_ID = ReportField("REPORT_ID", 0x140, 32)
REPORT_ID_MA = ReportField("REPORT_ID_MA", 0x160, 32)
REPORTED_TCB = ReportField("REPORTED_TCB", 0x180, 8)
#: Version 3 and later only (reserved, zero, in version 2): CPUID Fn0000_0001 combined family, model, stepping.
CPUID_FAM_ID = ReportField("CPUID_FAM_ID", 0x188, 1)
CPUID_MOD_ID = ReportField("CPUID_MOD_ID", 0x189, 1)
CPUID_STEP = ReportField("CPUID_STEP", 0x18A, 1)
#: All zero when the host set MASK_CHIP_ID; on Turin only the first 8 bytes are used (the rest zero).
CHIP_ID = ReportField("CHIP_ID", 0x1A0, 64)
COMMITTED_TCB = ReportField("COMMITTED_TCB", 0x1E0, 8)
CURRENT_BUILD = ReportField("CURRENT_BUILD", 0x1E8, 1)
CURRENT_MINOR = ReportField("CURRENT_MINOR", 0x1E9, 1)
CURRENT_MAJOR = ReportField("CURRENT_MAJOR", 0x1EA, 1)
COMMITTED_BUILD = ReportField("COMMITTED_BUILD", 0x1EC, 1)
COMMITTED_MINOR = ReportField("COMMITTED_MINOR", 0x1ED, 1)
COMMITTED_MAJOR = ReportField("COMMITTED_MAJOR", 0x1EE, 1)
LAUNCH_TCB = ReportField("LAUNCH_TCB", 0x1F0, 8)
#: Version 5 and later only (reserved before): the verified mitigation vectors at launch and now.
LAUNCH_MIT_VECTOR = ReportField("LAUNCH_MIT_VECTOR", 0x1F8, 8)
CURRENT_MIT_VECTOR = ReportField("CURRENT_MIT_VECTOR", 0x200, 8)
#: The signature over bytes 0h..29Fh; for ECDSA P-384 with SHA-384 (the ABI's "ECDSA P-384 with SHA-384 Signature"
#: table) R and S are 72-byte little-endian integers at its start, and the rest of it is reserved.
SIGNATURE = ReportField("SIGNATURE", 0x2A0, 512)
SIGNATURE_R = ReportField("SIGNATURE.R", 0x2A0, 72)
SIGNATURE_S = ReportField("SIGNATURE.S", 0x2E8, 72)
SIGNATURE_RESERVED = ReportField("SIGNATURE reserved", 0x330, 0x4A0 - 0x330)
#: What the signature covers: every byte before it.
SIGNED_SIZE = SIGNATURE.offset

#: Report versions this parser reads. Version 2 (ABI 1.51 to 1.54) is the first with this layout and the
#: SIGNING_KEY selection (versions 0 and 1 came from pre-release firmware and are refused, as go-sev-guest and
#: virtee/sev refuse them); version 3 (ABI 1.55/1.56) adds the CPUID fields; version 4 keeps version 3's layout
#: (go-sev-guest and virtee/sev parse it as version 3); version 5 (ABI 1.58) adds the mitigation vectors. A later
#: version may place fields where this parser would misread them, so it is refused until it is added here.
MIN_REPORT_VERSION = 2
MAX_REPORT_VERSION = 5
#: From this version on, CPUID_FAM_ID/MOD_ID/STEP are set.
CPUID_REPORT_VERSION = 3
#: From this version on, LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR are set.
MIT_VECTOR_REPORT_VERSION = 5

#: SIGNATURE_ALGO: the only algorithm the ABI defines, ECDSA P-384 with SHA-384.
SIGNATURE_ALGO_ECDSA_P384_SHA384 = 1

# KEY_INFO bits (ABI spec, ATTESTATION_REPORT, offset 48h).
KEY_INFO_AUTHOR_KEY_EN_BIT = 0
KEY_INFO_MASK_CHIP_KEY_BIT = 1
KEY_INFO_SIGNING_KEY_SHIFT = 2
KEY_INFO_SIGNING_KEY_MASK = 0b111
#: SIGNING_KEY values: 0 the VCEK, 1 the VLEK, 7 none (the report is unsigned); 2..6 are reserved.
SIGNING_KEYS = {0: "vcek", 1: "vlek", 7: "none"}

# Guest policy bits (ABI spec, "Guest Policy Structure").
POLICY_ABI_MINOR_SHIFT = 0
POLICY_ABI_MAJOR_SHIFT = 8
POLICY_SMT_BIT = 16
#: Reserved, must be one: the firmware refuses to launch a guest whose policy has it clear.
POLICY_RESERVED_ONE_BIT = 17
POLICY_MIGRATE_MA_BIT = 18
#: Set: the hypervisor may debug the guest (SNP_DBG_DECRYPT reads its memory), so nothing in it is confidential.
POLICY_DEBUG_BIT = 19
POLICY_SINGLE_SOCKET_BIT = 20

#: CPUID_FAM_ID values (extended family + family): Zen 3 and Zen 4 (Milan, Genoa) and Zen 5 (Turin). The family
#: decides the TCB_VERSION layout, so a report of another family is refused: its TCB would be misread.
CPUID_FAMILY_MILAN_GENOA = 0x19
CPUID_FAMILY_TURIN = 0x1A
#: Turin's CHIP_ID is 8 bytes, the rest of the field zero (AMD's KDS serves Turin VCEKs by an 8-byte hwID).
TURIN_CHIP_ID_SIZE = 8

_U64_MAX = 2**64 - 1
_SPL_MAX = 0xFF

# TCB_VERSION byte positions. Milan and Genoa: BOOT_LOADER, TEE, 4 reserved, SNP, MICROCODE. Turin: FMC,
# BOOT_LOADER, TEE, SNP, 3 reserved, MICROCODE.
_LEGACY_TCB_BYTES = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_LEGACY_TCB_RESERVED = (2, 3, 4, 5)
_TURIN_TCB_BYTES = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}
_TURIN_TCB_RESERVED = (4, 5, 6)

#: A report file (hex text as vendor tools write it: 2368 digits, perhaps wrapped and indented) is far smaller.
MAX_REPORT_FILE_SIZE = 64 * 1024
_HEX_DIGITS = frozenset(string.hexdigits.encode())
_ASCII_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")


def _check_spl(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _SPL_MAX:
        raise InvalidArgumentError(f"TCB {name} must be an integer in 0..{_SPL_MAX}, got {value!r}")
    return value


@dataclass(frozen=True)
class SnpTcb:
    """A TCB_VERSION: the security patch levels (SPLs) of the SNP firmware's components.

    `fmc` (the first-mutable-code SPL) exists on Turin only; it is None for Milan and Genoa, whose TCB_VERSION has
    a different layout (`from_u64(..., turin=...)` picks it). AMD raises an SPL with each security fix, so a TCB
    meets a floor when every component is at least the floor's (`at_least`); there is no total order.
    """

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def __post_init__(self) -> None:
        for name in ("bootloader", "tee", "snp", "microcode"):
            _check_spl(getattr(self, name), name)
        if self.fmc is not None:
            _check_spl(self.fmc, "fmc")

    @property
    def turin(self) -> bool:
        """Whether this is a Turin TCB (it has an FMC component)."""
        return self.fmc is not None

    @classmethod
    def from_u64(cls, value: int, *, turin: bool = False) -> SnpTcb:
        """The TCB in a little-endian TCB_VERSION `value`, in Turin's layout or Milan's and Genoa's.

        Reserved bytes must be zero (InvalidArgumentError otherwise; `parse_report` turns it into an
        AttestationError naming the field), since a component this code does not know would be ignored, not
        checked, and a floor on the others would then be met by a TCB it says nothing about.
        """
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64_MAX:
            raise InvalidArgumentError(f"a TCB_VERSION must be an integer in 0..2**64-1, got {value!r}")
        raw = value.to_bytes(8, "little")
        positions, reserved = (_TURIN_TCB_BYTES, _TURIN_TCB_RESERVED) if turin else (
            _LEGACY_TCB_BYTES, _LEGACY_TCB_RESERVED)
        if any(raw[index] for index in reserved):
            layout = "Turin" if turin else "Milan/Genoa"
            raise InvalidArgumentError(
                f"TCB_VERSION {value:#018x} has nonzero reserved bytes {[index for index in reserved if raw[index]]} "
                f"in the {layout} layout (a component this verifier does not know)"
            )
        return cls(**{name: raw[index] for name, index in positions.items()})

    def to_u64(self) -> int:
        """The little-endian TCB_VERSION value, in Turin's layout if this has an FMC component."""
        raw = bytearray(8)
        positions = _TURIN_TCB_BYTES if self.turin else _LEGACY_TCB_BYTES
        for name, index in positions.items():
            raw[index] = getattr(self, name)
        return int.from_bytes(raw, "little")

    def below(self, floor: SnpTcb) -> tuple[str, ...]:
        """The components of this TCB below `floor`'s, as "snp 5 < 8"; empty if this TCB meets the floor.

        A floor without an FMC component (a Milan/Genoa floor) says nothing about FMC; a floor with one is not
        met by a TCB without one (it is not a Turin TCB).
        """
        problems = [
            f"{name} {getattr(self, name)} < {getattr(floor, name)}"
            for name in ("bootloader", "tee", "snp", "microcode")
            if getattr(self, name) < getattr(floor, name)
        ]
        if floor.fmc is not None:
            if self.fmc is None:
                problems.append(f"fmc floor {floor.fmc} but this TCB has no FMC component (not a Turin TCB)")
            elif self.fmc < floor.fmc:
                problems.append(f"fmc {self.fmc} < {floor.fmc}")
        return tuple(problems)

    def at_least(self, other: SnpTcb) -> bool:
        """Whether every component of this TCB is at least `other`'s (see `below`)."""
        return not self.below(other)

    def describe(self) -> str:
        fmc = f"fmc={self.fmc} " if self.fmc is not None else ""
        return f"{fmc}bl={self.bootloader} tee={self.tee} snp={self.snp} ucode={self.microcode}"

    def to_json(self) -> dict[str, int]:
        values = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        if self.fmc is not None:
            values["fmc"] = self.fmc
        return values


def policy_abi(policy: int) -> tuple[int, int]:
    """The minimum firmware ABI (major, minor) the guest policy requires."""
    return (policy >> POLICY_ABI_MAJOR_SHIFT) & 0xFF, (policy >> POLICY_ABI_MINOR_SHIFT) & 0xFF


def policy_smt(policy: int) -> bool:
    """Whether the policy allows the guest to run with SMT enabled."""
    return bool(policy >> POLICY_SMT_BIT & 1)


def policy_migrate_ma(policy: int) -> bool:
    """Whether the policy allows a migration agent to be associated with the guest."""
    return bool(policy >> POLICY_MIGRATE_MA_BIT & 1)


def policy_debug(policy: int) -> bool:
    """Whether the policy allows the hypervisor to debug the guest (read and write its memory)."""
    return bool(policy >> POLICY_DEBUG_BIT & 1)


def policy_single_socket(policy: int) -> bool:
    """Whether the policy restricts the guest to a single socket."""
    return bool(policy >> POLICY_SINGLE_SOCKET_BIT & 1)


@dataclass(frozen=True)
class SnpReport:
    """A parsed ATTESTATION_REPORT: every field as the report states it, none of it verified yet.

    TCB fields are decoded in the layout of the CPU family the report names (`turin_tcb_layout`); `cpuid_*` are
    None before version 3 and the mitigation vectors None before version 5. `signature_r` and `signature_s` are the
    ECDSA signature over `signed_bytes` (bytes 0h..29Fh).
    """

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: SnpTcb
    platform_info: int
    key_info: int
    signing_key: str
    author_key_en: bool
    mask_chip_key: bool
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: SnpTcb
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb: SnpTcb
    current_version: tuple[int, int, int]
    committed_version: tuple[int, int, int]
    launch_tcb: SnpTcb
    launch_mit_vector: int | None
    current_mit_vector: int | None
    turin_tcb_layout: bool
    signature_r: int
    signature_s: int
    signed_bytes: bytes

    @property
    def debug(self) -> bool:
        """The policy's DEBUG bit (19): the hypervisor may read and write the guest's memory."""
        return policy_debug(self.policy)

    @property
    def migrate_ma(self) -> bool:
        return policy_migrate_ma(self.policy)

    @property
    def smt_allowed(self) -> bool:
        return policy_smt(self.policy)

    @property
    def abi(self) -> tuple[int, int]:
        """The minimum firmware ABI (major, minor) in the policy."""
        return policy_abi(self.policy)

    @property
    def chip_id_masked(self) -> bool:
        """Whether the report carries no chip id (the host set MASK_CHIP_ID, or the field is all zero)."""
        return self.mask_chip_key or not any(self.chip_id)


class _Reader:
    """Reads named fields of a report, checking each against the buffer's length before reading it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def raw(self, field: ReportField) -> bytes:
        if field.offset < 0 or field.size <= 0 or field.end > len(self.data):
            raise AttestationError(
                f"the report ({len(self.data)} bytes) is too short for {field.name} at "
                f"{field.offset:#x}..{field.end:#x}"
            )
        return self.data[field.offset:field.end]

    def uint(self, field: ReportField) -> int:
        return int.from_bytes(self.raw(field), "little")

    def tcb(self, field: ReportField, *, turin: bool) -> SnpTcb:
        value = self.uint(field)
        try:
            return SnpTcb.from_u64(value, turin=turin)
        except InvalidArgumentError as exc:
            raise AttestationError(f"{field.name}: {exc.message}") from None


def _turin_layout(reader: _Reader, version: int) -> tuple[bool, int | None, int | None, int | None]:
    """Whether the report's TCB fields are in Turin's layout, and its CPUID family, model and stepping.

    Version 3 and later name the CPU family. Version 2 does not; there a Turin report is known by its chip id,
    8 bytes followed by zeros (as virtee/sev tells them apart). A masked chip id says nothing, and is read in the
    Milan/Genoa layout; the verifier then refuses it if the root that verified the VCEK is Turin's.
    """
    if version >= CPUID_REPORT_VERSION:
        family = reader.uint(CPUID_FAM_ID)
        model = reader.uint(CPUID_MOD_ID)
        stepping = reader.uint(CPUID_STEP)
        if family not in (CPUID_FAMILY_MILAN_GENOA, CPUID_FAMILY_TURIN):
            raise AttestationError(
                f"CPUID_FAM_ID {family:#x} is not a family this verifier knows (Milan/Genoa "
                f"{CPUID_FAMILY_MILAN_GENOA:#x}, Turin {CPUID_FAMILY_TURIN:#x}), so its TCB layout is unknown"
            )
        return family == CPUID_FAMILY_TURIN, family, model, stepping
    chip_id = reader.raw(CHIP_ID)
    turin = any(chip_id[:TURIN_CHIP_ID_SIZE]) and not any(chip_id[TURIN_CHIP_ID_SIZE:])
    return turin, None, None, None


def parse_report(data: bytes) -> SnpReport:
    """Parse an ATTESTATION_REPORT: exactly `REPORT_SIZE` (1184) bytes, a version in 2..5.

    AttestationError naming what is wrong: the size, the version, an unknown CPU family (v3+), a reserved
    SIGNING_KEY value, nonzero reserved TCB bytes, or nonzero bytes in the signature's reserved tail (outside what
    the signature covers, so anyone could change them; refusing them keeps one report one byte string).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"an SNP report is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise AttestationError(f"an SNP attestation report is {REPORT_SIZE} bytes, got {len(data)}")
    reader = _Reader(data)
    version = reader.uint(VERSION)
    if not MIN_REPORT_VERSION <= version <= MAX_REPORT_VERSION:
        raise AttestationError(
            f"SNP report version {version} is not one this verifier reads ({MIN_REPORT_VERSION}..{MAX_REPORT_VERSION})"
        )
    key_info = reader.uint(KEY_INFO)
    signing_key_value = key_info >> KEY_INFO_SIGNING_KEY_SHIFT & KEY_INFO_SIGNING_KEY_MASK
    signing_key = SIGNING_KEYS.get(signing_key_value)
    if signing_key is None:
        raise AttestationError(f"KEY_INFO {key_info:#x} has the reserved SIGNING_KEY value {signing_key_value}")
    if any(reader.raw(SIGNATURE_RESERVED)):
        raise AttestationError("the reserved bytes after the signature's R and S are not zero (they are not signed)")
    turin, family, model, stepping = _turin_layout(reader, version)
    mit_vectors = version >= MIT_VECTOR_REPORT_VERSION
    return SnpReport(
        version=version,
        guest_svn=reader.uint(GUEST_SVN),
        policy=reader.uint(POLICY),
        family_id=reader.raw(FAMILY_ID),
        image_id=reader.raw(IMAGE_ID),
        vmpl=reader.uint(VMPL),
        signature_algo=reader.uint(SIGNATURE_ALGO),
        current_tcb=reader.tcb(CURRENT_TCB, turin=turin),
        platform_info=reader.uint(PLATFORM_INFO),
        key_info=key_info,
        signing_key=signing_key,
        author_key_en=bool(key_info >> KEY_INFO_AUTHOR_KEY_EN_BIT & 1),
        mask_chip_key=bool(key_info >> KEY_INFO_MASK_CHIP_KEY_BIT & 1),
        report_data=reader.raw(REPORT_DATA),
        measurement=reader.raw(MEASUREMENT),
        host_data=reader.raw(HOST_DATA),
        id_key_digest=reader.raw(ID_KEY_DIGEST),
        author_key_digest=reader.raw(AUTHOR_KEY_DIGEST),
        report_id=reader.raw(REPORT_ID),
        report_id_ma=reader.raw(REPORT_ID_MA),
        reported_tcb=reader.tcb(REPORTED_TCB, turin=turin),
        cpuid_family=family,
        cpuid_model=model,
        cpuid_stepping=stepping,
        chip_id=reader.raw(CHIP_ID),
        committed_tcb=reader.tcb(COMMITTED_TCB, turin=turin),
        current_version=(reader.uint(CURRENT_MAJOR), reader.uint(CURRENT_MINOR), reader.uint(CURRENT_BUILD)),
        committed_version=(reader.uint(COMMITTED_MAJOR), reader.uint(COMMITTED_MINOR), reader.uint(COMMITTED_BUILD)),
        launch_tcb=reader.tcb(LAUNCH_TCB, turin=turin),
        launch_mit_vector=reader.uint(LAUNCH_MIT_VECTOR) if mit_vectors else None,
        current_mit_vector=reader.uint(CURRENT_MIT_VECTOR) if mit_vectors else None,
        turin_tcb_layout=turin,
        signature_r=reader.uint(SIGNATURE_R),
        signature_s=reader.uint(SIGNATURE_S),
        signed_bytes=data[:SIGNED_SIZE],
    )


def decode_report_file(data: bytes) -> bytes:
    """The report bytes in a report file: raw binary (exactly 1184 bytes, as /dev/sev-guest and configfs-tsm give
    it) or hex text (as virtee's snpguest and others write it: upper or lower case, whitespace anywhere ignored).

    AttestationError if it is neither; the bytes are not parsed here (`parse_report` does that).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(f"a report file is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_REPORT_FILE_SIZE:
        raise AttestationError(f"a report file of {len(data)} bytes is over the limit of {MAX_REPORT_FILE_SIZE}")
    if len(data) == REPORT_SIZE:
        return data
    digits = _ASCII_WHITESPACE.sub(b"", data)
    if not digits or not _HEX_DIGITS.issuperset(digits):
        raise AttestationError(
            f"a report file is the raw report ({REPORT_SIZE} bytes) or its hex text; this one ({len(data)} bytes) "
            "is neither"
        )
    if len(digits) != 2 * REPORT_SIZE:
        raise AttestationError(
            f"the hex report has {len(digits)} digits, expected {2 * REPORT_SIZE} ({REPORT_SIZE} bytes)"
        )
    return bytes.fromhex(digits.decode("ascii"))


def _check_layout() -> None:
    """The field table is consistent with the specification's overall shape: every field inside the report, the
    signed fields before the signature, the signature's parts inside it. Run at import, so a typo fails loudly."""
    signed = [value for value in globals().values() if isinstance(value, ReportField) and value.offset < SIGNED_SIZE]
    for field in signed:
        if field.end > SIGNED_SIZE:
            raise AssertionError(f"{field.name} crosses into the signature")
    for field in (SIGNATURE_R, SIGNATURE_S, SIGNATURE_RESERVED):
        if not (SIGNATURE.offset <= field.offset and field.end <= SIGNATURE.end == REPORT_SIZE):
            raise AssertionError(f"{field.name} is outside SIGNATURE")
    if SIGNATURE_S.offset != SIGNATURE_R.end or SIGNATURE_RESERVED.offset != SIGNATURE_S.end:
        raise AssertionError("SIGNATURE's parts are not contiguous")


_check_layout()
