"""What the host checks of the proxy's first answer, whichever transport carried it.

The first frame back is the welcome (with its evidence, verified by the session's handshake before it is an event)
or a goodbye saying why not. Either way the host must decide the same things: did attestation fail, is this the
enclave it asked for, and which identity does it now talk to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asylo.identity import EnclaveIdentity
from asylo.session import Session, SessionEnded, WelcomeReceived
from asylo.status import AsyloError, AttestationError, InternalError, PermissionDeniedError, StatusCode, error_for


@dataclass(frozen=True)
class Welcomed:
    """Whom the host is talking to: the enclave's identity as its evidence proved it (None for an unattested
    session), and its measurement and signer (from that identity when there is one)."""

    identity: EnclaveIdentity | None
    measurement: bytes
    signer: bytes


def check_welcome(events: Sequence[object], session: Session, expected_measurement: bytes | None,
                  context: str) -> Welcomed:
    """The welcome among `events` (what the session made of the proxy's first frame), checked; raises the
    AsyloError that says why not: AttestationError when the evidence failed, the proxy's own code when it refused
    (a goodbye), PermissionDeniedError for another enclave than `expected_measurement`."""
    if len(events) != 1 or not isinstance(events[0], WelcomeReceived):
        raise _refusal(events, context)
    welcome = events[0]
    if isinstance(welcome.identity, EnclaveIdentity):
        # Proven by the platform's evidence; the welcome's own fields are the proxy's word only.
        welcomed = Welcomed(welcome.identity, welcome.identity.measurement, welcome.identity.signer)
    elif session.encrypted:
        raise InternalError(f"{context}: the handshake's verifier did not return an EnclaveIdentity")
    else:
        welcomed = Welcomed(None, welcome.measurement, welcome.signer)
    if expected_measurement is not None and welcomed.measurement != expected_measurement:
        raise PermissionDeniedError(f"{context}: the proxy hosts an enclave with measurement "
                                    f"{welcomed.measurement.hex()}, not the requested {expected_measurement.hex()}")
    return welcomed


def _refusal(events: Sequence[object], context: str) -> AsyloError:
    ended = next((e for e in events if isinstance(e, SessionEnded)), None)
    if ended is None:
        return InternalError(f"{context}: the proxy did not welcome us")
    if ended.status.code is StatusCode.UNAUTHENTICATED and not ended.by_peer:
        return AttestationError(f"{context}: {ended.status.message}")
    if ended.by_peer:  # the proxy's goodbye: its refusal, with its code (the direct stream's way of saying no)
        return error_for(ended.status.code, f"{context}: {ended.status.message}")
    return InternalError(f"{context}: {ended.status}")
