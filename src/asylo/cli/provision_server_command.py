"""`asylo provision-server`: start enclaves on this (trusted) machine on demand for authenticated clients."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from pathlib import Path

import click

from asylo.cli.platform_options import platform_options
from asylo.identity.machine import PlatformOptions, describe_provider
from asylo.provision_server import (
    DEFAULT_PORT,
    ClientId,
    ProvisionServer,
    ProvisionServerConfig,
    ServerLimits,
    load_client_tokens,
    load_trusted_signer,
)
from asylo.provision_server.auth import token_file_is_private
from asylo.provision_server.server import WILDCARD_HOSTS
from asylo.provision_server.service import UploadLimits
from asylo.provision_server.store import DEFAULT_MAX_IMAGES, DEFAULT_MAX_STORE_SIZE
from asylo.remote.child_process import exit_with_parent as watch_parent
from asylo.remote.transports import DEFAULT_TRANSPORT, TRANSPORT_ENV, TRANSPORTS, check_transport
from asylo.status import AsyloError

_log = logging.getLogger(__name__)

#: The line printed on standard output once the server listens (scripts and tests wait for it).
READY_PREFIX = "ASYLO-PROVISION-SERVER-READY"
_SIGNER_ID = re.compile(r"[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]\s]*):\d{1,5}")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "asylo" / "provision-server"


def trusted_signer(value: str) -> bytes:
    """A signer id (64 hex digits, as `asylo keygen` and `asylo inspect` print) or a public key file."""
    if _SIGNER_ID.fullmatch(value):
        return bytes.fromhex(value)
    return load_trusted_signer(Path(value))


def _address(value: str, option: str) -> str:
    if not _ADDRESS.fullmatch(value):
        raise click.UsageError(f"{option} takes host:port, got {value!r}")
    return value


_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size(ctx: click.Context, param: click.Parameter, value: str | int) -> int:
    """A size in bytes, written as a number of MiB ("64", as --max-image-size always took) or with a binary unit:
    "512K", "64M", "1G" (KiB, MiB, GiB; "KiB" etc. and a final "B" are accepted too)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    scale = _SIZE_UNITS.get(text[-1:], 0)
    number = text[:-1] if scale else text
    if not number.isdigit() or int(number) < 1:
        raise click.BadParameter(f"{value!r} is not a size: give MiB (64) or a number with K, M or G (512K, 1G)",
                                 ctx=ctx, param=param)
    return int(number) * (scale or 1 << 20)


#: The shortest idle timeout a proxy accepts (`asylo proxy --idle-timeout`): the server hands its own on to every
#: proxy, so it refuses at once what would otherwise fail every proxy start later.
_MIN_IDLE_TIMEOUT = 0.1


def _idle_timeout(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """0 (never) or at least _MIN_IDLE_TIMEOUT: refused here with a usage error rather than by the proxies later."""
    if value != 0 and value < _MIN_IDLE_TIMEOUT:
        raise click.BadParameter(f"0 (never) or at least {_MIN_IDLE_TIMEOUT:g} seconds, not {value:g}",
                                 ctx=ctx, param=param)
    return value


def _advertise_host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A host clients can connect to: a wildcard names every interface of this machine and none of another's."""
    if value is not None and value.strip() in WILDCARD_HOSTS:
        raise click.BadParameter(f"{value!r} is a wildcard, which no client can connect to; give a host name or "
                                 f"address clients can reach (or leave it out)", ctx=ctx, param=param)
    return value


@click.command("provision-server")
@click.option("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True,
              help="host:port for the gRPC API. Anything but loopback needs --tls-cert/--tls-key. Proxies listen "
                   "on the same host, on ports the system picks.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=default_state_dir,
              show_default="$XDG_STATE_HOME/asylo/provision-server",
              help="Where uploaded images and the records of running proxies live (mode 0700). A restarted server "
                   "kills the proxies an earlier run left here.")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A directory of *.aimg images to serve (read-only; name = file name without .aimg).")
@click.option("--trusted-signer", "trusted_signers", multiple=True, required=True, metavar="ID|FILE",
              help="A signer whose images may run: its signer id (as `asylo keygen` or `asylo inspect` print it) "
                   "or its public key file. Repeat for more. Images by anyone else are never run.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve TLS with this certificate (PEM); proxies use it too. Needs --tls-key.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The certificate's private key (PEM).")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Require client certificates issued by this CA (mutual TLS); a certificate is its client's "
                   "identity.")
@click.option("--client-tokens", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of 'name token' lines: clients authenticate with 'authorization: Bearer <token>'. "
                   "Keep it mode 0600.")
@click.option("--allow-anonymous", is_flag=True,
              help="Let unauthenticated clients in (as one client, 'anonymous'). Loopback only; for development.")
@click.option("--max-enclaves", default=64, show_default=True, type=click.IntRange(min=1),
              help="Enclaves running at once, in all.")
@click.option("--max-enclaves-per-client", default=8, show_default=True, type=click.IntRange(min=1),
              help="Enclaves running at once for one client.")
@click.option("--idle-timeout", default=600.0, show_default=True, type=click.FloatRange(min=0),
              callback=_idle_timeout,
              help=f"Seconds a session may go without a call before its enclave is finalized (0: never; else at "
                   f"least {_MIN_IDLE_TIMEOUT:g}).")
@click.option("--hello-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a provisioned proxy waits for its client to connect.")
@click.option("--max-image-size", default="64M", show_default=True, callback=_size, metavar="SIZE",
              help="Largest image accepted for upload: MiB, or a size such as 512K.")
@click.option("--max-store-size", default=f"{DEFAULT_MAX_STORE_SIZE >> 30}G", show_default=True, callback=_size,
              metavar="SIZE",
              help="Space all uploaded images may take together, uploads in progress included (MiB, or a size "
                   "such as 1G). The same image under two names counts once.")
@click.option("--max-images", default=DEFAULT_MAX_IMAGES, show_default=True, type=click.IntRange(min=1),
              help="Uploaded images the store may hold (the --images directory does not count).")
@click.option("--max-uploads-per-client", default=UploadLimits.per_client, show_default=True,
              type=click.IntRange(min=1), help="Uploads one client may have in progress at once.")
@click.option("--upload-idle-timeout", default=UploadLimits.idle_timeout, show_default=True,
              type=click.FloatRange(min=0.1), metavar="SECONDS",
              help="An upload that sends nothing for this long is abandoned (DEADLINE_EXCEEDED).")
@click.option("--upload-timeout", default=UploadLimits.timeout, show_default=True, type=click.FloatRange(min=0.1),
              metavar="SECONDS", help="An upload must be complete within this long.")
@click.option("--warm", default=0, show_default=True, type=click.IntRange(min=0, max=256),
              help="Proxies to keep pre-started, so that provisioning skips process start-up.")
@click.option("--metrics-listen", metavar="HOST:PORT",
              help="Serve Prometheus metrics (plain HTTP, /metrics) on this address, e.g. 127.0.0.1:9464.")
@click.option("--transport", type=click.Choice(TRANSPORTS), default=DEFAULT_TRANSPORT, show_default=True,
              envvar=TRANSPORT_ENV, show_envvar=True,
              help="How clients' sessions reach the proxies: 'direct' (a TCP/TLS stream) or 'grpc' (one gRPC "
                   "stream, for networks that pass only HTTP/2). Each provision answer says which; this server's "
                   "own API is gRPC either way.")
@platform_options
@click.option("--exit-with-parent", is_flag=True,
              help="Stop (ending every session) when standard input reaches end of file, i.e. when the process "
                   "that started this one is gone. For supervisors and benchmarks.")
@click.option("--advertise-host", callback=_advertise_host,
              help="The host name or address clients should use for proxies. Default: the --listen host, or, "
                   "when that is a wildcard, the host each client used to reach this server.")
def provision_server(listen: str, state_dir: Path, images_dir: Path | None, trusted_signers: tuple[str, ...],
                     tls_cert: Path | None, tls_key: Path | None, tls_client_ca: Path | None,
                     client_tokens: Path | None, allow_anonymous: bool, max_enclaves: int,
                     max_enclaves_per_client: int, idle_timeout: float, hello_timeout: float, max_image_size: int,
                     max_store_size: int, max_images: int, max_uploads_per_client: int,
                     upload_idle_timeout: float, upload_timeout: float, warm: int, metrics_listen: str | None,
                     transport: str, platform: PlatformOptions, exit_with_parent: bool,
                     advertise_host: str | None) -> None:
    """Start enclaves on this machine on demand (Asylo's provision server, port 4321).

    Clients (`RemoteProvision.instantiate("HOST:4321", ...)`, `asylo quickstart --provision-server HOST:4321`)
    authenticate, ask for an image of the store by name or measurement, and get the address of a proxy hosting
    it plus a one-time token for it; the proxy serves that client only. Images come from --images and from
    uploads (`asylo provision upload`), and only those signed by a --trusted-signer ever run.

    Prints `ASYLO-PROVISION-SERVER-READY port=N platform=FINGERPRINT` on standard output once it serves; with
    --platform sim, clients trust the enclaves' evidence by that fingerprint (--trust-platform), and with
    --platform tpm by the fingerprint of the enrolled AK it shows; on a TEE the word is its kind (snp, tdx, nitro),
    and clients trust it by reference values of its launch (`asylo platform show` on this machine prints them).
    gRPC health checking and server reflection are on, so grpcurl and grpc_health_probe work. SIGTERM or Ctrl-C
    ends every session and exits.
    """
    _address(listen, "--listen")
    if metrics_listen is not None:
        _address(metrics_listen, "--metrics-listen")
    try:
        tokens: dict[bytes, ClientId] = {}
        if client_tokens is not None:
            tokens = load_client_tokens(client_tokens)
            if not token_file_is_private(client_tokens):
                click.echo(f"warning: {client_tokens} is readable by others; chmod 600 it", err=True)
        config = ProvisionServerConfig(
            state_dir=state_dir, trusted_signers=tuple(trusted_signer(s) for s in trusted_signers), listen=listen,
            images_dir=images_dir, tls_cert=tls_cert, tls_key=tls_key, tls_client_ca=tls_client_ca,
            client_tokens=tokens, allow_anonymous=allow_anonymous,
            limits=ServerLimits(max_enclaves=max_enclaves, max_enclaves_per_client=max_enclaves_per_client),
            max_image_size=max_image_size, max_store_size=max_store_size, max_images=max_images,
            upload_limits=UploadLimits(per_client=max_uploads_per_client, idle_timeout=upload_idle_timeout,
                                       timeout=upload_timeout),
            idle_timeout=idle_timeout or None, hello_timeout=hello_timeout,
            warm=warm, metrics_listen=metrics_listen, advertise_host=advertise_host, platform=platform,
            transport=check_transport(transport))
        sys.exit(asyncio.run(_serve(config, exit_with_parent=exit_with_parent)))
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


async def _serve(config: ProvisionServerConfig, *, exit_with_parent: bool) -> int:
    server = ProvisionServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if exit_with_parent:
        watch_parent(loop, stop.set, "asylo-provision-parent-watch")
    metrics = f" metrics_port={server.metrics_port}" if server.metrics_port is not None else ""
    assert server.platform is not None  # started
    click.echo(f"{READY_PREFIX} port={server.port} platform={server.platform.fingerprint}{metrics}")
    click.echo(f"asylo provision-server: {describe_provider(server.platform, config.platform)}", err=True)
    if server.platform.kind == "sim":
        click.echo(f"sim platform fingerprint: {server.platform.fingerprint} (SIMULATED: clients pass it as "
                   f"--trust-platform)", err=True)
    click.echo(f"trusted signers: {', '.join(s.hex() for s in config.trusted_signers)}", err=True)
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        _log.info("provision server stopping")
        await server.stop()
    return 0
