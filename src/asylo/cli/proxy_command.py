"""`asylo proxy`: host one enclave for one remote host session (Asylo's RemoteEnclaveProxyServer)."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path

import click

from asylo._malloc import keep_large_buffers
from asylo.cli.platform_options import platform_options
from asylo.identity.machine import PlatformOptions, describe_provider, open_platform
from asylo.image.measurement import MEASUREMENT_SIZE
from asylo.remote.credentials import ServerCredentials
from asylo.remote.provision_api import CERTIFICATE_SHA256_SIZE
from asylo.remote.proxy_process import AssignmentError, parse_hex_digest, read_token, run_proxy, run_standby_proxy
from asylo.remote.transports import DEFAULT_TRANSPORT, TRANSPORT_ENV, TRANSPORTS, check_transport
from asylo.status import AsyloError, InvalidArgumentError


def _hex_digest(size: int) -> Callable[[click.Context, click.Parameter, str | None], bytes | None]:
    """A click callback reading `size` bytes given as hex digits (a measurement, a certificate fingerprint); a usage
    error says what is wrong."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            return parse_hex_digest(value, size, "the value")
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None

    return convert


@click.command()
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The enclave image to host (verified before anything else). Required unless --standby.")
@click.option("--standby", is_flag=True,
              help="Start without an enclave: listen and print the READY line, then read the assignment, one line "
                   'of JSON {"image": PATH, "token": HEX} (optionally with "measurement": HEX and '
                   '"client_cert_sha256": HEX, as the options of those names), from standard input; load the image '
                   "and print `ASYLO-PROXY-ASSIGNED measurement=HEX`. Implies --exit-with-parent. For provision "
                   "servers, which keep proxies started ahead of their requests.")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="host:port to listen on; port 0 picks a free one. Non-loopback addresses need --tls-cert.")
@click.option("--token-stdin", is_flag=True, help="Read the session token (hex) from the first line of standard "
              "input. This is how local provisioning passes it: never on the command line.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Read the session token (hex) from this file instead.")
@click.option("--exit-with-parent", is_flag=True,
              help="Exit (finalizing the enclave) when standard input reaches end of file, i.e. when the process "
                   "that started this one is gone.")
@click.option("--hello-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for the host before giving up (for a standby: from its assignment).")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="End the session (DEADLINE_EXCEEDED) once the host has sent nothing and no entry call has run "
                   "for this long. Default: never.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve TLS with this certificate (PEM); needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates signed by this CA (mutual TLS).")
@click.option("--expect-measurement", callback=_hex_digest(MEASUREMENT_SIZE), metavar="HEX",
              help="Refuse (exit 1) to host the image unless it has this measurement: the image a provision server "
                   "checked, in case the file was replaced since.")
@click.option("--client-cert-sha256", callback=_hex_digest(CERTIFICATE_SHA256_SIZE), metavar="HEX",
              help="Serve only the host whose TLS client certificate has this SHA-256 fingerprint (of its DER "
                   "encoding); other hosts get PERMISSION_DENIED. Needs --tls-client-ca.")
@click.option("--transport", type=click.Choice(TRANSPORTS), default=DEFAULT_TRANSPORT, show_default=True,
              envvar=TRANSPORT_ENV, show_envvar=True,
              help="How the host's session travels: 'direct', length-prefixed records on one TCP or TLS socket "
                   "(--listen vsock:CID:PORT for AF_VSOCK, as a Nitro Enclave needs), or 'grpc', one gRPC "
                   "stream, for networks that pass only HTTP/2. The host must use the same.")
@platform_options
def proxy(image_path: Path | None, standby: bool, listen: str, token_stdin: bool, token_file: Path | None,
          exit_with_parent: bool, hello_timeout: float, idle_timeout: float | None, tls_cert: Path | None,
          tls_key: Path | None, tls_client_ca: Path | None, expect_measurement: bytes | None,
          client_cert_sha256: bytes | None, transport: str, platform: PlatformOptions) -> None:
    """Host one enclave for one host session, then exit.

    Prints `ASYLO-PROXY-READY port=N platform=KIND` on standard output once it listens, and on standard error
    which platform attests the enclave. The host connects with the session
    token; any other token is refused. Normally started by local provisioning or a provision server, not by hand.
    """
    if re.fullmatch(r"vsock:\d+:\d+", listen):
        if transport != "direct":
            raise click.UsageError("--listen vsock:CID:PORT needs --transport direct (gRPC does not speak vsock)")
    elif not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]\s]+):\d{1,5}", listen):
        raise click.UsageError(f"--listen takes host:port (port 0 picks one) or vsock:CID:PORT, got {listen!r}")
    if standby:
        if (image_path is not None or token_stdin or token_file is not None or expect_measurement is not None
                or client_cert_sha256 is not None):
            raise click.UsageError("--standby gets its image, token and expectations from its assignment: it takes "
                                   "none of --image, --token-stdin, --token-file, --expect-measurement and "
                                   "--client-cert-sha256")
    elif image_path is None:
        raise click.UsageError("give --image (or --standby)")
    elif token_stdin == (token_file is not None):
        raise click.UsageError("give exactly one of --token-stdin and --token-file")
    try:
        ServerCredentials.check_files(tls_cert, tls_key, tls_client_ca)
    except InvalidArgumentError:
        raise click.UsageError("--tls-cert and --tls-key go together, and --tls-client-ca needs them") from None
    if client_cert_sha256 is not None and tls_client_ca is None:
        raise click.UsageError("--client-cert-sha256 needs --tls-client-ca: without mutual TLS no client presents "
                               "a certificate")
    token = b""
    if not standby:
        try:
            if token_file is not None:
                with token_file.open("rb") as stream:
                    token = read_token(stream)
            else:
                token = read_token(sys.stdin.buffer)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        keep_large_buffers()  # the proxy moves megabyte messages: see asylo._malloc
        platform_key = open_platform(platform)
        click.echo(f"asylo proxy: {describe_provider(platform_key, platform)}", err=True)
        credentials = ServerCredentials.from_files(tls_cert, tls_key, tls_client_ca)
        if standby:
            code = asyncio.run(run_standby_proxy(listen=listen, credentials=credentials, hello_timeout=hello_timeout,
                                                 idle_timeout=idle_timeout, platform_key=platform_key,
                                                 transport=check_transport(transport)))
        else:
            code = asyncio.run(run_proxy(str(image_path), token, listen=listen, credentials=credentials,
                                         hello_timeout=hello_timeout, exit_with_parent=exit_with_parent,
                                         idle_timeout=idle_timeout, expect_measurement=expect_measurement,
                                         client_cert_sha256=client_cert_sha256, platform_key=platform_key,
                                         transport=check_transport(transport)))
    except AssignmentError as exc:
        click.echo(f"error: the assignment was refused: {exc}", err=True)
        sys.exit(1)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)
