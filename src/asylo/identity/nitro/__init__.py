"""AWS Nitro Enclaves: the attestation document, its offline verifier, PCR expectations and the NSM attester.

Host side: `NitroQuoteVerifier().verify(document, Endorsements())` checks a document against the AWS Nitro
Enclaves root pinned in the code and returns a `NitroLaunchIdentity` (PCRs, user_data as report data, nonce, public
key, debug); `NitroPcrs({0: pcr0, ...})` is the expectation a host puts on it. Enclave side:
`NitroSecureModule().attestation(user_data)` asks /dev/nsm for a signed document. `parse_document` and
`decode_document_file` read documents (raw CBOR or base64 text) without verifying them.

Nothing here touches the network, and nothing imports the session, remote or host layers.
"""

from __future__ import annotations

from asylo.identity.nitro.document import (
    COSE_ALG_ES384,
    COSE_SIGN1_TAG,
    MAX_DOCUMENT_SIZE,
    MAX_NONCE_SIZE,
    MAX_PUBLIC_KEY_SIZE,
    MAX_USER_DATA_SIZE,
    PCR_SIZE,
    AttestationDocument,
    decode_document_file,
    parse_document,
)
from asylo.identity.nitro.nsm import (
    NSM_DEVICE,
    NSM_IOCTL_RAW,
    NSM_REQUEST_MAX_SIZE,
    NSM_RESPONSE_MAX_SIZE,
    NitroSecureModule,
    decode_attestation_response,
    encode_attestation_request,
)
from asylo.identity.nitro.verifier import (
    AWS_NITRO_ROOT_G1_SHA256,
    AWS_NITRO_ROOTS,
    DEFAULT_MAX_AGE,
    MAX_CLOCK_SKEW,
    NITRO_KIND,
    NitroLaunchIdentity,
    NitroPcrs,
    NitroQuoteVerifier,
)

__all__ = [
    "AWS_NITRO_ROOTS",
    "AWS_NITRO_ROOT_G1_SHA256",
    "COSE_ALG_ES384",
    "COSE_SIGN1_TAG",
    "DEFAULT_MAX_AGE",
    "MAX_CLOCK_SKEW",
    "MAX_DOCUMENT_SIZE",
    "MAX_NONCE_SIZE",
    "MAX_PUBLIC_KEY_SIZE",
    "MAX_USER_DATA_SIZE",
    "NITRO_KIND",
    "NSM_DEVICE",
    "NSM_IOCTL_RAW",
    "NSM_REQUEST_MAX_SIZE",
    "NSM_RESPONSE_MAX_SIZE",
    "PCR_SIZE",
    "AttestationDocument",
    "NitroLaunchIdentity",
    "NitroPcrs",
    "NitroQuoteVerifier",
    "NitroSecureModule",
    "decode_attestation_response",
    "decode_document_file",
    "encode_attestation_request",
    "parse_document",
]
