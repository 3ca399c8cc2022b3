"""`asylo provision ...`: talk to a provision server as a client (upload images, list images and sessions,
release a session), and the connection options that `asylo quickstart --provision-server` shares."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from asylo._files import read_bounded
from asylo.remote.credentials import ClientCredentials
from asylo.remote.provision_client import ServerProvision
from asylo.status import AsyloError, InvalidArgumentError

_F = TypeVar("_F", bound=Callable[..., Any])
#: A bearer token is a line of printable characters; the bound keeps a wrong path (a log, a device) from being read.
_MAX_TOKEN_FILE_SIZE = 4096
#: Where a bearer token may come from besides --token-file (never a command-line value: `ps` shows those).
TOKEN_ENV = "ASYLO_PROVISION_TOKEN"  # noqa: S105 - the variable's name, not a token


def connection_options(function: _F) -> _F:
    """The options that say how to reach and authenticate to a provision server."""
    options = [
        click.option("--ca", "ca_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Trust this CA for the server's TLS certificate (needed for any non-loopback server)."),
        click.option("--client-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Present this client certificate (mutual TLS); needs --client-key."),
        click.option("--client-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The client certificate's private key."),
        click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help=f"Read a bearer token from this file (or set {TOKEN_ENV})."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), function)


def server_provision(address: str, ca_file: Path | None, client_cert: Path | None, client_key: Path | None,
                     token_file: Path | None, *, upload: bool = False) -> ServerProvision:
    """A ServerProvision from the connection options."""
    if (client_cert is None) != (client_key is None):
        raise click.UsageError("--client-cert and --client-key go together")
    credentials = None
    if ca_file is not None or client_cert is not None:
        credentials = ClientCredentials.tls(ca_file, cert_file=client_cert, key_file=client_key)
    token = os.environ.get(TOKEN_ENV)
    if token_file is not None:
        _, data = read_bounded(token_file, _MAX_TOKEN_FILE_SIZE, "bearer token", InvalidArgumentError)
        try:
            token = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise InvalidArgumentError(f"{token_file}: a bearer token file must be UTF-8 text") from None
    return ServerProvision(address, credentials=credentials, bearer_token=token or None, upload=upload)


def _server_option(function: _F) -> _F:
    return click.option("--server", "-s", "address", required=True, metavar="HOST:PORT",
                        help="The provision server, e.g. trusted.example.org:4321.")(function)


def _run(work: Callable[[], None]) -> None:
    try:
        work()
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@click.group()
def provision() -> None:
    """Use a provision server as a client: upload images, list images and sessions, release a session."""


@provision.command()
@_server_option
@connection_options
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="The image's name in the store. Default: the file name without .aimg.")
def upload(address: str, image: Path, name: str | None, **connection: Any) -> None:
    """Upload IMAGE to the server's store (accepted only if a signer it trusts signed it)."""
    def work() -> None:
        info = server_provision(address, **connection).upload(image, name)
        click.echo(f"uploaded {info.name}: measurement {info.measurement.hex()}, signer {info.signer.hex()}")
    _run(work)


@provision.command()
@_server_option
@connection_options
def images(address: str, **connection: Any) -> None:
    """List the images the server can provision."""
    def work() -> None:
        for info in server_provision(address, **connection).images():
            click.echo(f"{info.name}\t{info.measurement.hex()}\tsigner {info.signer.hex()}\t{info.size} bytes")
    _run(work)


@provision.command()
@_server_option
@connection_options
def sessions(address: str, **connection: Any) -> None:
    """List your sessions on the server."""
    def work() -> None:
        for session in server_provision(address, **connection).sessions():
            click.echo(f"{session.session_id}\t{session.image.name}")
    _run(work)


@provision.command()
@_server_option
@connection_options
@click.argument("session_id")
def release(address: str, session_id: str, **connection: Any) -> None:
    """End one of your sessions (its enclave is finalized)."""
    _run(lambda: server_provision(address, **connection).release(session_id))
