"""The proxy side of DCAP: where the collateral that travels beside a TDX or SGX quote comes from.

The host verifies offline, so the machine that makes the quote must send the collateral with it: TCB info, QE
identity, CRLs and their issuer chains, all signed by Intel, for the quote's platform (its FMSPC and PCK CA)
and TEE. Either the operator gives the proxy a collateral JSON file (`--collateral FILE`; what dcap-qvl's
`QuoteCollateralV3.to_json` writes), or the proxy fetches it from a PCCS (Intel's caching service, run in the
data centre, or Intel's PCS itself) and keeps it for a while.

Nothing here decides trust: the collateral is signed, the host checks every signature, chain and date. The
proxy's checks only turn an operator's mistake (a file for another platform, a URL that is not a PCCS) into a
clear message at the proxy rather than a refusal at the host.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import os
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import dcap_qvl

from asylo._files import read_bounded
from asylo.identity.tdx.quote import MAX_COLLATERAL_SIZE, MAX_QUOTE_SIZE
from asylo.identity.tdx.verifier import dcap_error_text, parse_collateral
from asylo.status import AttestationError, InvalidArgumentError

#: How long fetched collateral is reused. TCB info and QE identity are good for 30 days from their issue (the
#: samples' nextUpdate), but Intel publishes TCB recoveries and revocations in between; an hour keeps the proxy
#: at most an hour behind those while asking the PCCS once an hour per platform rather than once per quote.
DEFAULT_REFRESH_AFTER = 3600.0
#: The longest reuse allowed: beyond a day a revocation or TCB recovery would reach the hosts too late.
MAX_REFRESH_AFTER = 24 * 3600.0
#: How long one fetch (four requests) may take before the quote is given up on. dcap-qvl's own HTTP client waits
#: up to 180 s a request; a proxy answering a host's handshake cannot wait that long: the host gives the welcome
#: 10 s by default (RemoteProxyClientConfig.connect_timeout), and the quote itself takes some of that.
DEFAULT_FETCH_TIMEOUT = 8.0
MAX_FETCH_TIMEOUT = 180.0
#: Most URLs are far shorter; a bound keeps a mistyped argument (a file's contents) out of logs and requests.
_MAX_URL_LENGTH = 2048
_LOOPBACK_NAMES = frozenset({"localhost"})


class CollateralSource(ABC):
    """Where a proxy gets the DCAP collateral for its quotes: `from_file` or `from_pccs`."""

    @abstractmethod
    def collateral_for(self, quote: bytes) -> bytes:
        """The collateral for `quote` as JSON bytes (dcap-qvl's `QuoteCollateralV3.to_json`), for
        `Endorsements.collateral`; AttestationError saying why there is none."""

    @staticmethod
    def from_file(path: str | os.PathLike[str]) -> CollateralSource:
        """The collateral in the JSON file at `path`, read once (bounded) and checked by parsing it."""
        return FileCollateral(path)

    @staticmethod
    def from_pccs(url: str, *, refresh_after: float = DEFAULT_REFRESH_AFTER,
                  timeout: float = DEFAULT_FETCH_TIMEOUT) -> CollateralSource:
        """Collateral fetched from the PCCS (or Intel PCS) at `url`, https unless the host is loopback, and reused
        for `refresh_after` seconds per platform."""
        return PccsCollateral(url, refresh_after=refresh_after, timeout=timeout)


@dataclass(frozen=True)
class _QuotePlatform:
    """What a quote's collateral depends on, read offline from the quote: its TEE (TDX and SGX have separate TCB
    info and QE identity), its FMSPC (the TCB info is per FMSPC) and its PCK CA (the PCK CRL is per CA). Only a
    quote whose PCK chain is inside it yields one: others need their own PCK certificate from the PCCS."""

    tee: str
    fmspc: str
    ca: str


def _quote_platform(quote: bytes) -> _QuotePlatform | None:
    try:
        parsed = dcap_qvl.parse_quote(quote)
        if parsed.cert_chain_pem_bytes() is None:
            return None
        return _QuotePlatform(parsed.quote_type(), parsed.fmspc().upper(), parsed.ca())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # ValueError, or a Rust panic: no platform to key on, and the fetch says why
        return None


def _without_pck_chain(collateral: bytes) -> bytes:
    """Collateral JSON without the PCK certificate chain dcap-qvl's fetch attaches: what every machine of a
    platform shares, for quotes that carry their own chain."""
    data = json.loads(collateral)
    if not isinstance(data, dict) or "pck_certificate_chain" not in data:
        return collateral
    del data["pck_certificate_chain"]
    return json.dumps(data, indent=2).encode("utf-8")


def _check_quote(quote: object) -> bytes:
    if not isinstance(quote, bytes | bytearray):
        raise InvalidArgumentError(f"a quote is bytes, got {type(quote).__name__}")
    if not quote:
        raise AttestationError("no quote to find collateral for")
    if len(quote) > MAX_QUOTE_SIZE:
        raise AttestationError(f"quote is {len(quote)} bytes, more than any DCAP quote ({MAX_QUOTE_SIZE})")
    return bytes(quote)


class FileCollateral(CollateralSource):
    """Collateral the operator downloaded (or a PCCS fetched earlier) and gave the proxy as a file.

    The same collateral serves every quote, so it fits one platform; a quote from another TEE or FMSPC is refused
    here with both named, rather than by the host with "Fmspc mismatch".
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        file, data = read_bounded(path, MAX_COLLATERAL_SIZE, "DCAP collateral", InvalidArgumentError)
        self.path = file
        if not data:
            raise InvalidArgumentError(f"{file}: the DCAP collateral file is empty")
        try:
            collateral = parse_collateral(data, what=f"{file}")
        except AttestationError as exc:
            raise InvalidArgumentError(exc.message) from None
        self._json = collateral.to_json().encode("utf-8")
        self._json_for_own_chain = _without_pck_chain(self._json)
        self._tee, self._fmspc = self._tcb_platform(file, collateral.tcb_info)

    @staticmethod
    def _tcb_platform(file: os.PathLike[str], tcb_info: str) -> tuple[str, str]:
        # The TCB info's "id" (TDX or SGX) and "fmspc" say which platform the file is for.
        try:
            info = json.loads(tcb_info)
            tee, fmspc = info["id"], info["fmspc"]
        except (ValueError, KeyError, TypeError):
            raise InvalidArgumentError(f"{file}: its tcb_info has no id and fmspc") from None
        if not isinstance(tee, str) or not isinstance(fmspc, str):
            raise InvalidArgumentError(f"{file}: its tcb_info's id and fmspc are not strings")
        return tee.upper(), fmspc.upper()

    def collateral_for(self, quote: bytes) -> bytes:
        platform = _quote_platform(_check_quote(quote))
        if platform is not None and (platform.tee.upper(), platform.fmspc) != (self._tee, self._fmspc):
            raise AttestationError(
                f"the collateral in {self.path} is for {self._tee} FMSPC {self._fmspc}, the quote is from "
                f"{platform.tee} FMSPC {platform.fmspc}: give the proxy this platform's collateral or a PCCS URL")
        # A quote that carries its PCK chain is verified with that chain, not with one a file saved from another
        # machine's fetch (dcap-qvl prefers the collateral's chain when it has one).
        return self._json if platform is None else self._json_for_own_chain

    def __repr__(self) -> str:
        return f"FileCollateral({self.path}, {self._tee} FMSPC {self._fmspc})"


def check_pccs_url(url: object) -> str:
    """`url` without a trailing slash if it can name a PCCS: https, or plain http to a loopback host only (the
    collateral is signed, but a fetch over a network in the clear tells every observer which platform asks, and
    any of them can withhold or stale it); no credentials, query or fragment. InvalidArgumentError if not."""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL_LENGTH:
        raise InvalidArgumentError(f"a PCCS URL is a string of at most {_MAX_URL_LENGTH} characters, got "
                                   f"{type(url).__name__ if not isinstance(url, str) else f'{len(url)} characters'}")
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise InvalidArgumentError(f"PCCS URL {url!r} is not a URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidArgumentError(f"PCCS URL {url!r} must be https://HOST[:PORT][/PATH]")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise InvalidArgumentError(f"PCCS URL {url!r} must have no credentials, query or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise InvalidArgumentError(f"PCCS URL {url!r} is plain http to {host}, which is not loopback: use https "
                                   f"(plain http is only for a PCCS on this machine)")
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_seconds(name: str, value: object, maximum: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= maximum:
        raise InvalidArgumentError(f"{name} must be a number of seconds in (0, {maximum:g}], got {value!r}")
    return float(value)


def _run_blocking(fetch: Callable[[], dcap_qvl.QuoteCollateralV3]) -> dcap_qvl.QuoteCollateralV3:
    """`fetch()` here, or on a worker thread if this thread runs an event loop (an async proxy calling in):
    asyncio.run cannot nest in a running loop, and dcap-qvl's fetch needs a loop of its own to await. The
    calling loop waits meanwhile, as for any blocking call: an async proxy calls `collateral_for` through
    `asyncio.to_thread` to keep serving."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fetch()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcap-collateral") as worker:
        return worker.submit(fetch).result()


class PccsCollateral(CollateralSource):
    """Collateral fetched from a PCCS with dcap-qvl's `get_collateral`, reused per platform.

    dcap-qvl asks, under the URL: /sgx/certification/v4/pckcrl?ca=CA&encoding=der, /{sgx,tdx}/certification/v4/
    tcb?fmspc=FMSPC&update=standard, /{sgx,tdx}/certification/v4/qe/identity?update=standard and (not of Intel's
    PCS) /sgx/certification/v4/rootcacrl, with the issuer chains in response headers, as Intel's PCCS serves them.

    The cache is keyed by the quote's TEE, FMSPC and PCK CA (all the collateral depends on) and an entry is
    fetched again after `refresh_after` seconds. The PCK chain dcap-qvl copies into fetched collateral is left
    out of the cached copy, so one entry serves every machine of a platform (the host then uses each quote's own
    chain). A quote that does not carry its PCK chain needs its own PCK certificate from the PCCS and is fetched
    for every time. `clock` (monotonic seconds) is for tests.
    """

    def __init__(self, url: str, *, refresh_after: float = DEFAULT_REFRESH_AFTER,
                 timeout: float = DEFAULT_FETCH_TIMEOUT, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = check_pccs_url(url)
        self.refresh_after = _check_seconds("refresh_after", refresh_after, MAX_REFRESH_AFTER)
        self.timeout = _check_seconds("timeout", timeout, MAX_FETCH_TIMEOUT)
        self._clock = clock
        self._cache: dict[_QuotePlatform, tuple[float, bytes]] = {}
        # One fetch at a time: quotes arriving together for a cold platform share the first one's fetch.
        self._lock = threading.Lock()

    def collateral_for(self, quote: bytes) -> bytes:
        quote = _check_quote(quote)
        platform = _quote_platform(quote)
        with self._lock:
            if platform is not None:
                cached = self._cache.get(platform)
                if cached is not None and self._clock() - cached[0] < self.refresh_after:
                    return cached[1]
            fetched_at = self._clock()
            collateral = self._fetch(quote)
            if platform is None:
                return collateral
            shared = _without_pck_chain(collateral)  # the quote carries it (that is what made `platform`)
            self._cache[platform] = (fetched_at, shared)
            return shared

    def _fetch(self, quote: bytes) -> bytes:
        async def fetch() -> dcap_qvl.QuoteCollateralV3:
            return await asyncio.wait_for(dcap_qvl.get_collateral(self.url, quote), self.timeout)

        try:
            collateral = _run_blocking(lambda: asyncio.run(fetch()))
            text = collateral.to_json()
        except TimeoutError:
            raise AttestationError(f"fetching DCAP collateral from {self.url} took more than {self.timeout:g} s") \
                from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # ValueError from dcap-qvl, or a Rust panic
            raise AttestationError(f"fetching DCAP collateral from {self.url} failed: {dcap_error_text(exc)}") \
                from None
        data = text.encode("utf-8")
        if len(data) > MAX_COLLATERAL_SIZE:
            raise AttestationError(f"the DCAP collateral from {self.url} is {len(data)} bytes, more than "
                                   f"{MAX_COLLATERAL_SIZE}")
        return data

    def __repr__(self) -> str:
        return f"PccsCollateral({self.url}, refresh after {self.refresh_after:g} s)"

