"""Intel TDX and SGX: DCAP quotes verified offline against Intel's pinned root, and expectations on them.

TDX (a confidential VM, a "trust domain") and SGX (an enclave in a process) share Intel's Data Center
Attestation Primitives: a quote signed by a Quoting Enclave whose key Intel's PCK certificate chain endorses, and
collateral (TCB info, QE identity, CRLs) that rates the platform's TCB. So they share one package:

- `TdxQuoteVerifier`, `SgxQuoteVerifier` (host side): quote plus collateral in, `TdxLaunchIdentity` or
  `SgxLaunchIdentity` out, with the TCB status and advisories as Intel's collateral rates them;
- `TdxLaunch`, `SgxEnclave`: what the host requires of the launch (measurements, acceptable TCB statuses, no
  debug);
- `CollateralSource` (proxy side): the collateral to send with each quote, from a file or a PCCS;
- `decode_quote_file`: a quote file as raw bytes, whether binary or hex text.
"""

from asylo.identity.tdx.collateral import (
    DEFAULT_REFRESH_AFTER,
    CollateralSource,
    FileCollateral,
    PccsCollateral,
    check_pccs_url,
)
from asylo.identity.tdx.expectations import SgxEnclave, TdxLaunch
from asylo.identity.tdx.quote import (
    MAX_COLLATERAL_SIZE,
    MAX_QUOTE_SIZE,
    TCB_STATUSES,
    SgxLaunchIdentity,
    TdxLaunchIdentity,
    decode_quote_file,
)
from asylo.identity.tdx.verifier import (
    INTEL_SGX_ROOT_CA_SHA256,
    DcapQuoteVerifier,
    SgxQuoteVerifier,
    TdxQuoteVerifier,
    intel_root_ca_der,
)

__all__ = [
    "DEFAULT_REFRESH_AFTER",
    "INTEL_SGX_ROOT_CA_SHA256",
    "MAX_COLLATERAL_SIZE",
    "MAX_QUOTE_SIZE",
    "TCB_STATUSES",
    "CollateralSource",
    "DcapQuoteVerifier",
    "FileCollateral",
    "PccsCollateral",
    "SgxEnclave",
    "SgxLaunchIdentity",
    "SgxQuoteVerifier",
    "TdxLaunch",
    "TdxLaunchIdentity",
    "TdxQuoteVerifier",
    "check_pccs_url",
    "decode_quote_file",
    "intel_root_ca_der",
]
