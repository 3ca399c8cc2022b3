"""The two ways session frames travel between a host and its proxy, by name.

- "direct" (the default): length-prefixed records on one TCP, TLS or AF_VSOCK socket, no event loop on the data path
  (`asylo.remote.direct_client`, `asylo.remote.direct_server`). The fastest, and the only one a Nitro Enclave can
  use (vsock).
- "grpc": one gRPC bidirectional stream (`asylo.remote.client`, `asylo.remote.server`), for networks that pass only
  HTTP/2.

Both carry the same session (`asylo.session`), with the same credentials, certificate files and loopback rule.

`ASYLO_TRANSPORT` in the environment changes the default for everything that takes one (local provisioning,
`asylo proxy`, `asylo provision-server`, `asylo quickstart`): one switch for a network that passes only HTTP/2.
"""

from __future__ import annotations

import os
from typing import Literal

from asylo.status import InvalidArgumentError

Transport = Literal["direct", "grpc"]
TRANSPORTS: tuple[Transport, ...] = ("direct", "grpc")
DEFAULT_TRANSPORT: Transport = "direct"
#: The environment variable that overrides DEFAULT_TRANSPORT (see `default_transport`).
TRANSPORT_ENV = "ASYLO_TRANSPORT"


def default_transport() -> Transport:
    """$ASYLO_TRANSPORT if set (InvalidArgumentError if it names no transport), else DEFAULT_TRANSPORT."""
    value = os.environ.get(TRANSPORT_ENV)
    return DEFAULT_TRANSPORT if not value else check_transport(value)


def check_transport(name: str) -> Transport:
    """`name` if it is a transport (InvalidArgumentError naming the choices otherwise)."""
    if name not in TRANSPORTS:
        raise InvalidArgumentError(f"unknown transport {name!r}: choose {' or '.join(TRANSPORTS)}")
    return name
