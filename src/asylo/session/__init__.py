"""The sans-I/O session core: frames in, events out; frames to send out of calls to make.

A `Session` is the protocol between a host and the proxy that hosts its enclave, as a pure state machine in the
manner of h11 and h2: it opens no socket and imports no gRPC, so it is tested and fuzzed with plain bytes, and the
gRPC adapter (`asylo.remote`) only moves its frames. It enforces every rule of the protocol — the handshake order,
call ids, thread matching, fragment reassembly, the limits — and any violation ends the session with an error.
"""

from asylo.session.connection import (
    PROTOCOL_VERSION,
    HelloReceived,
    PeerUnresponsive,
    Role,
    Session,
    SessionEnded,
    SessionState,
    WelcomeReceived,
)
from asylo.session.limits import SessionLimits

__all__ = [
    "PROTOCOL_VERSION",
    "HelloReceived",
    "PeerUnresponsive",
    "Role",
    "Session",
    "SessionEnded",
    "SessionLimits",
    "SessionState",
    "WelcomeReceived",
]
