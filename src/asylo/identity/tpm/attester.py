"""The TPM 2.0 attester: a TPM2_Quote by the machine's attestation key (AK) over a PCR selection, in the proxy.

What the quote binds. TPM2_Quote signs a TPMS_ATTEST whose `extraData` is the caller's qualifying data. That is a
TPM2B_DATA, which a TPM caps at the size of the largest digest it implements (TPM 2.0 Part 2, TPM2B_DATA: "size of
TPMT_HA"): 32 bytes on a SHA-256-only TPM, the common case. The runtime binding is 64 bytes, so the qualifying data is
SHA-256(report_data) on every TPM, never the 64 bytes themselves: one rule that works on all of them, which the host
recomputes (the host-side verifier in `asylo.identity.tpm.verifier` holds the same contract).

Which AK, and why it survives restarts. The AK is a restricted signing key (fixedTPM, fixedParent,
sensitiveDataOrigin, userWithAuth, restricted, sign; RSA-2048 with RSASSA-SHA256 by default, or ECC NIST P-256 with
ECDSA-SHA256), created as a child of the endorsement key (EK) and made persistent with TPM2_EvictControl at a handle
(0x81010002 by default). A persistent object needs no key files to keep in step with the TPM: every later proxy,
`asylo platform enroll` and a reboot all find the same key by its handle, and only a TPM2_Clear (which also means
enrolling again) removes it. The parent is the EK rather than a storage root key because the EK is the one primary
every TPM can recreate from the TCG's standard template with no owner-chosen parameters (tpm2_createak and Keylime do
the same); once the AK is persistent, its parent is not needed again. If the handle is empty the attester creates
the AK there (like the sim platform's key, made on first use); if it holds a key that is not an AK of the configured
kind, the attester refuses to touch it. Owner and endorsement authorizations are assumed empty, as TPMs ship.

PCRs, and the race with extends. The attester quotes first, then reads the selected PCRs with TPM2_PCR_Read and
recomputes the quote's PCR digest from the values read: if a PCR was extended in between, the digest differs and the
attester quotes again (at most `MAX_QUOTE_ATTEMPTS` times). The values sent are therefore exactly those the TPM signed
a digest of, which the host checks the same way. (Reading first and comparing TPM2_PCR_Read's update counter would
not catch an extend between the last read and the quote; the digest check catches every one.)

Connections. Each operation opens its own ESAPI context on the TCTI and closes it afterwards: without a resource
manager (swtpm's socket, /dev/tpm0) the TPM serves one client at a time, so a proxy that held its connection would lock
out `asylo platform enroll` and every other proxy; with /dev/tpmrm0 it costs an open(). Transient objects and
sessions are flushed before the context closes, for the same reason.

tpm2-pytss is an optional dependency (`pip install 'pyasylo[tpm]'`; it builds against the TSS's libtss2-dev). It is
imported by `load_tss` inside the functions that talk to a TPM, so `asylo.identity.tpm` imports without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from asylo.identity.launch import Endorsements
from asylo.identity.platforms import REPORT_DATA_SIZE
from asylo.proto import identity_pb2
from asylo.status import AbortedError, AsyloError, AttestationError, FailedPreconditionError, InvalidArgumentError

KIND = "tpm"
#: The kernel's resource manager: many clients at once, transient objects flushed when a client closes.
DEFAULT_TCTI = "device:/dev/tpmrm0"
#: The persistent handle tpm2-tools' and Keylime's guides use for an AK, beside the EK's 0x81010001.
DEFAULT_AK_HANDLE = 0x81010002
#: The SHA-256 bank, PCRs 0-7: what the firmware measures before the OS (PC Client Platform Firmware Profile §3.3.4).
DEFAULT_PCRS = "sha256:0-7"
AK_ALGORITHMS = ("rsa", "ecc")
#: SHA-256(report_data): fits the TPM2B_DATA of any TPM that implements SHA-256 (see the module doc).
QUALIFYING_DATA_SIZE = 32

#: TPM 2.0 Part 3, TPM2_EvictControl: with owner authorization the persistent handle must be in this range.
OWNER_PERSISTENT_FIRST = 0x81000000
OWNER_PERSISTENT_LAST = 0x817FFFFF
#: PC Client Platform TPM Profile: 24 PCRs per bank (0-23), selected by a 3-byte bitmap.
PCR_COUNT = 24
PCR_SELECT_SIZE = 3
#: TPM 2.0 Part 2: TPM_ALG_ID of each hash bank and its digest size (each PCR value is exactly that long).
PCR_BANKS: dict[str, tuple[int, int]] = {"sha1": (0x0004, 20), "sha256": (0x000B, 32), "sha384": (0x000C, 48),
                                         "sha512": (0x000D, 64)}
_BANK_NAMES = {alg: name for name, (alg, _) in PCR_BANKS.items()}

#: Bounds on what the TPM hands back. A quote's TPMS_ATTEST is about 150 bytes with a SHA-256 name, 32 bytes of
#: extra data and one bank (magic 4, type 2, name 2+66 at most, extra data 2+64, clock 17, firmware 8, selection
#: 4+4x6, digest 2+64 at most: under 300); the TSS's own buffer is sizeof(TPMS_ATTEST).
MAX_ATTEST_SIZE = 1024
#: TPMT_SIGNATURE: an RSA-4096 RSASSA signature is 2+2+2+512 bytes; ECDSA P-521 2+2+2+66+2+66.
MAX_SIGNATURE_SIZE = 1024
#: TPMT_PUBLIC of an AK: RSA-4096 with a SHA-512 policy is under 600 bytes.
MAX_AK_PUBLIC_SIZE = 1024
#: An EK certificate in NV: about 1-1.5 KiB of DER; TPMs' MAX_NV_INDEX_SIZE is commonly 2048 bytes.
MAX_EK_CERTIFICATE_SIZE = 4096
#: The EK template and nonce NV indices (TCG EK Credential Profile §2.2.1.5): a TPMT_PUBLIC, or at most 256 bytes.
MAX_EK_TEMPLATE_SIZE = 1024
#: One TPM2_NV_Read reads at most TPM_PT_NV_BUFFER_MAX bytes; a value the TPM reports above this is not believed.
MAX_NV_READ_CHUNK = 2048
#: What an NV read falls back to when the TPM does not report TPM_PT_NV_BUFFER_MAX (tpm2-pytss' default too).
DEFAULT_NV_READ_CHUNK = 512
#: Quote, read, compare: a PCR extended during each of this many tries means something is extending in a loop.
MAX_QUOTE_ATTEMPTS = 3

_TPM_GENERATED_VALUE = 0xFF544347  # TPMS_ATTEST.magic: "\xffTCG" (Part 2, TPM_GENERATED)
_TPM_ST_ATTEST_QUOTE = 0x8018      # TPMS_ATTEST.type of a quote (Part 2, TPM_ST)
_TSS_LOG_ENV = "TSS2_LOG"
_PCR_TEXT = re.compile(r"(?P<bank>[a-z0-9]+):(?P<pcrs>[0-9,\-]+)")


def load_tss() -> ModuleType:
    """tpm2-pytss, imported on first use; FailedPreconditionError saying how to install it where it is missing.

    The TSS libraries log every TPM error code to stderr, including the ones this module expects and handles (an
    empty AK handle, an absent EK template index); `TSS2_LOG=all+none` silences them unless the operator set the
    variable. It is read when the libraries first log, so it is set before the import.
    """
    os.environ.setdefault(_TSS_LOG_ENV, "all+none")
    try:
        return importlib.import_module("tpm2_pytss")
    except (ImportError, OSError) as exc:  # OSError: the extension is there but libtss2's shared libraries are not
        raise FailedPreconditionError(
            f"platform tpm needs the TSS's Python bindings: pip install 'pyasylo[tpm]' (tpm2-pytss, built against "
            f"the TSS: apt-get install libtss2-dev on Debian) ({type(exc).__name__}: {exc})"
        ) from None


def ak_fingerprint(ak_public: bytes) -> str:
    """The AK's platform fingerprint: lowercase hex SHA-256 of its TPMT_PUBLIC as marshalled (what enrollment
    prints and hosts pass to --trust-platform)."""
    return hashlib.sha256(ak_public).hexdigest()


def check_ak_handle(handle: int) -> int:
    """`handle`, if the owner may make an object persistent there (see OWNER_PERSISTENT_FIRST)."""
    if not isinstance(handle, int) or not OWNER_PERSISTENT_FIRST <= handle <= OWNER_PERSISTENT_LAST:
        raise InvalidArgumentError(
            f"AK handle {handle!r} is not a persistent handle the owner can use "
            f"(0x{OWNER_PERSISTENT_FIRST:08x}..0x{OWNER_PERSISTENT_LAST:08x})")
    return handle


@dataclass(frozen=True)
class PcrSelection:
    """Which PCRs a quote covers: banks in order, each with its PCR indices ascending (the order the TPM hashes
    them in for the quote's PCR digest, and the order of `TpmQuote.pcrs`)."""

    banks: tuple[tuple[str, tuple[int, ...]], ...]

    def __post_init__(self) -> None:
        if not self.banks:
            raise InvalidArgumentError("a PCR selection selects no PCRs")
        seen: set[str] = set()
        for bank, indices in self.banks:
            if bank not in PCR_BANKS:
                raise InvalidArgumentError(f"unknown PCR bank {bank!r} (one of: {', '.join(PCR_BANKS)})")
            if bank in seen:
                raise InvalidArgumentError(f"PCR bank {bank} is selected twice")
            seen.add(bank)
            if not indices or list(indices) != sorted(set(indices)):
                raise InvalidArgumentError(f"the {bank} PCRs must be distinct and ascending: {indices!r}")
            if indices[0] < 0 or indices[-1] >= PCR_COUNT:
                raise InvalidArgumentError(f"PCR indices run from 0 to {PCR_COUNT - 1}: {indices!r}")

    @classmethod
    def parse(cls, text: str) -> PcrSelection:
        """From tpm2-tools' notation: "sha256:0-7", "sha256:0,2,4,7+sha1:0-3"."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"a PCR selection is text like {DEFAULT_PCRS!r}")
        banks: list[tuple[str, tuple[int, ...]]] = []
        for part in text.strip().lower().split("+"):
            match = _PCR_TEXT.fullmatch(part.strip())
            if match is None:
                raise InvalidArgumentError(f"not a PCR selection: {text!r} (expected like {DEFAULT_PCRS!r})")
            indices: set[int] = set()
            for item in match["pcrs"].split(","):
                low, dash, high = item.partition("-")
                if not low.isdigit() or (dash and not high.isdigit()) or len(low) > 2 or len(high) > 2:
                    raise InvalidArgumentError(f"not a PCR index or range: {item!r} in {text!r}")
                first, last = int(low), int(high) if dash else int(low)
                if first > last:
                    raise InvalidArgumentError(f"an empty PCR range: {item!r} in {text!r}")
                indices.update(range(first, last + 1))
            banks.append((match["bank"], tuple(sorted(indices))))
        return cls(tuple(banks))

    @property
    def count(self) -> int:
        return sum(len(indices) for _, indices in self.banks)

    def pairs(self) -> list[tuple[int, int]]:
        """(TPM_ALG_ID, index) of every selected PCR, in digest order."""
        return [(PCR_BANKS[bank][0], index) for bank, indices in self.banks for index in indices]

    def __str__(self) -> str:
        parts = []
        for bank, indices in self.banks:
            runs: list[str] = []
            start = previous = indices[0]
            for index in (*indices[1:], None):
                if index is not None and index == previous + 1:
                    previous = index
                    continue
                runs.append(str(start) if start == previous else f"{start}-{previous}")
                if index is not None:
                    start = previous = index
            parts.append(f"{bank}:{','.join(runs)}")
        return "+".join(parts)


def pcr_selection_to_tpml(tss: ModuleType, pairs: Sequence[tuple[int, int]]) -> Any:
    """A TPML_PCR_SELECTION of (TPM_ALG_ID, index) pairs, banks in the order they first appear."""
    bitmaps: dict[int, bytearray] = {}
    for alg, index in pairs:
        bitmaps.setdefault(alg, bytearray(PCR_SELECT_SIZE))[index // 8] |= 1 << (index % 8)
    return tss.TPML_PCR_SELECTION([
        tss.TPMS_PCR_SELECTION(hash=alg, sizeofSelect=PCR_SELECT_SIZE, pcrSelect=bytes(bitmap))
        for alg, bitmap in bitmaps.items()
    ])


def tpml_to_pairs(tpml: Any) -> list[tuple[int, int]]:
    """The (TPM_ALG_ID, index) pairs a TPML_PCR_SELECTION from the TPM selects, in digest order."""
    pairs: list[tuple[int, int]] = []
    for selection in tpml:
        size = int(selection.sizeofSelect)
        if size > PCR_SELECT_SIZE + 1:  # the TSS's TPMS_PCR_SELECTION holds at most 4 bytes (TPM2_PCR_SELECT_MAX)
            raise AttestationError(f"the TPM returned a PCR bitmap of {size} bytes")
        bitmap = [int(selection.pcrSelect[i]) for i in range(size)]
        pairs += [(int(selection.hash), byte * 8 + bit) for byte in range(size) for bit in range(8)
                  if bitmap[byte] >> bit & 1]
    return pairs


# -- the TPM connection and its objects (shared with asylo.identity.tpm.enrollment) ---------------------------------

def authorization_problem(exc: Exception) -> str | None:
    """What to tell the operator when a TSS exception is the TPM refusing an authorization (a hierarchy with a
    password, dictionary-attack lockout), or None for any other failure."""
    error = getattr(exc, "error", None)
    if error in (0x0A2, 0x08E):  # TPM_RC_BAD_AUTH, TPM_RC_AUTH_FAIL (Part 2, TPM_RC; the session number stripped)
        return ("this needs the owner and endorsement hierarchies' authorizations to be empty, as TPMs ship; a "
                "hierarchy with a password is not supported in this release")
    if error == 0x921:  # TPM_RC_LOCKOUT
        return "the TPM is in dictionary-attack lockout: wait, or reset it with the lockout authorization"
    return None


def tpm_failure(exc: Exception, doing: str) -> AsyloError:
    """The error for a TSS exception raised while `doing` something: the machine's TPM (its authorization, its
    lockout, its reachability) is a precondition the operator can fix, so FailedPreconditionError naming it."""
    text = str(exc) or type(exc).__name__
    problem = authorization_problem(exc)
    return FailedPreconditionError(f"TPM: {doing} failed: {text}{f' ({problem})' if problem else ''}")


@contextlib.contextmanager
def open_tpm(tcti: str) -> Iterator[Any]:
    """An ESAPI context on `tcti` for one operation, closed afterwards (see the module doc, "Connections")."""
    tss = load_tss()
    try:
        esapi = tss.ESAPI(tcti)
    except (tss.TSS2_Exception, RuntimeError, ValueError) as exc:
        raise FailedPreconditionError(
            f"cannot open the TPM through TCTI {tcti!r}: {exc} (a TPM 2.0 device, /dev/tpmrm0 for the kernel's "
            f"resource manager, or swtpm:host=HOST,port=PORT for a software TPM)") from None
    try:
        yield esapi
    finally:
        esapi.close()


def _is_tpm_error(tss: ModuleType, exc: BaseException, rc: int) -> bool:
    return isinstance(exc, tss.TSS2_Exception) and int(exc.error) == rc


def read_persistent(esapi: Any, handle: int) -> Any | None:
    """The ESYS_TR of the persistent object at `handle`, or None if there is none (the caller tr_closes it)."""
    tss = load_tss()
    try:
        return esapi.tr_from_tpmpublic(handle)
    except tss.TSS2_Exception as exc:
        if _is_tpm_error(tss, exc, int(tss.TPM2_RC.HANDLE)):
            return None
        raise tpm_failure(exc, f"reading the object at 0x{handle:08x}") from None


def marshal_public(public: Any, what: str) -> bytes:
    """A TPMT_PUBLIC's marshalled bytes, bounded."""
    data = bytes(public.marshal())
    if len(data) > MAX_AK_PUBLIC_SIZE:
        raise AttestationError(f"the TPM returned a {what} of {len(data)} bytes (at most {MAX_AK_PUBLIC_SIZE})")
    return data


def ak_template(tss: ModuleType, algorithm: str) -> Any:
    """The TPM2B_PUBLIC template of an AK of `algorithm` ("rsa" or "ecc"), as the module doc describes it."""
    if algorithm not in AK_ALGORITHMS:
        raise InvalidArgumentError(f"unknown AK algorithm {algorithm!r} (one of: {', '.join(AK_ALGORITHMS)})")
    attributes = _ak_attributes(tss)
    if algorithm == "rsa":
        public = tss.TPMT_PUBLIC(type=tss.TPM2_ALG.RSA, nameAlg=tss.TPM2_ALG.SHA256, objectAttributes=attributes)
        detail = public.parameters.rsaDetail
        detail.symmetric.algorithm = tss.TPM2_ALG.NULL
        detail.scheme.scheme = tss.TPM2_ALG.RSASSA
        detail.scheme.details.rsassa.hashAlg = tss.TPM2_ALG.SHA256
        detail.keyBits = 2048
        detail.exponent = 0  # the default, 65537
    else:
        public = tss.TPMT_PUBLIC(type=tss.TPM2_ALG.ECC, nameAlg=tss.TPM2_ALG.SHA256, objectAttributes=attributes)
        detail = public.parameters.eccDetail
        detail.symmetric.algorithm = tss.TPM2_ALG.NULL
        detail.scheme.scheme = tss.TPM2_ALG.ECDSA
        detail.scheme.details.ecdsa.hashAlg = tss.TPM2_ALG.SHA256
        detail.curveID = tss.TPM2_ECC.NIST_P256
        detail.kdf.scheme = tss.TPM2_ALG.NULL
    return tss.TPM2B_PUBLIC(publicArea=public)


def _ak_attributes(tss: ModuleType) -> int:
    attr = tss.TPMA_OBJECT
    return int(attr.FIXEDTPM | attr.FIXEDPARENT | attr.SENSITIVEDATAORIGIN | attr.USERWITHAUTH | attr.RESTRICTED
               | attr.SIGN_ENCRYPT)


def check_ak_public(tss: ModuleType, public: Any, handle: int, algorithm: str | None) -> str:
    """The algorithm ("rsa"/"ecc") of the key whose TPMT_PUBLIC is `public`, if it is an AK as this module makes
    them (and of `algorithm`, unless None); FailedPreconditionError saying what it is otherwise: a key at the AK's
    handle that is anything else is someone else's, and is not used or replaced."""
    where = f"the key at persistent handle 0x{handle:08x}"
    attributes = int(public.objectAttributes)
    required = _ak_attributes(tss)
    if attributes & required != required or attributes & int(tss.TPMA_OBJECT.DECRYPT):
        raise FailedPreconditionError(
            f"{where} is not an attestation key (attributes {public.objectAttributes}; an AK is fixedtpm|fixedparent|"
            f"sensitivedataorigin|userwithauth|restricted|sign): choose another AK handle, or evict that key")
    if int(public.nameAlg) != int(tss.TPM2_ALG.SHA256):
        raise FailedPreconditionError(f"{where} has name algorithm {public.nameAlg}, not sha256")
    if int(public.type) == int(tss.TPM2_ALG.RSA):
        found = "rsa"
        scheme = public.parameters.rsaDetail.scheme
        ok = (int(scheme.scheme) == int(tss.TPM2_ALG.RSASSA)
              and int(scheme.details.rsassa.hashAlg) == int(tss.TPM2_ALG.SHA256)
              and int(public.parameters.rsaDetail.keyBits) == 2048)
        expected = "RSA-2048 with RSASSA-SHA256"
    elif int(public.type) == int(tss.TPM2_ALG.ECC):
        found = "ecc"
        scheme = public.parameters.eccDetail.scheme
        ok = (int(scheme.scheme) == int(tss.TPM2_ALG.ECDSA)
              and int(scheme.details.ecdsa.hashAlg) == int(tss.TPM2_ALG.SHA256)
              and int(public.parameters.eccDetail.curveID) == int(tss.TPM2_ECC.NIST_P256))
        expected = "ECC NIST P-256 with ECDSA-SHA256"
    else:
        raise FailedPreconditionError(f"{where} is of type {public.type}, neither RSA nor ECC")
    if not ok:
        raise FailedPreconditionError(f"{where} is an AK, but not {expected} as the host verifies")
    if algorithm is not None and found != algorithm:
        raise FailedPreconditionError(
            f"{where} is an {found.upper()} AK, but an {algorithm.upper()} AK was asked for: choose another AK "
            f"handle, or ask for {found}")
    return found


@dataclass(frozen=True)
class EkType:
    """One of the TCG EK Credential Profile's EK templates: which tpm2-pytss template recreates the EK, and the NV
    index its certificate is provisioned at."""

    name: str
    template: str
    certificate_index: int
    description: str


#: The EKs this release enrolls with. "rsa" and "ecc" are the profile's low-range templates L-1 and L-2, the ones
#: TPM vendors certify; "ecc-p384" is the high-range template H-3, the ECC EK that swtpm_setup certifies.
EK_TYPES: dict[str, EkType] = {
    "rsa": EkType("rsa", "EK-RSA2048", 0x01C00002, "RSA-2048 EK (template L-1)"),
    "ecc": EkType("ecc", "EK-ECC256", 0x01C0000A, "ECC NIST P-256 EK (template L-2)"),
    "ecc-p384": EkType("ecc-p384", "EK-HIGH-ECC384", 0x01C00016, "ECC NIST P-384 EK (template H-3)"),
}


def ek_type(name: str) -> EkType:
    try:
        return EK_TYPES[name]
    except KeyError:
        raise InvalidArgumentError(f"unknown EK type {name!r} (one of: {', '.join(EK_TYPES)})") from None


def read_nv(esapi: Any, index: int, limit: int, what: str) -> bytes | None:
    """The contents of NV index `index` (None if it is not defined), refusing one larger than `limit` before
    reading it; each TPM2_NV_Read is at most the TPM's TPM_PT_NV_BUFFER_MAX."""
    tss = load_tss()
    try:
        nv = esapi.tr_from_tpmpublic(index)
    except tss.TSS2_Exception as exc:
        if _is_tpm_error(tss, exc, int(tss.TPM2_RC.HANDLE)):
            return None
        raise tpm_failure(exc, f"reading the {what} (NV 0x{index:08x})") from None
    try:
        nv_public, _ = esapi.nv_read_public(nv)
        size = int(nv_public.nvPublic.dataSize)
        if size > limit:
            raise AttestationError(f"the {what} at NV 0x{index:08x} is {size} bytes (at most {limit})")
        chunk = _nv_read_chunk(esapi, tss)
        data = bytearray()
        while len(data) < size:
            want = min(chunk, size - len(data))
            part = bytes(esapi.nv_read(nv, want, len(data)))
            if len(part) != want:
                raise AttestationError(f"TPM2_NV_Read of the {what} returned {len(part)} bytes for {want}")
            data += part
        return bytes(data)
    except tss.TSS2_Exception as exc:
        raise tpm_failure(exc, f"reading the {what} (NV 0x{index:08x})") from None
    finally:
        esapi.tr_close(nv)


def _nv_read_chunk(esapi: Any, tss: ModuleType) -> int:
    _, data = esapi.get_capability(tss.TPM2_CAP.TPM_PROPERTIES, int(tss.TPM2_PT_NV.BUFFER_MAX), 1)
    for prop in data.data.tpmProperties:
        if int(prop.property) == int(tss.TPM2_PT_NV.BUFFER_MAX) and int(prop.value) > 0:
            return min(int(prop.value), MAX_NV_READ_CHUNK)
    return DEFAULT_NV_READ_CHUNK


@dataclass
class Ek:
    """An EK recreated in the TPM: its transient handle (the caller flushes it), TPMT_PUBLIC and certificate."""

    handle: Any
    public: Any
    certificate: bytes | None


def create_ek(esapi: Any, kind: EkType) -> Ek:
    """Recreate the EK of `kind` under the endorsement hierarchy (TPM2_CreatePrimary with the profile's template,
    or with the template and nonce the manufacturer put in NV, which tpm2-pytss' create_ek_template reads)."""
    tss = load_tss()
    utils = importlib.import_module("tpm2_pytss.utils")

    def nv_read(index: int) -> bytes:
        limit = MAX_EK_CERTIFICATE_SIZE if index == kind.certificate_index else MAX_EK_TEMPLATE_SIZE
        data = read_nv(esapi, int(index), limit, "EK certificate" if limit == MAX_EK_CERTIFICATE_SIZE else
                       "EK template")
        if data is None:
            raise utils.NoSuchIndex(index)
        return data

    try:
        certificate, template = utils.create_ek_template(kind.template, nv_read)
        handle, public, *_ = esapi.create_primary(None, template, tss.ESYS_TR.ENDORSEMENT)
    except tss.TSS2_Exception as exc:
        raise tpm_failure(exc, f"creating the {kind.description}") from None
    except ValueError as exc:  # create_ek_template: a high-range template whose certificate is absent
        raise FailedPreconditionError(f"TPM: no {kind.description} certificate here: {exc}") from None
    return Ek(handle, public.publicArea, None if certificate is None else bytes(certificate))


@contextlib.contextmanager
def ek_authorization(esapi: Any, ek: Ek) -> Iterator[Any]:
    """The session that authorizes use of `ek` (USER role): the password session for an EK whose template sets
    userWithAuth (the high-range ones, empty auth), else a policy session satisfying the low-range templates'
    policy, PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential Profile §B.3.3). Flushed afterwards."""
    tss = load_tss()
    if int(ek.public.objectAttributes) & int(tss.TPMA_OBJECT.USERWITHAUTH):
        yield tss.ESYS_TR.PASSWORD
        return
    try:
        session = esapi.start_auth_session(tss.ESYS_TR.NONE, tss.ESYS_TR.NONE, tss.TPM2_SE.POLICY,
                                           tss.TPMT_SYM_DEF(algorithm=tss.TPM2_ALG.NULL), ek.public.nameAlg)
    except tss.TSS2_Exception as exc:
        raise tpm_failure(exc, "starting a policy session for the EK") from None
    try:
        try:
            esapi.policy_secret(tss.ESYS_TR.ENDORSEMENT, session, expiration=0)
        except tss.TSS2_Exception as exc:
            raise tpm_failure(exc, "satisfying the EK's policy (PolicySecret of the endorsement hierarchy)") from None
        yield session
    finally:
        with contextlib.suppress(tss.TSS2_Exception):
            esapi.flush_context(session)


def flush(esapi: Any, handle: Any) -> None:
    """Flush a transient object or session, on the way out of an operation that may already be failing."""
    tss = load_tss()
    with contextlib.suppress(tss.TSS2_Exception):
        esapi.flush_context(handle)


def create_persistent_ak(esapi: Any, handle: int, algorithm: str, parent: EkType) -> None:
    """Create an AK of `algorithm` under the EK of `parent` and make it persistent at `handle`. Another process
    that got there first (TPM_RC_NV_DEFINED) is not an error: the caller reads and checks whatever is there."""
    tss = load_tss()
    ek = create_ek(esapi, parent)
    try:
        template = ak_template(tss, algorithm)
        try:
            with ek_authorization(esapi, ek) as session:
                private, public, *_ = esapi.create(ek.handle, None, template, session1=session)
            with ek_authorization(esapi, ek) as session:
                transient = esapi.load(ek.handle, private, public, session1=session)
        except tss.TSS2_Exception as exc:
            raise tpm_failure(exc, f"creating an {algorithm.upper()} AK under the {parent.description}") from None
        try:
            persistent = esapi.evict_control(tss.ESYS_TR.OWNER, transient, handle)
            esapi.tr_close(persistent)
        except tss.TSS2_Exception as exc:
            if not _is_tpm_error(tss, exc, int(tss.TPM2_RC.NV_DEFINED)):
                raise tpm_failure(exc, f"making the AK persistent at 0x{handle:08x}") from None
        finally:
            flush(esapi, transient)
    finally:
        flush(esapi, ek.handle)


@dataclass(frozen=True)
class PersistentAk:
    """The AK at a persistent handle: its ESYS_TR in one ESAPI context (tr_close it), TPMT_PUBLIC and algorithm."""

    esys: Any
    public: bytes
    algorithm: str


def open_ak(esapi: Any, handle: int, algorithm: str | None, *, create: bool,
            parent: EkType | None = None) -> PersistentAk:
    """The AK at `handle`, created there first (under the `parent` EK, RSA by default) if the handle is empty and
    `create`; FailedPreconditionError if it is empty and not `create`, or holds something that is not an AK."""
    tss = load_tss()
    check_ak_handle(handle)
    esys = read_persistent(esapi, handle)
    if esys is None:
        if not create:
            raise FailedPreconditionError(
                f"TPM: no AK at persistent handle 0x{handle:08x} (enroll this machine first: asylo platform enroll)")
        create_persistent_ak(esapi, handle, algorithm or AK_ALGORITHMS[0], parent or EK_TYPES["rsa"])
        esys = read_persistent(esapi, handle)
        if esys is None:
            raise FailedPreconditionError(f"TPM: the AK made persistent at 0x{handle:08x} is not there")
    try:
        public, _, _ = esapi.read_public(esys)
        found = check_ak_public(tss, public.publicArea, handle, algorithm)
        return PersistentAk(esys, marshal_public(public.publicArea, "AK public area"), found)
    except tss.TSS2_Exception as exc:
        esapi.tr_close(esys)
        raise tpm_failure(exc, f"reading the AK at 0x{handle:08x}") from None
    except BaseException:
        esapi.tr_close(esys)
        raise


# -- the attester ---------------------------------------------------------------------------------------------------

class TpmAttester:
    """Makes TPM evidence (a `QuoteAttester`): a `TpmQuote` by the AK at `ak_handle` over `pcrs`.

    Opening checks the TPM is reachable and the AK is there (creating it if the handle is empty and `create_ak`),
    so a proxy fails at start-up, not at its first session. Calls from several threads are serialized: a TPM
    without a resource manager serves one client at a time.
    """

    kind = KIND

    def __init__(self, tcti: str = DEFAULT_TCTI, *, pcrs: PcrSelection | str = DEFAULT_PCRS,
                 ak_handle: int = DEFAULT_AK_HANDLE, ak_algorithm: str | None = None, create_ak: bool = True) -> None:
        if not isinstance(tcti, str) or not tcti:
            raise InvalidArgumentError("a TCTI is text such as 'device:/dev/tpmrm0' or 'swtpm:host=H,port=P'")
        if ak_algorithm is not None and ak_algorithm not in AK_ALGORITHMS:
            raise InvalidArgumentError(f"unknown AK algorithm {ak_algorithm!r} (one of: {', '.join(AK_ALGORITHMS)})")
        self._tcti = tcti
        self._pcrs = pcrs if isinstance(pcrs, PcrSelection) else PcrSelection.parse(pcrs)
        self._handle = check_ak_handle(ak_handle)
        self._lock = threading.Lock()
        with self._lock, open_tpm(tcti) as esapi:
            ak = open_ak(esapi, ak_handle, ak_algorithm, create=create_ak)
            esapi.tr_close(ak.esys)
            read_pcrs(esapi, self._pcrs)  # a bank the TPM does not have fails here, at start-up
        self._ak_public = ak.public
        self._ak_algorithm = ak.algorithm

    @property
    def tcti(self) -> str:
        return self._tcti

    @property
    def pcrs(self) -> PcrSelection:
        return self._pcrs

    @property
    def ak_handle(self) -> int:
        return self._handle

    @property
    def ak_public(self) -> bytes:
        """The AK's TPMT_PUBLIC as marshalled (what `TpmQuote.ak_public` carries)."""
        return self._ak_public

    @property
    def fingerprint(self) -> str:
        """The AK's fingerprint (`ak_fingerprint`): what hosts trust with --trust-platform once it is enrolled."""
        return ak_fingerprint(self._ak_public)

    def describe(self) -> str:
        """For the proxy's start-up line."""
        return (f"tpm (TPM 2.0 via TCTI {self._tcti}; {self._ak_algorithm.upper()} AK at 0x{self._handle:08x}, "
                f"fingerprint {self.fingerprint}; PCRs {self._pcrs})")

    def attest(self, report_data: bytes) -> tuple[bytes, Endorsements]:
        """A TpmQuote (serialized deterministically) whose qualifying data is SHA-256(report_data); no endorsements:
        hosts trust the AK by the fingerprint that enrollment printed."""
        if not isinstance(report_data, bytes) or len(report_data) != REPORT_DATA_SIZE:
            raise InvalidArgumentError(f"report data must be exactly {REPORT_DATA_SIZE} bytes")
        qualifying_data = hashlib.sha256(report_data).digest()
        tss = load_tss()
        with self._lock, open_tpm(self._tcti) as esapi:
            ak = open_ak(esapi, self._handle, self._ak_algorithm, create=False)
            try:
                if ak.public != self._ak_public:
                    raise FailedPreconditionError(
                        f"TPM: the AK at 0x{self._handle:08x} changed since this proxy started (fingerprint "
                        f"{ak_fingerprint(ak.public)}, was {self.fingerprint}): restart the proxy, and enroll the "
                        f"new AK")
                quote = self._quote(esapi, tss, ak.esys, qualifying_data)
            finally:
                esapi.tr_close(ak.esys)
        return quote.SerializeToString(deterministic=True), Endorsements()

    def _quote(self, esapi: Any, tss: ModuleType, ak: Any, qualifying_data: bytes) -> identity_pb2.TpmQuote:
        wanted = self._pcrs.pairs()
        selection = pcr_selection_to_tpml(tss, wanted)
        for _ in range(MAX_QUOTE_ATTEMPTS):
            try:
                attest, signature = esapi.quote(ak, selection, qualifying_data)
            except tss.TSS2_Exception as exc:
                raise tpm_failure(exc, f"TPM2_Quote over PCRs {self._pcrs}") from None
            attest_bytes = bytes(attest)
            signature_bytes = bytes(signature.marshal())
            if not 0 < len(attest_bytes) <= MAX_ATTEST_SIZE:
                raise AttestationError(f"TPM2_Quote returned a TPMS_ATTEST of {len(attest_bytes)} bytes "
                                       f"(1 to {MAX_ATTEST_SIZE})")
            if not 0 < len(signature_bytes) <= MAX_SIGNATURE_SIZE:
                raise AttestationError(f"TPM2_Quote returned a signature of {len(signature_bytes)} bytes "
                                       f"(1 to {MAX_SIGNATURE_SIZE})")
            digest = self._check_attest(tss, attest_bytes, qualifying_data, wanted)
            values = read_pcrs(esapi, self._pcrs)
            if hashlib.sha256(b"".join(value for _, _, value in values)).digest() == digest:
                return identity_pb2.TpmQuote(
                    attest=attest_bytes, signature=signature_bytes, ak_public=self._ak_public,
                    pcrs=[identity_pb2.TpmPcrValue(hash_alg=alg, index=index, value=value)
                          for alg, index, value in values])
            # A PCR was extended between the quote and the read: quote again (see the module doc).
        raise AbortedError(f"TPM: the PCRs {self._pcrs} changed between quote and read {MAX_QUOTE_ATTEMPTS} times "
                           f"in a row (something is extending them continually); try again")

    def _check_attest(self, tss: ModuleType, attest: bytes, qualifying_data: bytes,
                      wanted: list[tuple[int, int]]) -> bytes:
        """The PCR digest of a TPMS_ATTEST the TPM just made, once it is checked to be the quote asked for (the
        TPM's own answer, so a mismatch is a TPM that does not do what was asked, or a bank it does not have)."""
        try:
            parsed, consumed = tss.TPMS_ATTEST.unmarshal(attest)
        except (tss.TSS2_Exception, ValueError, TypeError) as exc:
            raise AttestationError(f"TPM2_Quote returned a TPMS_ATTEST that does not parse: {exc}") from None
        if consumed != len(attest) or int(parsed.magic) != _TPM_GENERATED_VALUE \
                or int(parsed.type) != _TPM_ST_ATTEST_QUOTE:
            raise AttestationError("TPM2_Quote returned something that is not a TPM-generated quote")
        if bytes(parsed.extraData) != qualifying_data:
            raise AttestationError("TPM2_Quote returned a quote over other qualifying data than it was given")
        quoted = tpml_to_pairs(parsed.attested.quote.pcrSelect)
        if quoted != wanted:
            raise FailedPreconditionError(
                f"TPM: the quote covers PCRs {_describe_pairs(quoted) or 'none'}, not {self._pcrs} as asked: the TPM "
                f"has no such PCRs or the bank is not active (its active banks are set by the firmware)")
        digest = bytes(parsed.attested.quote.pcrDigest)
        if len(digest) != hashlib.sha256().digest_size:
            raise AttestationError(f"the quote's PCR digest is {len(digest)} bytes, not a SHA-256 digest")
        return digest

    def __repr__(self) -> str:
        return f"TpmAttester({self._tcti!r}, ak=0x{self._handle:08x}, pcrs={self._pcrs})"


def read_pcrs(esapi: Any, selection: PcrSelection) -> list[tuple[int, int, bytes]]:
    """(TPM_ALG_ID, index, value) of every PCR in `selection`, in digest order.

    One TPM2_PCR_Read returns at most 8 values (TPML_DIGEST) and says which ones (pcrSelectionOut), so this asks
    again for what is left until every PCR is read; a read that returns none of them means the TPM does not have
    them.
    """
    tss = load_tss()
    wanted = selection.pairs()
    values: dict[tuple[int, int], bytes] = {}
    for _ in range(len(wanted)):  # every round reads at least one PCR, or refuses
        remaining = [pair for pair in wanted if pair not in values]
        if not remaining:
            break
        try:
            _, selection_out, digests = esapi.pcr_read(pcr_selection_to_tpml(tss, remaining))
        except tss.TSS2_Exception as exc:
            raise tpm_failure(exc, f"TPM2_PCR_Read of PCRs {selection}") from None
        read = tpml_to_pairs(selection_out)
        if not read:
            raise FailedPreconditionError(f"TPM: PCRs {_describe_pairs(remaining)} cannot be read: the TPM has no "
                                          f"such PCRs or the bank is not active")
        digest_values = [bytes(digest) for digest in digests]
        if len(read) != len(digest_values) or any(pair not in remaining for pair in read):
            raise AttestationError("TPM2_PCR_Read returned values for other PCRs than it was asked for")
        for (alg, index), value in zip(read, digest_values, strict=True):
            size = PCR_BANKS[_BANK_NAMES[alg]][1]
            if len(value) != size:
                raise AttestationError(f"TPM2_PCR_Read returned {len(value)} bytes for {_BANK_NAMES[alg]} PCR "
                                       f"{index} (a {_BANK_NAMES[alg]} value is {size})")
            values[(alg, index)] = value
    missing = [pair for pair in wanted if pair not in values]
    if missing:
        raise FailedPreconditionError(f"TPM: PCRs {_describe_pairs(missing)} could not be read")
    return [(alg, index, values[(alg, index)]) for alg, index in wanted]


def _describe_pairs(pairs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{_BANK_NAMES.get(alg, hex(alg))}:{index}" for alg, index in pairs)
