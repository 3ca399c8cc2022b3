"""The SEV-SNP attester: a report over the runtime binding from configfs-tsm, with the VCEK to verify it by.

The host verifies the report offline, so the key that signed it travels with it — the VCEK, or the VLEK where the
cloud provider loaded one (the report's SIGNING_KEY says which): from configfs-tsm's `auxblob` when the hypervisor
supplies the certificate table (the usual case on cloud SNP VMs), else from a file the operator gives the proxy
(`--vcek FILE`, DER or PEM, as AMD's key distribution service serves it). The ASK (or ASVK) and ARK go along when
the table has them; the host falls back to the AMD chains it bundles otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from asylo._files import read_bounded
from asylo.identity.configfs_tsm import ConfigfsTsm
from asylo.identity.launch import Endorsements
from asylo.identity.snp.certs import cert_table_endorsements
from asylo.identity.snp.report import parse_report
from asylo.status import AttestationError, FailedPreconditionError

KIND = "snp"
#: A VCEK is about 1.4 KiB of DER (a little more as PEM).
MAX_VCEK_FILE_SIZE = 16 * 1024


class SnpAttester:
    """Makes SNP evidence inside an SEV-SNP guest (a `QuoteAttester`)."""

    kind = KIND

    def __init__(self, tsm: ConfigfsTsm, *, vcek_file: str | os.PathLike[str] | None = None) -> None:
        self._tsm = tsm
        self._vcek = load_vcek_file(vcek_file) if vcek_file is not None else None

    def attest(self, report_data: bytes) -> tuple[bytes, Endorsements]:
        report = self._tsm.report(report_data)
        # The report says which key signed it (VCEK, or VLEK on clouds that load one): send that key's chain.
        signing_key = parse_report(report.outblob).signing_key
        if report.auxblob:
            return report.outblob, cert_table_endorsements(report.auxblob, signing_key=signing_key)
        if self._vcek is None:
            raise FailedPreconditionError(
                f"the hypervisor supplied no {signing_key.upper()} (configfs-tsm's auxblob has no certificate "
                f"table) and the proxy was given no --vcek FILE: fetch this chip's VCEK (or the provider's VLEK) "
                f"from AMD's key distribution service and pass it")
        return report.outblob, Endorsements((self._vcek,))

    def __repr__(self) -> str:
        return f"SnpAttester({self._tsm!r}, vcek={'file' if self._vcek else 'from the hypervisor'})"


def load_vcek_file(path: str | os.PathLike[str]) -> bytes:
    """A VCEK (or VLEK) certificate file, DER or PEM, as DER."""
    resolved, data = read_bounded(Path(path), MAX_VCEK_FILE_SIZE, "VCEK", FailedPreconditionError)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(data).public_bytes(Encoding.DER)
    except ValueError as exc:
        raise AttestationError(f"{resolved} is not a certificate (DER or PEM): {exc}") from None
