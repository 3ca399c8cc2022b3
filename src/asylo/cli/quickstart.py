"""`asylo quickstart`: Asylo's quickstart demo — encrypt a message inside an enclave.

The driver (this module) plays the part of Asylo's demo_driver.cc: it loads the quickstart enclave, hands it the
message in the `quickstart_input` extension of EnclaveInput, prints what the enclave sends back through its
"encrypted_message" host call, and destroys the enclave. Without `--image` it builds the enclave from its sources
first, signed with a throwaway key, in a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import click

import asylo
from asylo.cli.provision_command import connection_options, server_provision
from asylo.image import build_image, generate_signing_key, write_image
from asylo.remote.devca import create_dev_ca
from asylo.remote.provision import ProxyTls
from asylo.status import AsyloError

ENCLAVE_NAME = "demo_enclave"


def quickstart_enclave_dir() -> Path:
    """Where the quickstart enclave's sources are: inside the installed package, or in a source checkout."""
    packaged = Path(asylo.__file__).parent / "_examples" / "quickstart" / "enclave"
    checkout = Path(asylo.__file__).resolve().parents[2] / "examples" / "quickstart" / "enclave"
    for candidate in (checkout, packaged):  # a checkout's sources are the ones being edited: they win
        if (candidate / "enclave.toml").is_file():
            return candidate
    raise click.ClickException(f"the quickstart enclave's sources are missing (looked in {packaged} and {checkout})")


def demo_proto() -> ModuleType:
    """The quickstart's demo_pb2 (the host needs the same extension the enclave reads), loaded from its sources."""
    path = quickstart_enclave_dir() / "demo_pb2.py"
    spec = importlib.util.spec_from_file_location("asylo_quickstart_demo_pb2", path)
    if spec is None or spec.loader is None:
        raise click.ClickException(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class QuickstartResult:
    encrypted_hex: str
    measurement: bytes


def backend_config(backend: str, image_path: Path, *, tls_dir: Path | None = None,
                   provision: asylo.RemoteProvision | None = None) -> asylo.SimLoadConfig | asylo.RemoteLoadConfig:
    """The load config for `backend`: "remote" (a proxy process) or "sim" (in-process).

    Remote proxies come from `provision` (default: local provisioning). With `tls_dir`, local provisioning uses
    mutual TLS with a development CA made there.
    """
    if backend == "sim":
        return asylo.SimLoadConfig(image_path, debug=True)
    provision = provision or asylo.LocalProvision()
    if tls_dir is not None:
        ca = create_dev_ca(tls_dir)
        provision = asylo.LocalProvision(
            tls=ProxyTls(ca.server_cert, ca.server_key, client_ca_file=ca.ca_cert),
            credentials=asylo.ClientCredentials.tls(ca.ca_cert, cert_file=ca.client_cert, key_file=ca.client_key))
    proxy = asylo.RemoteProxyClientConfig.defaults_with_provision(provision)
    return asylo.RemoteLoadConfig(image_path, proxy=proxy, debug=True)


def run_quickstart(message: str, backend: asylo.SimLoadConfig | asylo.RemoteLoadConfig, *,
                   manager: asylo.EnclaveManager | None = None, echo: bool = True) -> QuickstartResult:
    """Load the quickstart enclave, encrypt `message` in it, destroy it. Prints Asylo's lines when `echo`."""
    demo_pb2 = demo_proto()
    manager = manager or asylo.EnclaveManager.instance()
    received: list[str] = []
    exit_calls = asylo.ExitCallRegistry()

    @exit_calls.register("encrypted_message")
    def encrypted_message(ciphertext_hex: bytes) -> None:
        # Host-call input is the enclave's output: printable hex, or it is refused.
        text = ciphertext_hex.decode("ascii")
        bytes.fromhex(text)
        received.append(text)
        if echo:
            click.echo("Encrypted message:")
            click.echo(text)

    if isinstance(backend, asylo.SimLoadConfig):
        config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, sim=backend, exit_calls=exit_calls)
    else:
        config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, remote=backend, exit_calls=exit_calls)
    client = manager.load_enclave(config)
    try:
        enclave_input = asylo.EnclaveInput()
        demo = enclave_input.Extensions[demo_pb2.quickstart_input]
        demo.value = message
        demo.action = demo_pb2.Demo.ENCRYPT
        output = client.enter_and_run(enclave_input)
        measurement = client.measurement
    finally:
        manager.destroy_enclave(client)
    returned = output.Extensions[demo_pb2.quickstart_output].value
    if received != [returned]:
        raise click.ClickException("the enclave's host call and its output disagree")
    return QuickstartResult(returned, measurement)


@click.command()
@click.option("--message", "-m", required=True, help="The message to encrypt inside the enclave.")
@click.option("--backend", type=click.Choice(["remote", "sim"]), default="remote", show_default=True,
              help="Where the enclave runs. remote: in a proxy process reached over gRPC, started for you on "
                   "loopback (local provisioning). sim: in this process (development; no isolation).")
@click.option("--tls", is_flag=True,
              help="remote only: connect with mutual TLS, using a development CA made for this run.")
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A built quickstart image (asylo build). Default: build one from the bundled sources with a "
                   "throwaway key.")
@click.option("--provision-server", metavar="HOST:PORT",
              help="remote only: get the proxy from this provision server (`asylo provision-server`) instead of "
                   "starting one here. Needs --image signed by a signer the server trusts; --upload sends it.")
@click.option("--upload", is_flag=True, help="With --provision-server: upload --image if the server lacks it.")
@connection_options
def quickstart(message: str, backend: str, tls: bool, image_path: Path | None, provision_server: str | None,
               upload: bool, ca_file: Path | None, client_cert: Path | None, client_key: Path | None,
               token_file: Path | None) -> None:
    """Encrypt a message inside the quickstart enclave (Asylo's quickstart demo).

    The enclave generates an AES-256-GCM key that never leaves it, encrypts MESSAGE, and sends the ciphertext back
    through a host call; this command prints it:

    \b
        Encrypted message:
        <nonce and ciphertext, hex>

    By default the enclave runs remotely: a proxy process started on loopback (local provisioning), reached over
    one gRPC stream, reaped when the demo ends. With --provision-server the proxy runs on another machine,
    started there by its provision server.
    """
    if not message:
        raise click.UsageError("--message must not be empty")
    if tls and backend != "remote":
        raise click.UsageError("--tls applies to --backend remote only")
    connection = (ca_file, client_cert, client_key, token_file)
    if provision_server is None and (upload or any(option is not None for option in connection)):
        raise click.UsageError("--upload, --ca, --client-cert, --client-key and --token-file go with "
                               "--provision-server")
    if provision_server is not None and (backend != "remote" or tls or image_path is None):
        raise click.UsageError("--provision-server needs --backend remote, no --tls (give --ca and, for mutual "
                               "TLS, --client-cert/--client-key), and --image: a quickstart image signed by a "
                               "signer the server trusts (asylo keygen, then asylo build)")
    try:
        provision = None if provision_server is None else server_provision(provision_server, *connection,
                                                                           upload=upload)
        with tempfile.TemporaryDirectory(prefix="asylo-quickstart-") as tmp:
            if image_path is None:
                image_path = Path(tmp) / "demo_enclave.aimg"
                write_image(image_path, build_image(quickstart_enclave_dir(), generate_signing_key()))
            tls_dir = Path(tmp) / "dev-ca" if tls else None
            run_quickstart(message, backend_config(backend, image_path, tls_dir=tls_dir, provision=provision))
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
