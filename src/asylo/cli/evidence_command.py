"""`asylo evidence verify`: check one piece of hardware evidence offline, as an operator does before trusting a
machine, and print what it proves."""

from __future__ import annotations

import datetime
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from asylo._files import read_bounded
from asylo.identity.launch import Endorsements, LaunchExpectation, LaunchIdentity, QuoteVerifier
from asylo.status import AsyloError, AttestationError, InvalidArgumentError

#: Evidence files: an SNP report is 1184 bytes (2.4 KiB as hex), a TDX quote about 5 KiB, a Nitro document about
#: 4.5 KiB (6 KiB as base64); collateral JSON about 16 KiB. Generous bounds for all.
MAX_EVIDENCE_FILE = 256 * 1024
MAX_COLLATERAL_FILE = 1024 * 1024
MAX_CERTIFICATE_FILE = 64 * 1024
KINDS = ("snp", "tdx", "sgx", "nitro")


@click.group()
def evidence() -> None:
    """Hardware attestation evidence (SEV-SNP reports, TDX and SGX DCAP quotes, Nitro attestation documents)."""


def _hex(size: int | None) -> Callable[[click.Context, click.Parameter, str | None], bytes | None]:
    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise click.BadParameter("not hex digits", ctx=ctx, param=param) from None
        if size is not None and len(raw) != size:
            raise click.BadParameter(f"must be {size} bytes ({2 * size} hex digits), got {len(raw)}", ctx=ctx,
                                     param=param)
        return raw

    return convert


def _indexed_hex(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[int, bytes]:
    result: dict[int, bytes] = {}
    for value in values:
        index, separator, digits = value.partition("=")
        if not separator or not index.isdigit():
            raise click.BadParameter(f"takes N=HEX, got {value!r}", ctx=ctx, param=param)
        try:
            result[int(index)] = bytes.fromhex(digits)
        except ValueError:
            raise click.BadParameter(f"not hex digits after {index}=", ctx=ctx, param=param) from None
    return result


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime.datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"not an ISO-8601 time: {value!r} (e.g. 2025-07-01T12:00:00Z)", ctx=ctx,
                                 param=param) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=datetime.UTC)


@evidence.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), required=True,
              help="snp: an SEV-SNP attestation report (raw 1184 bytes, or hex as snpguest and others print it); "
                   "tdx, sgx: a DCAP quote (raw, or hex); nitro: an attestation document (base64, as AWS's tools "
                   "print it, or raw CBOR).")
@click.option("--at", callback=_time, metavar="ISO-8601",
              help="Verify as of this time (certificates, collateral and freshness), e.g. when the evidence was "
                   "made. Default: now.")
@click.option("--vcek", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="snp: the chip's VCEK (or VLEK) certificate, DER or PEM. Required for snp.")
@click.option("--ask-ark", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="snp: the ASK then the ARK (PEM, as AMD's key distribution service serves cert_chain). Default: "
                   "the AMD chains pyasylo bundles; either way the ARK must be one pinned in pyasylo.")
@click.option("--collateral", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="tdx, sgx: the quote's DCAP collateral (JSON). Required for tdx and sgx.")
@click.option("--expect-measurement", callback=_hex(None), metavar="HEX",
              help="Refuse unless the launch has this measurement: snp MEASUREMENT (48 bytes), tdx MRTD (48), "
                   "sgx MRENCLAVE (32), nitro PCR0 (48).")
@click.option("--expect-pcr", multiple=True, callback=_indexed_hex, metavar="N=HEX",
              help="nitro: refuse unless PCR N has this value (repeatable).")
@click.option("--expect-rtmr", multiple=True, callback=_indexed_hex, metavar="N=HEX",
              help="tdx: refuse unless RTMR N (0-3) has this value (repeatable).")
@click.option("--expect-mrsigner", callback=_hex(32), metavar="HEX", help="sgx: refuse unless MRSIGNER is this.")
@click.option("--min-tcb", metavar="bootloader=N,tee=N,snp=N,microcode=N",
              help="snp: refuse a reported TCB below this one in any component (as reported_tcb is printed; Turin "
                   "adds fmc=N).")
@click.option("--accept-tcb-status", multiple=True, metavar="STATUS",
              help="tdx, sgx: accept this TCB status besides UpToDate (repeatable), e.g. SWHardeningNeeded.")
@click.option("--allow-debug", is_flag=True,
              help="Accept a debug launch (its memory is open to its host): for development only.")
@click.option("--max-age", type=click.FloatRange(min=1, max=86400), metavar="SECONDS",
              help="nitro: refuse a document older than this at --at (default: the verifier's bound).")
def verify(file: Path, kind: str, at: datetime.datetime | None, vcek: Path | None, ask_ark: Path | None,
           collateral: Path | None, expect_measurement: bytes | None, expect_pcr: dict[int, bytes],
           expect_rtmr: dict[int, bytes], expect_mrsigner: bytes | None, min_tcb: str | None,
           accept_tcb_status: tuple[str, ...], allow_debug: bool, max_age: float | None) -> None:
    """Verify one piece of evidence offline against the vendor's roots pinned in pyasylo, and print what it
    proves as JSON (exit 0), or why it was refused (exit 1).

    Checks the signature and certificate chain (or, for DCAP, the collateral), the times, and the expectation
    given by the --expect-* options; without any, it still refuses a debug launch (unless --allow-debug) and,
    for DCAP, a TCB status other than UpToDate (unless accepted). Nothing touches the network.
    """
    _check_options(kind, vcek=vcek, ask_ark=ask_ark, collateral=collateral, expect_pcr=expect_pcr,
                   expect_rtmr=expect_rtmr, expect_mrsigner=expect_mrsigner, min_tcb=min_tcb,
                   accept_tcb_status=accept_tcb_status, max_age=max_age)
    try:
        verifier, raw, endorsements = _inputs(kind, file, vcek=vcek, ask_ark=ask_ark, collateral=collateral,
                                              max_age=max_age)
    except InvalidArgumentError as exc:
        raise click.UsageError(exc.message) from None
    except AttestationError as exc:  # the file is not evidence of that kind
        click.echo(f"refused: {exc.message}", err=True)
        sys.exit(1)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    try:
        launch = verifier.verify(raw, endorsements, at=at)
        try:
            expectation, described = _expectation(
                kind, launch, measurement=expect_measurement, pcrs=expect_pcr, rtmrs=expect_rtmr,
                mrsigner=expect_mrsigner, min_tcb=min_tcb, accept=accept_tcb_status, allow_debug=allow_debug)
        except InvalidArgumentError as exc:
            raise click.UsageError(exc.message) from None
        reason = expectation.launch_mismatch(launch)
        if reason is not None:
            raise AttestationError(f"the {kind} launch does not meet the expectation: {reason}")
    except AttestationError as exc:
        click.echo(f"refused: {_in_flags(exc.message)}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"verified": True, **launch.to_json(), "expectation": described}, indent=2))


def _in_flags(message: str) -> str:
    """A refusal as this command's user reads it: the options that change the outcome, not the Python arguments."""
    message = message.replace("allow_debug=True", "--allow-debug")
    return re.sub(r"accept_tcb_status=\['(\w+)'\]", r"--accept-tcb-status \1", message)


def _check_options(kind: str, **given: object) -> None:
    allowed = {"snp": {"vcek", "ask_ark", "min_tcb"}, "tdx": {"collateral", "expect_rtmr", "accept_tcb_status"},
               "sgx": {"collateral", "expect_mrsigner", "accept_tcb_status"}, "nitro": {"expect_pcr", "max_age"}}[kind]
    wrong = sorted(name for name, value in given.items() if value not in (None, (), {}) and name not in allowed)
    if wrong:
        flags = ", ".join("--" + name.replace("_", "-") for name in wrong)
        raise click.UsageError(f"{flags} do(es) not apply to --kind {kind}")
    if kind == "snp" and given["vcek"] is None:
        raise click.UsageError("--kind snp needs --vcek FILE: the report is verified by the chip's VCEK")
    if kind in ("tdx", "sgx") and given["collateral"] is None:
        raise click.UsageError(f"--kind {kind} needs --collateral FILE: DCAP quotes are verified with their "
                               f"collateral (TCB info, QE identity, CRLs)")


def _inputs(kind: str, file: Path, *, vcek: Path | None, ask_ark: Path | None, collateral: Path | None,
            max_age: float | None) -> tuple[QuoteVerifier, bytes, Endorsements]:
    _, data = read_bounded(file, MAX_EVIDENCE_FILE, "evidence", InvalidArgumentError)
    if kind == "snp":
        from asylo.identity.snp import SnpQuoteVerifier, decode_report_file  # noqa: PLC0415
        from asylo.identity.snp.attester import load_vcek_file  # noqa: PLC0415

        assert vcek is not None  # _check_options
        certificates = [load_vcek_file(vcek)]
        if ask_ark is not None:
            certificates += _pem_chain(ask_ark)
        return SnpQuoteVerifier(), decode_report_file(data), Endorsements(tuple(certificates))
    if kind in ("tdx", "sgx"):
        from asylo.identity.tdx import SgxQuoteVerifier, TdxQuoteVerifier, decode_quote_file  # noqa: PLC0415

        assert collateral is not None
        _, json_bytes = read_bounded(collateral, MAX_COLLATERAL_FILE, "collateral", InvalidArgumentError)
        verifier: QuoteVerifier = TdxQuoteVerifier() if kind == "tdx" else SgxQuoteVerifier()
        return verifier, decode_quote_file(data), Endorsements(collateral=json_bytes)
    from asylo.identity.nitro import NitroQuoteVerifier, decode_document_file  # noqa: PLC0415

    nitro = NitroQuoteVerifier() if max_age is None else NitroQuoteVerifier(
        max_age=datetime.timedelta(seconds=max_age))
    return nitro, decode_document_file(data), Endorsements()


def _pem_chain(path: Path) -> list[bytes]:
    _, data = read_bounded(path, MAX_CERTIFICATE_FILE, "certificate chain", InvalidArgumentError)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidArgumentError(f"{path}: not PEM certificates: {exc}") from None
    if len(certificates) != 2:
        raise InvalidArgumentError(f"{path}: expected the ASK then the ARK, found {len(certificates)} certificates")
    return [certificate.public_bytes(Encoding.DER) for certificate in certificates]


def _expectation(kind: str, launch: LaunchIdentity, *, measurement: bytes | None, pcrs: dict[int, bytes],
                 rtmrs: dict[int, bytes], mrsigner: bytes | None, min_tcb: str | None, accept: tuple[str, ...],
                 allow_debug: bool) -> tuple[LaunchExpectation, str]:
    """The expectation the options describe, and what to print of it. Without reference values the launch's own
    stand in, so that the policy (debug, TCB status) is still applied and nothing else is claimed."""
    policy_only = "no reference values given: only the policy (debug refused unless --allow-debug" + (
        ", TCB status UpToDate unless accepted)" if kind in ("tdx", "sgx") else ")")
    if kind == "snp":
        from asylo.identity.snp import SnpLaunch, SnpLaunchIdentity, SnpTcb  # noqa: PLC0415

        assert isinstance(launch, SnpLaunchIdentity)
        tcb = None
        if min_tcb is not None:
            try:
                parts = dict(part.split("=", 1) for part in min_tcb.split(","))
                tcb = SnpTcb(**{name.strip(): int(value) for name, value in parts.items()})
            except (ValueError, TypeError):
                raise InvalidArgumentError(f"--min-tcb takes bootloader=N,tee=N,snp=N,microcode=N (Turin: and "
                                           f"fmc=N), got {min_tcb!r}") from None
        snp = SnpLaunch(measurement, min_tcb=tcb, allow_debug=allow_debug, vmpl=None)
        return snp, snp.describe() if measurement is not None or tcb is not None else policy_only
    if kind == "tdx":
        from asylo.identity.tdx import TdxLaunch, TdxLaunchIdentity  # noqa: PLC0415

        assert isinstance(launch, TdxLaunchIdentity)
        given = measurement is not None or bool(rtmrs)
        tdx = TdxLaunch(measurement if given else launch.mrtd, rtmrs=rtmrs or None, accept_tcb_status=accept,
                        allow_debug=allow_debug)
        return tdx, tdx.describe() if given else policy_only
    if kind == "sgx":
        from asylo.identity.tdx import SgxEnclave, SgxLaunchIdentity  # noqa: PLC0415

        assert isinstance(launch, SgxLaunchIdentity)
        given = measurement is not None or mrsigner is not None
        sgx = SgxEnclave(measurement if given else launch.mrenclave, mrsigner=mrsigner, accept_tcb_status=accept,
                         allow_debug=allow_debug)
        return sgx, sgx.describe() if given else policy_only
    from asylo.identity.nitro import NitroLaunchIdentity, NitroPcrs  # noqa: PLC0415

    assert isinstance(launch, NitroLaunchIdentity)
    expected = dict(pcrs)
    if measurement is not None:
        expected[0] = measurement
    nitro = NitroPcrs(expected or dict(launch.pcrs[:1]), allow_debug=allow_debug)
    return nitro, nitro.describe() if expected else policy_only
