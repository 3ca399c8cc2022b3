"""The host side of TDX and SGX: a DCAP quote and its collateral in, a verified launch identity out.

dcap-qvl (Phala Network's Rust port of Intel's quote verification library) does the verification, offline, at
the time it is given, against a root certificate it is given: ours, Intel's SGX Root CA as bundled in
`intel/TrustedRootCA.der` and pinned here by its SHA-256 (the same certificate dcap-qvl carries as its default;
passing it explicitly keeps the pin in this code, not in a wheel we do not build). What it checks, as read in
its source (verify.rs of the crate at 0.5.2; the 0.7.0 wheel carries the same refusal messages) and as tried on
the genuine samples in tests/vectors/tdx-sgx-dcap:

- the collateral: TCB info and QE identity signed by Intel's TCB signing key, its chain to the root, both
  within their issueDate..nextUpdate; the root CA CRL and the PCK CRL (signed by the root and the PCK CA, within
  their validity, revocation checked along every chain, unknown status refused);
- the quote: header (version 3 for SGX, 4 or 5 for TDX, Intel's QE vendor id, ECDSA P-256 keys), the PCK chain
  to the root, the QE report signed by the PCK key, the QE report data binding the attestation key, the QE's
  identity (MRSIGNER, ISVPRODID, masked MISCSELECT and ATTRIBUTES, not debug) against the QE identity, and the
  header and body signed by the attestation key;
- the TCB: the PCK certificate's CPUSVN, PCESVN and FMSPC matched against the TCB info's levels (and for TDX the
  TEE TCB SVN and the TDX module identity), merged with the QE's TCB level; a Revoked status fails;
- the body: a debug enclave or TD fails (dcap-qvl's default; the expectations check it again), a TD's reserved
  attribute bits must be clear and SEPT_VE_DISABLE set, a TD 1.5 must not name a service TD.

That is authenticity. Which TCB statuses, measurements and debug settings are acceptable is policy, and belongs
to the expectations (`TdxLaunch`, `SgxEnclave`); the verifier returns the status and advisories as found.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from abc import abstractmethod
from importlib import resources
from typing import ClassVar, Generic, TypeVar

import dcap_qvl
from cryptography import x509

from asylo.identity.launch import Endorsements, LaunchIdentity, QuoteVerifier, verification_time
from asylo.identity.tdx.quote import (
    MAX_COLLATERAL_SIZE,
    MAX_QUOTE_SIZE,
    REVOKED,
    SGX_ATTRIBUTES_DEBUG,
    SGX_MEASUREMENT_SIZE,
    TD_ATTRIBUTES_DEBUG,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    SgxLaunchIdentity,
    TdxLaunchIdentity,
    check_u16,
    normalise_tcb_status,
    quote_tee_type,
    tee_name,
)
from asylo.status import AttestationError, InternalError, InvalidArgumentError

#: SHA-256 of the DER of Intel's SGX Root CA (CN=Intel SGX Root CA, valid 2018-05-21..2049-12-31), the root of
#: every PCK, TCB-signing and PCK CA certificate. Intel publishes it at
#: https://certificates.trustedservices.intel.com/IntelSGXRootCA.der; see intel/PROVENANCE.md.
INTEL_SGX_ROOT_CA_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
_ROOT_RESOURCE = ("intel", "TrustedRootCA.der")
#: A root certificate is a few hundred bytes (Intel's is 659); anything near this is not one.
_MAX_ROOT_SIZE = 16 * 1024
#: dcap-qvl's messages are a line or two, with a "Caused by" chain; an error that echoes more is cut here so a
#: refusal stays readable in a log line.
_MAX_ERROR_TEXT = 600
_WHITESPACE_RUN = re.compile(r"\s+")

_Launch = TypeVar("_Launch", bound=LaunchIdentity)


def intel_root_ca_der() -> bytes:
    """Intel's SGX Root CA as bundled with this package, checked against INTEL_SGX_ROOT_CA_SHA256."""
    resource = resources.files("asylo.identity.tdx").joinpath(*_ROOT_RESOURCE)
    der = resource.read_bytes()
    if hashlib.sha256(der).hexdigest() != INTEL_SGX_ROOT_CA_SHA256:
        # Only a damaged or tampered installation gets here; verifying against whatever the file now holds would
        # trust a root nobody chose.
        raise InternalError(f"the bundled Intel SGX Root CA ({'/'.join(_ROOT_RESOURCE)}) does not match its pinned "
                            f"SHA-256 {INTEL_SGX_ROOT_CA_SHA256}: the installation is damaged")
    return der


def _check_root(root_ca_der: object) -> bytes:
    if not isinstance(root_ca_der, bytes) or not 0 < len(root_ca_der) <= _MAX_ROOT_SIZE:
        raise InvalidArgumentError(f"root_ca_der must be a DER certificate (bytes, at most {_MAX_ROOT_SIZE}), "
                                   f"got {type(root_ca_der).__name__}")
    try:
        x509.load_der_x509_certificate(root_ca_der)
    except ValueError as exc:
        raise InvalidArgumentError(f"root_ca_der is not a DER X.509 certificate: {exc}") from None
    return root_ca_der


def dcap_error_text(exc: BaseException) -> str:
    """dcap-qvl's message on one line ("Verification failed: X Caused by: Y"), bounded."""
    text = _WHITESPACE_RUN.sub(" ", str(exc)).strip() or type(exc).__name__
    text = text.removeprefix("Verification failed: ")
    if len(text) > _MAX_ERROR_TEXT:
        text = text[:_MAX_ERROR_TEXT] + "..."
    return text


def parse_collateral(collateral: bytes, *, what: str = "the collateral") -> dcap_qvl.QuoteCollateralV3:
    """DCAP collateral JSON as dcap-qvl's object; AttestationError if it is empty, too large or not collateral.

    Also what the proxy side uses to check a collateral file, so both sides refuse the same things."""
    if not isinstance(collateral, bytes | bytearray):
        raise InvalidArgumentError(f"collateral must be bytes, got {type(collateral).__name__}")
    if not collateral:
        raise AttestationError("no DCAP collateral came with the quote: the proxy must be given the collateral "
                               "(--collateral FILE) or a PCCS URL to fetch it from")
    if len(collateral) > MAX_COLLATERAL_SIZE:
        raise AttestationError(f"{what} is {len(collateral)} bytes, more than DCAP collateral takes "
                               f"({MAX_COLLATERAL_SIZE})")
    try:
        text = bytes(collateral).decode("utf-8")
    except UnicodeDecodeError:
        raise AttestationError(f"{what} is not DCAP collateral JSON: not UTF-8 text") from None
    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # ValueError, or a Rust panic (pyo3's PanicException is a BaseException)
        raise AttestationError(f"{what} is not DCAP collateral JSON: {dcap_error_text(exc)}") from None


def _hex_field(values: dict[str, object], name: str, size: int) -> bytes:
    value = values.get(name)
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        data = None
    if data is None or len(data) != size:
        raise AttestationError(f"dcap-qvl's verified report has an unexpected {name!r}: {value!r}")
    return data


class DcapQuoteVerifier(QuoteVerifier, Generic[_Launch]):
    """What the TDX and SGX verifiers share: bounds, the root, dcap-qvl and its errors; `kind` picks the TEE.

    `root_ca_der` is the root to verify against: None for Intel's SGX Root CA (pinned here), another DER
    certificate for a test or a private PKI.
    """

    kind: ClassVar[str]
    _tee_type: ClassVar[int]

    def __init__(self, *, root_ca_der: bytes | None = None) -> None:
        self._root_ca_der = intel_root_ca_der() if root_ca_der is None else _check_root(root_ca_der)
        self.root_ca_sha256 = hashlib.sha256(self._root_ca_der).hexdigest()

    def verify(self, evidence: bytes, endorsements: Endorsements, *,
               at: datetime.datetime | None = None) -> _Launch:
        name = tee_name(self._tee_type)
        if not isinstance(evidence, bytes | bytearray):
            raise InvalidArgumentError(f"{name} evidence must be bytes, got {type(evidence).__name__}")
        if not isinstance(endorsements, Endorsements):
            raise InvalidArgumentError(f"endorsements must be Endorsements, got {type(endorsements).__name__}")
        quote = bytes(evidence)
        if len(quote) > MAX_QUOTE_SIZE:
            raise AttestationError(f"{name} quote is {len(quote)} bytes, more than any DCAP quote ({MAX_QUOTE_SIZE})")
        tee_type = quote_tee_type(quote)
        if tee_type != self._tee_type:
            raise AttestationError(f"the {name} verifier was given {_article(tee_name(tee_type))} quote "
                                   f"(TEE type {tee_type:#x} in its header; {name} is {self._tee_type:#x})")
        if endorsements.certificates:
            raise AttestationError(f"{name} evidence carries {len(endorsements.certificates)} separate certificates; "
                                   f"DCAP takes none (the PCK chain is inside the quote, the rest in the collateral)")
        collateral = parse_collateral(endorsements.collateral)
        now = verification_time(at)
        now_secs = int(now.timestamp())
        if now_secs < 0:
            raise InvalidArgumentError(f"cannot verify at {now.isoformat()}, before 1970")
        try:
            report = dcap_qvl.verify_with_root_ca(quote, collateral, self._root_ca_der, now_secs)
            parsed = dcap_qvl.parse_quote(quote)
            report_json = json.loads(report.to_json())
            status, advisories = report.status, tuple(report.advisory_ids)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # ValueError, or a Rust panic (pyo3's PanicException is a BaseException)
            raise AttestationError(f"{name} quote not verified at {now.isoformat()}: {dcap_error_text(exc)}") from None
        tcb_status = normalise_tcb_status(status)
        if tcb_status == REVOKED:
            raise AttestationError(f"{name} quote not verified: the platform's TCB is Revoked")
        if not all(isinstance(a, str) for a in advisories):
            raise AttestationError(f"dcap-qvl reported advisory ids that are not strings: {advisories!r}")
        if not isinstance(report_json, dict):
            raise AttestationError(f"dcap-qvl's verified report is not a JSON object: {type(report_json).__name__}")
        return self._identity(parsed, report_json, tcb_status, advisories)

    @abstractmethod
    def _identity(self, parsed: dcap_qvl.Quote, report: dict[str, object], tcb_status: str,
                  advisories: tuple[str, ...]) -> _Launch:
        """The identity from the verified quote (`parsed`: dcap-qvl's parse of the same bytes; `report`: its
        verified report as JSON)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root sha256 {self.root_ca_sha256})"


def _article(name: str) -> str:
    return f"an {name}" if name[:1] in "AEIOSU" else f"a {name}"


class TdxQuoteVerifier(DcapQuoteVerifier[TdxLaunchIdentity]):
    """TDX quotes (v4, and v5 with a TD 1.0 or 1.5 report) with their DCAP collateral, to `TdxLaunchIdentity`."""

    kind: ClassVar[str] = "tdx"
    _tee_type: ClassVar[int] = TEE_TYPE_TDX

    def _identity(self, parsed: dcap_qvl.Quote, report: dict[str, object], tcb_status: str,
                  advisories: tuple[str, ...]) -> TdxLaunchIdentity:
        body = parsed.report
        # At run time dcap-qvl's TD 1.5 reports are not subclasses of its TD 1.0 report (its stub says they
        # are), so all three are named; each has the TD 1.0 fields.
        if not isinstance(body, dcap_qvl.TdReport10 | dcap_qvl.TdReport15 | dcap_qvl.TdReport15Ex):
            raise AttestationError(f"the verified TDX quote has no TD report (dcap-qvl parsed {type(body).__name__})")
        td_attributes = bytes(body.td_attributes)
        try:
            return TdxLaunchIdentity(
                mrtd=bytes(body.mr_td),
                rtmrs=(bytes(body.rt_mr0), bytes(body.rt_mr1), bytes(body.rt_mr2), bytes(body.rt_mr3)),
                mrseam=bytes(body.mr_seam),
                mrsignerseam=bytes(body.mr_signer_seam),
                mrconfigid=bytes(body.mr_config_id),
                mrowner=bytes(body.mr_owner),
                mrownerconfig=bytes(body.mr_owner_config),
                td_attributes=td_attributes,
                xfam=bytes(body.xfam),
                tee_tcb_svn=bytes(body.tee_tcb_svn),
                report_data=bytes(body.report_data),
                tcb_status=tcb_status,
                advisory_ids=advisories,
                debug=bool(td_attributes[:1] and td_attributes[0] & TD_ATTRIBUTES_DEBUG),
                quote_version=parsed.header.version,
            )
        except InvalidArgumentError as exc:
            raise AttestationError(f"the verified TDX quote does not make a launch identity: {exc.message}") from None


class SgxQuoteVerifier(DcapQuoteVerifier[SgxLaunchIdentity]):
    """SGX DCAP quotes (v3) with their collateral, to `SgxLaunchIdentity`."""

    kind: ClassVar[str] = "sgx"
    _tee_type: ClassVar[int] = TEE_TYPE_SGX

    def _identity(self, parsed: dcap_qvl.Quote, report: dict[str, object], tcb_status: str,
                  advisories: tuple[str, ...]) -> SgxLaunchIdentity:
        body = parsed.report
        enclave = report.get("report")
        enclave = enclave.get("SgxEnclave") if isinstance(enclave, dict) else None
        if not isinstance(body, dcap_qvl.SgxEnclaveReport) or not isinstance(enclave, dict):
            raise AttestationError(f"the verified SGX quote has no enclave report (dcap-qvl parsed "
                                   f"{type(body).__name__})")
        # dcap-qvl's Python enclave report lacks ISVPRODID and ISVSVN; its verified report's JSON has them, and
        # the fields read from both must agree, so the identity is one report, not two half-reports.
        if _hex_field(enclave, "mr_enclave", SGX_MEASUREMENT_SIZE) != bytes(body.mr_enclave):
            raise AttestationError("dcap-qvl's parse and its verified report disagree on MRENCLAVE")
        try:
            isv_prod_id = check_u16(enclave.get("isv_prod_id"), "the verified report's isv_prod_id")
            isv_svn = check_u16(enclave.get("isv_svn"), "the verified report's isv_svn")
            attributes = bytes(body.attributes)
            return SgxLaunchIdentity(
                mrenclave=bytes(body.mr_enclave),
                mrsigner=bytes(body.mr_signer),
                isv_prod_id=isv_prod_id,
                isv_svn=isv_svn,
                attributes=attributes,
                report_data=bytes(body.report_data),
                tcb_status=tcb_status,
                advisory_ids=advisories,
                debug=bool(attributes[:1] and attributes[0] & SGX_ATTRIBUTES_DEBUG),
            )
        except InvalidArgumentError as exc:
            raise AttestationError(f"the verified SGX quote does not make a launch identity: {exc.message}") from None
