"""Transport credentials for the remote backend: TLS from PEM files, plaintext only on loopback.

The session layer seals every payload end to end, but the gRPC stream itself still carries the session token and the
handshake, and an on-path attacker can always cut or stall it. So the rule is simple and enforced here, not left to
callers: a channel or a listening port without TLS is refused unless its address is loopback. Certificates come from
files; `asylo dev-ca` makes a throwaway CA and certificates for tests and demos.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from asylo._files import read_bounded
from asylo.status import FailedPreconditionError, InvalidArgumentError

__all__ = ["ChannelOption", "ClientCredentials", "ServerCredentials", "is_loopback_address"]

ChannelOption = tuple[str, str | int]

# Certificates and keys are small; a bound keeps a mistaken path (a disk image, /dev/zero) from being read whole.
_MAX_PEM_FILE_SIZE = 1 << 20

_HOW_TO_ENABLE_TLS = (
    "use TLS: ClientCredentials.tls(ca_file, cert_file=..., key_file=...) on the client and "
    "ServerCredentials.tls(cert_file, key_file, client_ca_file=...) on the server; "
    "`asylo dev-ca --out DIR` makes a development CA and certificates for tests"
)


def is_loopback_address(target: str) -> bool:
    """True if a gRPC target or listen address can only reach this machine over loopback.

    Understands "host:port", "[v6]:port", a bare IP, "localhost:port", and the "dns:", "dns:///", "ipv4:" and
    "ipv6:" schemes (every address of an ipv4:/ipv6: list must be loopback). Loopback means 127.0.0.0/8, ::1
    (also as ::ffff:127.x.x.x) and the literal name "localhost"; no name is ever resolved, so any other name is
    not loopback, and neither are wildcard listen addresses ("0.0.0.0", "[::]", ":port"), Unix sockets, or anything
    that does not parse. When in doubt the answer is False, which only ever means "TLS is required".
    """
    try:
        return _target_is_loopback(target)
    except ValueError:
        return False


def _target_is_loopback(target: str) -> bool:
    scheme, colon, rest = target.partition(":")
    if colon and scheme in ("ipv4", "ipv6"):
        # gRPC's static resolvers: a comma-separated list of literal addresses, no names.
        version = 4 if scheme == "ipv4" else 6
        return all(_host_port_is_loopback(item, ip_version=version) for item in rest.split(","))
    if colon and scheme == "dns":
        if rest.startswith("//"):
            authority, slash, rest = rest[2:].partition("/")
            # A named DNS server could answer anything, even for "localhost".
            if authority or not slash:
                return False
        return _host_port_is_loopback(rest)
    # Everything else gRPC treats as "dns:///<target>" unless it is a scheme it knows (unix:, xds:, ...); those
    # fail to parse as host:port below and so are not loopback.
    return _host_port_is_loopback(target)


def _host_port_is_loopback(host_port: str, *, ip_version: int | None = None) -> bool:
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            raise ValueError("unterminated '['")
        host, after = host_port[1:end], host_port[end + 1 :]
        if after:
            if not after.startswith(":"):
                raise ValueError("junk after ']'")
            _check_port(after[1:])
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(host)
    elif host_port.count(":") > 1:
        address = ipaddress.IPv6Address(host_port)  # a bare IPv6 address, no port
    else:
        host, colon, port = host_port.partition(":")
        if colon:
            _check_port(port)
        if ip_version is None and host.lower() == "localhost":
            return True
        address = ipaddress.ip_address(host)
    if ip_version is not None and address.version != ip_version:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _check_port(port: str) -> None:
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"bad port {port!r}")


@dataclass(frozen=True)
class ClientCredentials:
    """How the host authenticates the proxy (and, for mutual TLS, itself) on a gRPC channel.

    Build one with `tls(...)` (certificates from files) or `insecure_loopback()`. `root_certificates` None means
    gRPC's default trust store; `private_key` and `certificate_chain` (a client certificate for mutual TLS) come
    together or not at all; `server_name_override` is the name checked against the server's certificate when it
    differs from the target's host. Insecure credentials carry no TLS material and refuse non-loopback targets.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = None
    server_name_override: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.insecure and any(
            value is not None
            for value in (self.root_certificates, self.private_key, self.certificate_chain, self.server_name_override)
        ):
            raise InvalidArgumentError("insecure client credentials cannot carry TLS certificates, keys or names")
        if (self.private_key is None) != (self.certificate_chain is None):
            raise InvalidArgumentError("a client private key and certificate chain must be given together")

    @classmethod
    def insecure_loopback(cls) -> ClientCredentials:
        """Plaintext gRPC, for a proxy on this machine only (`check_target` refuses any other address)."""
        return cls(insecure=True)

    @classmethod
    def tls(
        cls,
        ca_file: str | os.PathLike[str] | None,
        *,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> ClientCredentials:
        """TLS that trusts the CA certificates in `ca_file` (None: gRPC's default roots).

        `cert_file` and `key_file` (PEM, unencrypted key) present a client certificate for mutual TLS; give both
        or neither. `server_name` is the name to verify in the server's certificate instead of the target's host.
        Files are read and checked now, so a wrong path fails here with its name rather than as a handshake error.
        """
        if (cert_file is None) != (key_file is None):
            raise InvalidArgumentError(
                "cert_file and key_file must be given together (both for mutual TLS, or neither)"
            )
        root = _read_certificates(ca_file, "CA certificate") if ca_file is not None else None
        key = chain = None
        if cert_file is not None and key_file is not None:
            chain, key = _read_key_pair(cert_file, key_file, "client")
        if server_name is not None and not server_name:
            raise InvalidArgumentError("server_name must not be empty")
        return cls(root_certificates=root, private_key=key, certificate_chain=chain, server_name_override=server_name)

    @property
    def mutual(self) -> bool:
        """True if these credentials present a client certificate."""
        return self.certificate_chain is not None

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC SSL channel credentials; insecure credentials have none and raise FailedPreconditionError."""
        if self.insecure:
            raise FailedPreconditionError("insecure client credentials have no gRPC channel credentials")
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)

    def channel_options(self) -> list[ChannelOption]:
        """Channel arguments these credentials need (the TLS target name override, if any)."""
        if self.server_name_override is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]

    def ssl_context(self) -> ssl.SSLContext:
        """The same TLS as `channel_credentials`, for the direct stream (Python's `ssl`): the server's certificate
        checked against `root_certificates` (the system's roots when None) and its name against the target's host
        or `server_name_override`; TLS 1.2 at least; the client certificate for mutual TLS."""
        if self.insecure:
            raise FailedPreconditionError("insecure client credentials have no TLS context")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.root_certificates is not None:
            context.load_verify_locations(cadata=self.root_certificates.decode("ascii"))
        if self.private_key is not None and self.certificate_chain is not None:
            _load_key_pair(context, self.certificate_chain, self.private_key)
        return context

    def check_target(self, target: str) -> None:
        """Raise FailedPreconditionError if these credentials are insecure and `target` is not loopback."""
        if self.insecure and not is_loopback_address(target):
            raise FailedPreconditionError(
                f"refusing plaintext gRPC to {target!r}: insecure credentials are allowed only on loopback "
                f"(127.0.0.0/8, ::1, localhost); {_HOW_TO_ENABLE_TLS}"
            )

    def open_channel(self, target: str, options: Sequence[ChannelOption] = ()) -> grpc.aio.Channel:
        """An asyncio gRPC channel to `target`, checked first (nothing is sent if the check fails).

        `options` are added to `channel_options()`; where both set the same key, the caller's value wins.
        """
        merged = self._checked_options(target, options)
        if self.insecure:
            return grpc.aio.insecure_channel(target, options=merged)
        return grpc.aio.secure_channel(target, self.channel_credentials(), options=merged)

    def open_blocking_channel(self, target: str, options: Sequence[ChannelOption] = ()) -> grpc.Channel:
        """A synchronous gRPC channel to `target`, checked as `open_channel` checks (for short unary RPCs)."""
        merged = self._checked_options(target, options)
        if self.insecure:
            return grpc.insecure_channel(target, options=merged)
        return grpc.secure_channel(target, self.channel_credentials(), options=merged)

    def _checked_options(self, target: str, options: Sequence[ChannelOption]) -> list[ChannelOption]:
        self.check_target(target)
        return list({**dict(self.channel_options()), **dict(options)}.items())


@dataclass(frozen=True)
class ServerCredentials:
    """How a proxy or provision server authenticates itself (and, with `client_ca`, its clients).

    TLS needs `private_key` and `certificate_chain`. With `client_ca` set the server runs mutual TLS and REQUIRES a
    client certificate issued by one of those CAs. Insecure credentials carry no TLS material and refuse to listen
    on anything but loopback.
    """

    insecure: bool = False
    private_key: bytes | None = field(default=None, repr=False)
    certificate_chain: bytes | None = None
    client_ca: bytes | None = None

    def __post_init__(self) -> None:
        material = (self.private_key, self.certificate_chain, self.client_ca)
        if self.insecure and any(value is not None for value in material):
            raise InvalidArgumentError("insecure server credentials cannot carry TLS certificates or keys")
        if not self.insecure and (self.private_key is None or self.certificate_chain is None):
            raise InvalidArgumentError("TLS server credentials need a private key and a certificate chain")

    @classmethod
    def insecure_loopback(cls) -> ServerCredentials:
        """Plaintext gRPC, for listening on loopback only (`check_listen_address` refuses any other address)."""
        return cls(insecure=True)

    @classmethod
    def tls(
        cls,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        *,
        client_ca_file: str | os.PathLike[str] | None = None,
    ) -> ServerCredentials:
        """TLS with the server certificate chain and unencrypted key from PEM files.

        With `client_ca_file`, clients must present a certificate issued by a CA in that file (mutual TLS).
        Files are read and checked now, so a wrong path fails here with its name.
        """
        chain, key = _read_key_pair(cert_file, key_file, "server")
        client_ca = _read_certificates(client_ca_file, "client CA certificate") if client_ca_file is not None else None
        return cls(private_key=key, certificate_chain=chain, client_ca=client_ca)

    @staticmethod
    def check_files(cert_file: str | os.PathLike[str] | None, key_file: str | os.PathLike[str] | None,
                    client_ca_file: str | os.PathLike[str] | None = None) -> None:
        """InvalidArgumentError unless the files given make sense together: a certificate and its key, or neither;
        a client CA only with them. (Checked before anything is read, so a command can refuse its flags early.)"""
        if (cert_file is None) != (key_file is None) or (client_ca_file is not None and cert_file is None):
            raise InvalidArgumentError("the TLS certificate and key go together, and a client CA needs them")

    @classmethod
    def from_files(cls, cert_file: str | os.PathLike[str] | None, key_file: str | os.PathLike[str] | None,
                   client_ca_file: str | os.PathLike[str] | None = None) -> ServerCredentials:
        """`tls` with these files, or `insecure_loopback` when none is given (`check_files` first)."""
        cls.check_files(cert_file, key_file, client_ca_file)
        if cert_file is None or key_file is None:
            return cls.insecure_loopback()
        return cls.tls(cert_file, key_file, client_ca_file=client_ca_file)

    @property
    def mutual(self) -> bool:
        """True if clients must present a certificate."""
        return self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        """gRPC SSL server credentials; insecure credentials have none and raise FailedPreconditionError."""
        if self.insecure or self.private_key is None or self.certificate_chain is None:
            raise FailedPreconditionError("insecure server credentials have no gRPC server credentials")
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The same TLS as `server_credentials`, for the direct stream (Python's `ssl`): this certificate chain
        and key, TLS 1.2 at least, and with `client_ca` a client certificate from one of those CAs required."""
        if self.insecure or self.private_key is None or self.certificate_chain is None:
            raise FailedPreconditionError("insecure server credentials have no TLS context")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_key_pair(context, self.certificate_chain, self.private_key)
        if self.client_ca is not None:
            context.load_verify_locations(cadata=self.client_ca.decode("ascii"))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def check_listen_address(self, address: str) -> None:
        """Raise FailedPreconditionError if these credentials are insecure and `address` is not loopback.

        Wildcard addresses ("0.0.0.0:port", "[::]:port", ":port") listen on every interface and are not loopback.
        """
        if self.insecure and not is_loopback_address(address):
            raise FailedPreconditionError(
                f"refusing to listen without TLS on {address!r}: plaintext gRPC is allowed only on loopback "
                f"(127.0.0.0/8, ::1, localhost); {_HOW_TO_ENABLE_TLS}"
            )

    def add_port(self, server: grpc.aio.Server, address: str) -> int:
        """Check `address`, bind it on `server` with these credentials, and return the bound port.

        Port 0 in `address` picks a free port; the one chosen is returned. A failed bind (address in use, not an
        address of this host) raises FailedPreconditionError instead of gRPC's bare RuntimeError or port 0.
        """
        self.check_listen_address(address)
        failure: RuntimeError | None = None
        try:
            if self.insecure:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self.server_credentials())
        except RuntimeError as exc:  # grpcio raises this when the core reports port 0
            port, failure = 0, exc
        if port == 0:
            raise FailedPreconditionError(
                f"could not listen on {address!r}: the address is in use, malformed, or not an address of this host"
            ) from failure
        return int(port)


def _read_pem_file(path: str | os.PathLike[str], what: str) -> tuple[Path, bytes]:
    return read_bounded(path, _MAX_PEM_FILE_SIZE, what, InvalidArgumentError)


def _read_certificates(path: str | os.PathLike[str], what: str) -> bytes:
    file, data = _read_pem_file(path, what)
    _parse_certificates(file, data, what)
    return data


def _parse_certificates(file: Path, data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"{file}: not a PEM {what} file (expected '-----BEGIN CERTIFICATE-----' blocks)"
        ) from exc


def _read_key_pair(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str], role: str
) -> tuple[bytes, bytes]:
    """Read a certificate chain and its private key, and check that the key belongs to the first certificate."""
    cert_path, chain = _read_pem_file(cert_file, f"{role} certificate")
    certificates = _parse_certificates(cert_path, chain, f"{role} certificate")
    key_path, key_data = _read_pem_file(key_file, f"{role} private key")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError as exc:  # cryptography's way of saying "encrypted, and no password given"
        raise InvalidArgumentError(
            f"{key_path}: {role} private key is encrypted; gRPC needs an unencrypted key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidArgumentError(
            f"{key_path}: not a PEM {role} private key (expected '-----BEGIN ... PRIVATE KEY-----')"
        ) from exc
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certificates[0].public_key().public_bytes(*spki):
        raise InvalidArgumentError(f"{key_path}: {role} private key does not match the certificate in {cert_path}")
    return chain, key_data


def _load_key_pair(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """Give `context` a certificate chain and key held in memory. Python's `ssl` loads them only from files, so they
    go through anonymous memory files (memfd: no name in any directory, gone when closed), never the disk."""
    with _memory_file(chain, "asylo-tls-chain") as chain_path, _memory_file(key, "asylo-tls-key") as key_path:
        context.load_cert_chain(chain_path, key_path)


@contextlib.contextmanager
def _memory_file(data: bytes, name: str) -> Iterator[str]:
    descriptor = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        with open(descriptor, "wb", closefd=False) as file:  # writes it all (os.write may write part)
            file.write(data)
        yield f"/proc/self/fd/{descriptor}"
    finally:
        os.close(descriptor)
