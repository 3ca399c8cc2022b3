"""TPM 2.0: verifying a quote of a machine's boot state on the host, offline, and expectations on its PCRs.

    verifier = TpmQuoteVerifier([ak_fingerprint])       # the AK enrolled with `asylo platform enroll`
    launch = verifier.verify(tpm_quote, Endorsements())   # a serialized TpmQuote (asylo/proto/identity.proto)
    PcrsAre({0: pcr0, 7: pcr7}).launch_mismatch(launch)

`structures` parses the TPM's marshalled TPMS_ATTEST, TPMT_SIGNATURE and TPMT_PUBLIC (TPM 2.0 Library, Part 2) and
computes a quote's PCR digest; `verifier` holds the `QuoteVerifier` and the verified `TpmLaunchIdentity`;
`expectations` the `PcrsAre` expectation. The host side needs no TSS and no TPM: only `cryptography` and the
standard library, so any host verifies TPM evidence. It sits in the identity layer: it imports `asylo.identity`,
`asylo.proto` and `asylo.status`, nothing above them.
"""

from __future__ import annotations

from asylo.identity.tpm.expectations import PcrsAre
from asylo.identity.tpm.structures import (
    HASH_ALGORITHMS,
    MAX_PCR_BANKS,
    MAX_PCRS,
    MAX_PUBLIC_SIZE,
    MAX_QUOTE_ATTEST_SIZE,
    MAX_SIGNATURE_SIZE,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    ClockInfo,
    HashAlgorithm,
    PcrSelection,
    QuoteAttest,
    TpmPublic,
    TpmSignature,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
)
from asylo.identity.tpm.verifier import (
    AK_REQUIRED_ATTRIBUTES,
    MAX_TPM_QUOTE_SIZE,
    QUALIFYING_DATA_SIZE,
    TPM_KIND,
    TpmLaunchIdentity,
    TpmQuoteVerifier,
    decode_tpm_quote,
    encode_tpm_quote,
    qualifying_data,
)

__all__ = [
    "AK_REQUIRED_ATTRIBUTES",
    "HASH_ALGORITHMS",
    "MAX_PCRS",
    "MAX_PCR_BANKS",
    "MAX_PUBLIC_SIZE",
    "MAX_QUOTE_ATTEST_SIZE",
    "MAX_SIGNATURE_SIZE",
    "MAX_TPM_QUOTE_SIZE",
    "QUALIFYING_DATA_SIZE",
    "TPM_GENERATED_VALUE",
    "TPM_KIND",
    "TPM_ST_ATTEST_QUOTE",
    "ClockInfo",
    "HashAlgorithm",
    "PcrSelection",
    "PcrsAre",
    "QuoteAttest",
    "TpmLaunchIdentity",
    "TpmPublic",
    "TpmQuoteVerifier",
    "TpmSignature",
    "decode_tpm_quote",
    "encode_tpm_quote",
    "parse_attest",
    "parse_public",
    "parse_signature",
    "pcr_digest",
    "qualifying_data",
]
