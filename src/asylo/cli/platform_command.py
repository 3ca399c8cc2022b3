"""`asylo platform show`: the platform whose evidence hosts must trust to talk to enclaves on this machine."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from asylo.cli.platform_options import platform_options
from asylo.identity import SimPlatformKey, default_sim_state_dir
from asylo.identity.hardware import HardwareProvider
from asylo.identity.machine import PlatformOptions, describe_provider, open_platform
from asylo.identity.verify import quote_verifiers
from asylo.status import AsyloError


@click.group()
def platform() -> None:
    """This machine's enclave platform: sim (simulated, for development and tests), or a hardware TEE."""


@platform.command()
@platform_options
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The same as --platform-state (sim), kept for scripts that use it.")
def show(platform: PlatformOptions, state_dir: Path | None) -> None:
    """Print the platform and what hosts trust it by.

    sim: its fingerprint, what hosts pass as --trust-platform (or trusted_platforms=); the key is created on first
    use. The simulated platform's key is a file on this machine: whoever can read it can forge evidence. It gives
    the programming model and the attestation code path, not the protection of a hardware enclave.

    snp, tdx, nitro (or auto on such a machine): asks the hardware for fresh evidence, verifies it as a host would
    (the vendor's roots pinned in pyasylo), and prints the launch identity as JSON: the reference values (SNP
    measurement, TDX MRTD and RTMRs, Nitro PCRs) a host copies into its expectation.
    """
    if state_dir is not None:
        if platform.sim_state is not None:
            raise click.UsageError("give --platform-state or --state-dir, not both")
        platform = dataclasses.replace(platform, sim_state=state_dir)
    try:
        provider = open_platform(platform)
        if isinstance(provider, SimPlatformKey):
            click.echo("platform:    sim (SIMULATED: a software key, for development and tests only)")
            click.echo(f"fingerprint: {provider.fingerprint}")
            click.echo(f"state:       {platform.sim_state or default_sim_state_dir()}")
            return
        assert isinstance(provider, HardwareProvider)
        click.echo(f"# {describe_provider(provider, platform)}", err=True)
        launch = provider.own_launch(quote_verifiers()[provider.kind])
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"platform": provider.kind, **launch.to_json()}, indent=2))
