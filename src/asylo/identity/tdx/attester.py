"""The TDX attester: a quote over the runtime binding from configfs-tsm, with the DCAP collateral to verify it by.

The host verifies the quote offline, so the collateral travels with it. The operator gives the proxy either a
collateral file (fetched beforehand, say with dcap-qvl's tools) or the URL of their PCCS, which the proxy asks and
caches (asylo.identity.tdx.collateral). The PCK certificate chain is inside the quote itself.
"""

from __future__ import annotations

from asylo.identity.configfs_tsm import ConfigfsTsm
from asylo.identity.launch import Endorsements
from asylo.identity.tdx.collateral import CollateralSource

KIND = "tdx"


class TdxAttester:
    """Makes TDX evidence inside a trust domain (a `QuoteAttester`)."""

    kind = KIND

    def __init__(self, tsm: ConfigfsTsm, collateral: CollateralSource) -> None:
        self._tsm = tsm
        self._collateral = collateral

    def attest(self, report_data: bytes) -> tuple[bytes, Endorsements]:
        quote = self._tsm.report(report_data).outblob
        return quote, Endorsements(collateral=self._collateral.collateral_for(quote))

    def __repr__(self) -> str:
        return f"TdxAttester({self._tsm!r}, {self._collateral!r})"
