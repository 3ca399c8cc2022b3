"""`asylo platform show`: the platform whose evidence hosts must trust to talk to enclaves on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from asylo.identity import SimPlatformKey, default_sim_state_dir
from asylo.status import AsyloError


@click.group()
def platform() -> None:
    """This machine's enclave platform (simulated: for development and tests)."""


@platform.command()
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The simulated platform's state directory (default: $ASYLO_SIM_PLATFORM_DIR, else "
                   "$XDG_STATE_HOME/asylo/sim-platform): the one `asylo proxy` and `asylo provision-server` use "
                   "unless given --platform-state.")
def show(state_dir: Path | None) -> None:
    """Print the platform's fingerprint: what hosts pass as --trust-platform (or trusted_platforms=) to believe
    evidence from enclaves on this machine. Creates the platform key on first use.

    The simulated platform's key is a file on this machine: whoever can read it can forge evidence. It gives the
    programming model and the attestation code path, not the protection of a hardware enclave.
    """
    try:
        key = SimPlatformKey.load_or_create(state_dir)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo("platform:    sim (SIMULATED: a software key, for development and tests only)")
    click.echo(f"fingerprint: {key.fingerprint}")
    click.echo(f"state:       {state_dir or default_sim_state_dir()}")
