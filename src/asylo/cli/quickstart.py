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
from asylo.image import build_image, generate_signing_key, load_image, write_image
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


def run_quickstart(message: str, image: asylo.VerifiedImage, *, manager: asylo.EnclaveManager | None = None,
                   echo: bool = True) -> QuickstartResult:
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

    config = asylo.EnclaveLoadConfig(ENCLAVE_NAME, sim=asylo.SimLoadConfig(image, debug=True), exit_calls=exit_calls)
    client = manager.load_enclave(config)
    try:
        enclave_input = asylo.EnclaveInput()
        demo = enclave_input.Extensions[demo_pb2.quickstart_input]
        demo.value = message
        demo.action = demo_pb2.Demo.ENCRYPT
        output = client.enter_and_run(enclave_input)
    finally:
        manager.destroy_enclave(client)
    returned = output.Extensions[demo_pb2.quickstart_output].value
    if received != [returned]:
        raise click.ClickException("the enclave's host call and its output disagree")
    return QuickstartResult(returned, image.measurement)


@click.command()
@click.option("--message", "-m", required=True, help="The message to encrypt inside the enclave.")
@click.option("--backend", type=click.Choice(["sim"]), default="sim", show_default=True,
              help="Where the enclave runs. sim: in this process (development; no isolation).")
@click.option("--image", "image_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A built quickstart image (asylo build). Default: build one from the bundled sources with a "
                   "throwaway key.")
def quickstart(message: str, backend: str, image_path: Path | None) -> None:
    """Encrypt a message inside the quickstart enclave (Asylo's quickstart demo).

    The enclave generates an AES-256-GCM key that never leaves it, encrypts MESSAGE, and sends the ciphertext back
    through a host call; this command prints it:

    \b
        Encrypted message:
        <nonce and ciphertext, hex>
    """
    if not message:
        raise click.UsageError("--message must not be empty")
    try:
        if image_path is not None:
            run_quickstart(message, load_image(image_path))
            return
        with tempfile.TemporaryDirectory(prefix="asylo-quickstart-") as tmp:
            built = Path(tmp) / "demo_enclave.aimg"
            write_image(built, build_image(quickstart_enclave_dir(), generate_signing_key()))
            run_quickstart(message, load_image(built))
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
