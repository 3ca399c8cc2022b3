"""`asylo dev-ca`: make a throwaway CA and TLS certificates for trying the remote backend.

Failures (existing files, a bad host name, an unwritable directory) end with exit code 1 and one line `error: ...`.
"""

from __future__ import annotations

from pathlib import Path

import click

from asylo.cli.image_commands import CommandError
from asylo.remote.devca import create_dev_ca
from asylo.status import AsyloError

_DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@click.command("dev-ca")
@click.option(
    "-o", "--out", "out_dir", required=True, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write into (created with mode 0700 if missing).",
)
@click.option(
    "--host", "hosts", multiple=True, metavar="HOST",
    help="A DNS name or IP address the server certificate is valid for; repeat for more. "
    f"Default: {', '.join(_DEFAULT_HOSTS)}.",
)
@click.option(
    "--days", type=click.IntRange(1, 3650), default=30, show_default=True,
    help="How long the certificates are valid.",
)
@click.option("--force", is_flag=True, help="Replace existing files in DIR (the old CA and keys are lost).")
def dev_ca(out_dir: Path, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Make a development CA with server and client certificates, for TLS and mutual TLS in tests and demos.

    Writes into DIR: ca.pem and ca.key (the CA), server.pem and server.key (a server certificate for every
    --host), client.pem and client.key (a client certificate for mutual TLS). Keys are EC P-256 and mode 0600.

    \b
    Use them with:
      ServerCredentials.tls("DIR/server.pem", "DIR/server.key", client_ca_file="DIR/ca.pem")
      ClientCredentials.tls("DIR/ca.pem", cert_file="DIR/client.pem", key_file="DIR/client.key")

    For development only: the CA key is stored unprotected next to what it signs, and anyone holding it can
    issue certificates your peers will trust. Never install ca.pem in a system trust store.
    """
    try:
        files = create_dev_ca(out_dir, hosts=hosts or _DEFAULT_HOSTS, days=days, overwrite=force)
    except AsyloError as exc:
        raise CommandError(exc.message) from exc
    except OSError as exc:
        where = exc.filename if exc.filename is not None else out_dir
        raise CommandError(f"{where}: {exc.strerror or exc}") from exc
    for path in files:
        click.echo(str(path))
    click.echo("warning: development certificates only; do not use this CA in production", err=True)
