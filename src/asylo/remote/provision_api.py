"""What the provision server, its clients and its proxies agree on, kept in one place that imports no server code.

The client (`asylo.remote.provision_client`) must not import the server package (a host installs no server), and a
proxy (`asylo.remote.server`) must not either; yet all three must spell the service name, and the server and its
proxies must name a client certificate, the same way. So both live here.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from asylo.proto import provision_pb2

#: The full name of the gRPC service in asylo/proto/provision.proto ("asylo.provision.ProvisionService"), taken from
#: the compiled descriptor so that it cannot drift from the .proto file.
PROVISION_SERVICE: str = provision_pb2.DESCRIPTOR.services_by_name["ProvisionService"].full_name

#: A certificate fingerprint: SHA-256 of the DER encoding, 32 bytes (64 hex digits on a command line).
CERTIFICATE_SHA256_SIZE = 32


def certificate_sha256(certificate: x509.Certificate) -> bytes:
    """The fingerprint of a certificate: SHA-256 of its DER encoding. A mutual-TLS client's identity on the
    provision server, and what a provisioned proxy checks its one client's certificate against."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()


def peer_certificate(auth_context: object) -> x509.Certificate | None:
    """The client certificate of a gRPC call, from a grpc.aio context's `auth_context()` (a mapping of bytes
    lists); None without one (plaintext, TLS without client certificates) or if it does not parse."""
    if not isinstance(auth_context, dict):
        return None
    pem = auth_context.get("x509_pem_cert")
    if not pem:
        return None
    try:
        return x509.load_pem_x509_certificate(pem[0])
    except (ValueError, TypeError):
        return None
