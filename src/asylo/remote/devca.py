"""A throwaway development CA: certificates for trying TLS and mutual TLS between a host and a proxy.

`create_dev_ca` writes a CA, a server certificate for the given hosts and a client certificate, each with its key,
so tests and demos can run the remote backend with real TLS. Every subject says it is not for production: the CA
key sits next to the certificates it signed, unprotected, which is exactly what a real CA must never do.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asylo._files import write_new_file
from asylo.status import AlreadyExistsError, InvalidArgumentError

__all__ = ["DEV_CA_NAME", "DevCaFiles", "create_dev_ca"]

DEV_CA_NAME = "asylo development CA — not for production"
DEV_SERVER_NAME = "asylo-dev-server"
DEV_CLIENT_NAME = "asylo-dev-client"

# Leaves may be backdated a little: a peer whose clock is slightly behind must not see a "not yet valid" certificate.
_CLOCK_SKEW = datetime.timedelta(minutes=5)
_MAX_DAYS = 3650


@dataclass(frozen=True)
class DevCaFiles:
    """The six PEM files `create_dev_ca` writes (keys are mode 0600, certificates 0644)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike[str]) -> DevCaFiles:
        """The paths `create_dev_ca(out_dir)` writes (whether or not they exist yet)."""
        base = Path(out_dir)
        return cls(
            ca_cert=base / "ca.pem",
            ca_key=base / "ca.key",
            server_cert=base / "server.pem",
            server_key=base / "server.key",
            client_cert=base / "client.pem",
            client_key=base / "client.key",
        )

    def paths(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.ca_key, self.server_cert, self.server_key, self.client_cert, self.client_key)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths())


def create_dev_ca(
    out_dir: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    days: int = 30,
    overwrite: bool = False,
) -> DevCaFiles:
    """Make a development CA, a server certificate for `hosts` and a client certificate in `out_dir`.

    `out_dir` is created with mode 0700 if missing. Each host becomes a subjectAltName: an IP address if it parses
    as one (brackets allowed: "[::1]"), else a DNS name. Keys are EC P-256, written with mode 0600 from the start;
    certificates are valid for `days` days. Existing files are refused (AlreadyExistsError) unless `overwrite`,
    which replaces each file atomically.
    """
    if isinstance(days, bool) or not 1 <= days <= _MAX_DAYS:
        raise InvalidArgumentError(f"days must be between 1 and {_MAX_DAYS}, not {days!r}")
    if isinstance(hosts, str):
        hosts = (hosts,)  # a lone string would otherwise be taken as a sequence of one-letter host names
    alt_names = _subject_alt_names(hosts)
    files = DevCaFiles.in_dir(out_dir)
    if not overwrite:
        existing = [str(path) for path in files if os.path.lexists(path)]
        if existing:
            raise AlreadyExistsError(
                f"refusing to overwrite existing files: {', '.join(existing)} "
                "(pass overwrite=True, or --force to `asylo dev-ca`)"
            )

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - _CLOCK_SKEW, now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(DEV_CA_NAME)
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf(
        ca_cert, ca_key, server_key, common_name=DEV_SERVER_NAME, usage=ExtendedKeyUsageOID.SERVER_AUTH,
        not_before=not_before, not_after=not_after, alt_names=alt_names,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _leaf(
        ca_cert, ca_key, client_key, common_name=DEV_CLIENT_NAME, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        not_before=not_before, not_after=not_after, alt_names=[x509.DNSName(DEV_CLIENT_NAME)],
    )

    base = Path(out_dir)
    if not base.exists():
        base.mkdir(mode=0o700, parents=True)
        base.chmod(0o700)  # mkdir's mode is filtered by the umask; make it exactly 0700
    contents = [
        (files.ca_cert, _cert_pem(ca_cert), 0o644),
        (files.ca_key, _key_pem(ca_key), 0o600),
        (files.server_cert, _cert_pem(server_cert), 0o644),
        (files.server_key, _key_pem(server_key), 0o600),
        (files.client_cert, _cert_pem(client_cert), 0o644),
        (files.client_key, _key_pem(client_key), 0o600),
    ]
    written: list[Path] = []
    try:
        for path, data, mode in contents:
            _write_file(path, data, mode, overwrite=overwrite)
            written.append(path)
    except FileExistsError as exc:
        _remove(written)
        raise AlreadyExistsError(
            f"{exc.filename}: appeared while writing the development CA; refusing to overwrite it"
        ) from exc
    except BaseException:
        _remove(written)
        raise
    return files


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise InvalidArgumentError("at least one host is needed for the server certificate")
    names: list[x509.GeneralName] = []
    for host in hosts:
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(bare)))
            continue
        except ValueError:
            pass
        if not bare or not bare.isascii() or any(c.isspace() or c in "/:[]@" for c in bare):
            raise InvalidArgumentError(f"{host!r} is neither an IP address nor a DNS name")
        names.append(x509.DNSName(bare.lower()))
    return names


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_CA_NAME),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=key_cert_sign, encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    alt_names: list[x509.GeneralName],
) -> x509.Certificate:
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    if not overwrite:
        write_new_file(path, data, mode)
        return
    # Write beside the target and rename over it: a reader sees the old file or the new one, never half of one,
    # and a key never exists with a wider mode than 0600.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    write_new_file(temporary, data, mode)
    try:
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _remove(paths: list[Path]) -> None:
    # A half-written set is worse than none: a server key whose certificate is missing, or a certificate signed by a
    # CA whose files were never written.
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()
