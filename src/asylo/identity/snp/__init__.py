"""AMD SEV-SNP: verifying a confidential VM's attestation report offline, and expectations on its launch.

    verifier = SnpQuoteVerifier()                              # AMD's Milan, Genoa and Turin ARKs pinned
    launch = verifier.verify(report, Endorsements(certificates=(vcek_der,)))   # ASK/ARK from the bundled chains
    SnpLaunch(measurement, min_tcb=SnpTcb(bootloader=3, tee=0, snp=8, microcode=115)).launch_mismatch(launch)

A VLEK-signed report (KEY_INFO SIGNING_KEY 1, as AWS EC2's shared-tenancy instances make) is verified the same
way with its VLEK certificate in place of the VCEK (the ASVK/ARK come from the bundled VLEK chains); the launch
then has `signing_key` "vlek" and the VLEK's `csp_id`.

`report` parses the 1184-byte ATTESTATION_REPORT (`parse_report`, `decode_report_file` for report files as tools
write them); `certs` holds the pinned roots, the bundled AMD chains (ASK/ARK and ASVK/ARK), the VCEK's and VLEK's
extensions and the hypervisor's certificate table (`parse_cert_table`, configfs-tsm's auxblob); `verifier` the
`QuoteVerifier`, the verified `SnpLaunchIdentity` and the `SnpLaunch` expectation. It sits in the identity layer:
it imports `asylo.identity` and `asylo.status`, nothing above them.
"""

from __future__ import annotations

from asylo.identity.snp.certs import (
    AMD_ARK_ROOTS,
    ARK_GENOA_SHA256,
    ARK_MILAN_SHA256,
    ARK_TURIN_SHA256,
    BUNDLED_CHAIN_FILES,
    BUNDLED_VLEK_CHAIN_FILES,
    CERT_TABLE_GUIDS,
    MAX_CERT_TABLE_ENTRIES,
    MAX_CERT_TABLE_SIZE,
    VekExtensions,
    build_cert_table,
    cert_table_endorsements,
    parse_cert_table,
    read_vek_extensions,
)
from asylo.identity.snp.report import (
    MAX_REPORT_VERSION,
    MIN_REPORT_VERSION,
    REPORT_SIZE,
    SIGNED_SIZE,
    SnpReport,
    SnpTcb,
    decode_report_file,
    parse_report,
    policy_abi,
    policy_debug,
    policy_migrate_ma,
    policy_single_socket,
    policy_smt,
)
from asylo.identity.snp.verifier import SnpLaunch, SnpLaunchIdentity, SnpQuoteVerifier

__all__ = [
    "AMD_ARK_ROOTS",
    "ARK_GENOA_SHA256",
    "ARK_MILAN_SHA256",
    "ARK_TURIN_SHA256",
    "BUNDLED_CHAIN_FILES",
    "BUNDLED_VLEK_CHAIN_FILES",
    "CERT_TABLE_GUIDS",
    "MAX_CERT_TABLE_ENTRIES",
    "MAX_CERT_TABLE_SIZE",
    "MAX_REPORT_VERSION",
    "MIN_REPORT_VERSION",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "SnpLaunch",
    "SnpLaunchIdentity",
    "SnpQuoteVerifier",
    "SnpReport",
    "SnpTcb",
    "VekExtensions",
    "build_cert_table",
    "cert_table_endorsements",
    "decode_report_file",
    "parse_cert_table",
    "parse_report",
    "policy_abi",
    "policy_debug",
    "policy_migrate_ma",
    "policy_single_socket",
    "policy_smt",
    "read_vek_extensions",
]
