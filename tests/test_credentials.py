"""Transport credentials and the development CA, against real grpc.aio servers on loopback with real TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from pathlib import Path

import grpc
import grpc.aio
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asylo.cli.devca_command import dev_ca
from asylo.remote.credentials import ClientCredentials, ServerCredentials, is_loopback_address
from asylo.remote.devca import DevCaFiles, create_dev_ca
from asylo.status import AlreadyExistsError, FailedPreconditionError, InvalidArgumentError

RPC_TIMEOUT = 5
# RFC 5737 TEST-NET-1: never routed, and these tests never send anything to it anyway.
NOT_LOOPBACK = "192.0.2.1:50051"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCaFiles:
    return create_dev_ca(tmp_path_factory.mktemp("ca") / "dev-ca")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> DevCaFiles:
    return create_dev_ca(tmp_path_factory.mktemp("other-ca"))


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return b"echo:" + request


async def _call_echo(
    server_credentials: ServerCredentials,
    client_credentials: ClientCredentials,
    *,
    host: str = "localhost",
    listen: str = "127.0.0.1:0",
) -> bytes:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}),)
    )
    port = server_credentials.add_port(server, listen)
    await server.start()
    try:
        async with client_credentials.open_channel(f"{host}:{port}") as channel:
            call = channel.unary_unary("/test.Echo/Echo")
            response: bytes = await call(b"hi", timeout=RPC_TIMEOUT)
            return response
    finally:
        await server.stop(None)


def echo(server_credentials: ServerCredentials, client_credentials: ClientCredentials, **kwargs: str) -> bytes:
    return asyncio.run(_call_echo(server_credentials, client_credentials, **kwargs))


def assert_rpc_fails(server_credentials: ServerCredentials, client_credentials: ClientCredentials) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        echo(server_credentials, client_credentials)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


# --- is_loopback_address -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:1", True),
        ("127.5.5.5:1", True),
        ("[::1]:1", True),
        ("localhost:1", True),
        ("LocalHost:1", True),
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("[::ffff:127.0.0.1]:1", True),
        ("ipv4:127.0.0.1:5", True),
        ("ipv4:127.0.0.1:5,127.0.0.2:6", True),
        ("ipv6:[::1]:5", True),
        ("dns:localhost:5", True),
        ("dns:///localhost:5", True),
        ("dns:///127.0.0.1:5", True),
        ("10.0.0.1:1", False),
        ("0.0.0.0:1", False),
        ("[::]:1", False),
        (":1", False),
        ("example.com:1", False),
        ("localhost.example.com:1", False),
        ("ipv4:127.0.0.1:5,10.0.0.1:6", False),
        ("ipv4:localhost:5", False),
        ("ipv6:127.0.0.1:5", False),
        ("dns://8.8.8.8/localhost:5", False),
        ("unix:/tmp/socket", False),
        ("127.0.0.1:99999", False),
        ("127.0.0.1:", False),
        ("127.0.0.1:x", False),
        ("[::1", False),
        ("[::1]x", False),
        ("127.1:1", False),
        ("", False),
        ("garbage", False),
    ],
)
def test_is_loopback_address(target: str, expected: bool) -> None:
    assert is_loopback_address(target) is expected


# --- insecure only on loopback ------------------------------------------------------------------------------------


def test_insecure_client_refuses_non_loopback_before_making_a_channel() -> None:
    credentials = ClientCredentials.insecure_loopback()
    with pytest.raises(FailedPreconditionError) as info:
        credentials.open_channel(NOT_LOOPBACK)
    message = str(info.value)
    assert "TLS" in message
    assert "ClientCredentials.tls(" in message
    assert "asylo dev-ca" in message
    with pytest.raises(FailedPreconditionError):
        credentials.check_target("example.com:443")
    credentials.check_target("127.0.0.1:1")  # loopback passes


def test_server_credentials_from_files(ca: DevCaFiles) -> None:
    assert ServerCredentials.from_files(None, None) == ServerCredentials.insecure_loopback()
    assert not ServerCredentials.from_files(ca.server_cert, ca.server_key).mutual
    assert ServerCredentials.from_files(ca.server_cert, ca.server_key, ca.ca_cert).mutual
    for files in ((ca.server_cert, None, None), (None, ca.server_key, None), (None, None, ca.ca_cert)):
        with pytest.raises(InvalidArgumentError, match="certificate and key go together"):
            ServerCredentials.check_files(*files)
        with pytest.raises(InvalidArgumentError, match="certificate and key go together"):
            ServerCredentials.from_files(*files)


def test_insecure_server_refuses_wildcard_listen_address() -> None:
    credentials = ServerCredentials.insecure_loopback()
    for address in ("0.0.0.0:0", "[::]:0", ":0", "192.0.2.1:0"):
        with pytest.raises(FailedPreconditionError, match="TLS"):
            credentials.check_listen_address(address)

    async def add_wildcard_port() -> None:
        server = grpc.aio.server()
        try:
            credentials.add_port(server, "0.0.0.0:0")
        finally:
            await server.stop(None)

    with pytest.raises(FailedPreconditionError, match="dev-ca"):
        asyncio.run(add_wildcard_port())


def test_insecure_echo_on_loopback() -> None:
    assert echo(ServerCredentials.insecure_loopback(), ClientCredentials.insecure_loopback()) == b"echo:hi"


def test_insecure_credentials_have_no_tls() -> None:
    with pytest.raises(FailedPreconditionError):
        ClientCredentials.insecure_loopback().channel_credentials()
    with pytest.raises(FailedPreconditionError):
        ServerCredentials.insecure_loopback().server_credentials()
    with pytest.raises(InvalidArgumentError):
        ClientCredentials(insecure=True, root_certificates=b"x")
    with pytest.raises(InvalidArgumentError):
        ServerCredentials()


def test_failed_bind_is_a_clear_error(ca: DevCaFiles) -> None:
    credentials = ServerCredentials.tls(ca.server_cert, ca.server_key)

    async def bind_foreign_address() -> None:
        server = grpc.aio.server()
        try:
            credentials.add_port(server, "192.0.2.1:0")  # not an address of this host: bind fails, nothing is sent
        finally:
            await server.stop(None)

    with pytest.raises(FailedPreconditionError, match=r"192\.0\.2\.1:0"):
        asyncio.run(bind_foreign_address())


# --- TLS and mutual TLS --------------------------------------------------------------------------------------------


def test_tls_echo_with_dev_ca(ca: DevCaFiles) -> None:
    server = ServerCredentials.tls(ca.server_cert, ca.server_key)
    client = ClientCredentials.tls(ca.ca_cert)
    assert not server.mutual and not client.mutual
    assert echo(server, client, host="localhost") == b"echo:hi"
    assert echo(server, client, host="127.0.0.1") == b"echo:hi"  # verified against the IP subjectAltName


def test_tls_server_name_override(tmp_path: Path) -> None:
    files = create_dev_ca(tmp_path, hosts=["proxy.test"])
    server = ServerCredentials.tls(files.server_cert, files.server_key)
    client = ClientCredentials.tls(files.ca_cert, server_name="proxy.test")
    assert ("grpc.ssl_target_name_override", "proxy.test") in client.channel_options()
    assert echo(server, client, host="127.0.0.1") == b"echo:hi"
    assert_rpc_fails(server, ClientCredentials.tls(files.ca_cert))  # "localhost" is not in this certificate


def test_mutual_tls_echo(ca: DevCaFiles) -> None:
    server = ServerCredentials.tls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert)
    client = ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key)
    assert server.mutual and client.mutual
    assert echo(server, client) == b"echo:hi"


def test_mutual_tls_rejects_client_without_certificate(ca: DevCaFiles) -> None:
    server = ServerCredentials.tls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert)
    assert_rpc_fails(server, ClientCredentials.tls(ca.ca_cert))


def test_mutual_tls_rejects_client_certificate_from_another_ca(ca: DevCaFiles, other_ca: DevCaFiles) -> None:
    server = ServerCredentials.tls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert)
    client = ClientCredentials.tls(ca.ca_cert, cert_file=other_ca.client_cert, key_file=other_ca.client_key)
    assert_rpc_fails(server, client)


def test_client_trusting_another_ca_is_refused(ca: DevCaFiles, other_ca: DevCaFiles) -> None:
    server = ServerCredentials.tls(ca.server_cert, ca.server_key)
    assert_rpc_fails(server, ClientCredentials.tls(other_ca.ca_cert))


def test_tls_credentials_do_not_show_private_keys(ca: DevCaFiles) -> None:
    client = ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key)
    server = ServerCredentials.tls(ca.server_cert, ca.server_key)
    assert b"PRIVATE KEY" not in repr(client).encode() and "private_key" not in repr(client)
    assert "private_key" not in repr(server)


# --- reading certificate files -------------------------------------------------------------------------------------


def test_missing_certificate_file_is_named(ca: DevCaFiles, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(InvalidArgumentError, match=r"nope\.pem") as info:
        ClientCredentials.tls(missing)
    assert "not found" in str(info.value)
    with pytest.raises(InvalidArgumentError, match=r"nope\.pem"):
        ServerCredentials.tls(missing, ca.server_key)
    with pytest.raises(InvalidArgumentError, match=r"nope\.pem"):
        ServerCredentials.tls(ca.server_cert, ca.server_key, client_ca_file=missing)
    with pytest.raises(InvalidArgumentError, match=r"nope\.pem"):
        ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=missing)


def test_unreadable_or_wrong_files_are_named(ca: DevCaFiles, tmp_path: Path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("hello\n")
    with pytest.raises(InvalidArgumentError, match=r"notes\.txt: not a PEM CA certificate"):
        ClientCredentials.tls(not_pem)
    with pytest.raises(InvalidArgumentError, match=r"notes\.txt: not a PEM server private key"):
        ServerCredentials.tls(ca.server_cert, not_pem)
    with pytest.raises(InvalidArgumentError, match="cannot read"):
        ClientCredentials.tls(tmp_path)  # a directory
    pipe = tmp_path / "ca.pem"
    os.mkfifo(pipe)  # nobody writes to it: a plain open for reading would wait forever
    with pytest.raises(InvalidArgumentError, match=r"ca\.pem: cannot read .*not a regular file"):
        ClientCredentials.tls(pipe)
    with pytest.raises(InvalidArgumentError, match="does not match"):
        ServerCredentials.tls(ca.server_cert, ca.client_key)
    encrypted = tmp_path / "encrypted.key"
    key = serialization.load_pem_private_key(ca.client_key.read_bytes(), password=None)
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(InvalidArgumentError, match="encrypted"):
        ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=encrypted)


def test_client_cert_and_key_go_together(ca: DevCaFiles) -> None:
    with pytest.raises(InvalidArgumentError, match="together"):
        ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert)
    with pytest.raises(InvalidArgumentError, match="together"):
        ClientCredentials.tls(ca.ca_cert, key_file=ca.client_key)


# --- the development CA --------------------------------------------------------------------------------------------


def test_dev_ca_files_and_modes(ca: DevCaFiles) -> None:
    assert stat.S_IMODE(ca.ca_cert.parent.stat().st_mode) == 0o700
    for key in (ca.ca_key, ca.server_key, ca.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (ca.ca_cert, ca.server_cert, ca.client_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert [path.name for path in ca] == ["ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"]


def test_dev_ca_certificate_contents(ca: DevCaFiles) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert "not for production" in ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    server = x509.load_pem_x509_certificate(ca.server_cert.read_bytes())
    server.verify_directly_issued_by(ca_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    client = x509.load_pem_x509_certificate(ca.client_cert.read_bytes())
    client.verify_directly_issued_by(ca_cert)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "asylo-dev-client"
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_dev_ca_refuses_overwrite(tmp_path: Path) -> None:
    first = create_dev_ca(tmp_path)
    before = first.ca_key.read_bytes()
    with pytest.raises(AlreadyExistsError, match=r"ca\.pem"):
        create_dev_ca(tmp_path)
    assert first.ca_key.read_bytes() == before
    create_dev_ca(tmp_path, overwrite=True, days=1)
    assert first.ca_key.read_bytes() != before
    assert stat.S_IMODE(first.ca_key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first)  # no temporary files left


def test_dev_ca_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError):
        create_dev_ca(tmp_path, days=0)
    with pytest.raises(InvalidArgumentError):
        create_dev_ca(tmp_path, hosts=())
    with pytest.raises(InvalidArgumentError, match="not a host"):
        create_dev_ca(tmp_path, hosts=["not a host"])
    assert list(tmp_path.iterdir()) == []


# --- asylo dev-ca --------------------------------------------------------------------------------------------------


def test_dev_ca_command(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    runner = CliRunner()
    result = runner.invoke(dev_ca, ["--out", str(out), "--host", "proxy.test", "--host", "10.1.2.3", "--days", "2"])
    assert result.exit_code == 0, result.output
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"):
        assert str(out / name) in result.stdout
    assert "development" in result.stderr
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["proxy.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]

    again = runner.invoke(dev_ca, ["--out", str(out)])
    assert again.exit_code == 1
    assert again.stderr.startswith("error: refusing to overwrite")
    assert "--force" in again.stderr
    assert runner.invoke(dev_ca, ["--out", str(out), "--force"]).exit_code == 0


def test_dev_ca_command_help() -> None:
    result = CliRunner().invoke(dev_ca, ["--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--force" in result.output and "development" in result.output
