"""`asylo keygen`, `asylo build`, `asylo inspect`: make a signing key, build a signed image, check one.

Expected failures (a bad manifest, a tampered image, a missing key) end with exit code 1 and one line
`error: ...` on stderr, never a traceback: they are the user's input, not a bug in pyasylo.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import IO, Any

import click

from asylo.image import (
    VerifiedImage,
    build_image,
    generate_signing_key,
    load_image,
    load_signing_key,
    public_key_bytes,
    save_signing_key,
    signer_id,
    write_image,
)
from asylo.status import AsyloError


class CommandError(click.ClickException):
    """A failure reported as one line `error: <message>` (click's own says `Error:`)."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _fail(exc: Exception) -> CommandError:
    if isinstance(exc, AsyloError):
        return CommandError(exc.message)
    if isinstance(exc, OSError) and exc.filename is not None:
        return CommandError(f"{exc.filename}: {exc.strerror or exc}")
    return CommandError(str(exc))


@click.command()
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the private key (PEM, mode 0600).",
)
@click.option("--force", is_flag=True, help="Replace an existing key file (the old key is lost).")
def keygen(output: Path, force: bool) -> None:
    """Generate an Ed25519 signing key for enclave images.

    Writes the private key to OUTPUT, readable by you only, and prints the signer id (SHA-256 of the public
    key), the value that identity expectations and provision servers trust.
    """
    key = generate_signing_key()
    try:
        save_signing_key(key, output, overwrite=force)
    except (AsyloError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"signer:      {signer_id(public_key_bytes(key)).hex()}")


@click.command()
@click.argument("source_dir", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Signing key (PEM) made by `asylo keygen`.",
)
@click.option(
    "-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the image.",
)
def build(source_dir: Path, key_path: Path, output: Path) -> None:
    """Build a signed enclave image from DIR.

    DIR holds enclave.toml (name, entry_point, product_id, svn, debug) and the enclave's Python sources.
    Every file is included except enclave.toml, __pycache__, *.pyc and dot-files; symlinks are refused.
    The same DIR and key always give the same bytes. Prints the measurement and the signer id.
    """
    try:
        key = load_signing_key(key_path)
        data = build_image(source_dir, key)
        image = load_image(data)  # never write an image that loading would refuse
        write_image(output, data)
    except (AsyloError, OSError) as exc:
        raise _fail(exc) from exc
    click.echo(f"measurement: {image.measurement_hex}")
    click.echo(f"signer:      {image.signer_hex}")


@click.command()
@click.argument("image_path", metavar="FILE", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with every file's size and SHA-256).")
def inspect(image_path: Path, as_json: bool) -> None:
    """Verify an enclave image and print what it contains.

    Checks the format, the signature and the measurement; a bad image is reported on stderr with exit
    code 1. The signer is shown, not judged: compare it with the signer ids you trust.
    """
    try:
        image = load_image(image_path)
    except AsyloError as exc:
        raise _fail(exc) from exc
    if as_json:
        click.echo(json.dumps(_as_json(image), indent=2))
        return
    manifest = image.manifest
    click.echo(f"name:        {manifest.name}")
    click.echo(f"entry point: {manifest.entry_point}")
    click.echo(f"measurement: {image.measurement_hex}")
    click.echo(f"signer:      {image.signer_hex}")
    click.echo(f"product id:  {manifest.product_id}")
    click.echo(f"svn:         {manifest.svn}")
    click.echo(f"debug:       {'true' if manifest.debug else 'false'}")
    click.echo(f"files:       {len(image.files)}")


def _as_json(image: VerifiedImage) -> dict[str, object]:
    manifest = image.manifest
    return {
        "name": manifest.name,
        "entry_point": manifest.entry_point,
        "measurement": image.measurement_hex,
        "signer": image.signer_hex,
        "signer_public_key": image.signer_public_key.hex(),
        "product_id": manifest.product_id,
        "svn": manifest.svn,
        "debug": manifest.debug,
        "files": [
            {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
            for path, content in image.files.items()
        ],
    }
