"""`asylo platform show`: the platform whose evidence hosts must trust to talk to enclaves on this machine."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from asylo.cli.platform_options import platform_options, tpm_handle
from asylo.identity import SimPlatformKey, default_sim_state_dir
from asylo.identity.hardware import HardwareProvider
from asylo.identity.machine import PlatformOptions, describe_provider, open_platform
from asylo.identity.tpm.attester import DEFAULT_AK_HANDLE as DEFAULT_TPM_AK_HANDLE
from asylo.identity.tpm.attester import DEFAULT_TCTI as DEFAULT_TPM_TCTI
from asylo.identity.tpm.verifier import TPM_KIND, TpmQuoteVerifier
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
        verifier = (TpmQuoteVerifier([provider.fingerprint]) if provider.kind == TPM_KIND
                    else quote_verifiers()[provider.kind])
        launch = provider.own_launch(verifier)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(json.dumps({"platform": provider.kind, **launch.to_json()}, indent=2))


@platform.command()
@click.option("--tpm-ek-ca", "manufacturer_ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The TPM manufacturer's root CA certificate(s) (PEM or DER) the EK certificate must "
                                  "chain to; a bundle may hold intermediates too.")
@click.option("--tpm-ek-intermediate", "intermediates", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An intermediate CA certificate for the EK's chain (repeatable).")
@click.option("--tpm-ek", "ek", type=click.Choice(["rsa", "ecc", "ecc-p384"]), default="rsa", show_default=True,
              help="Which of the TPM's EKs (and EK certificates) to use.")
@click.option("--tpm-ak-algorithm", "ak_algorithm", type=click.Choice(["rsa", "ecc"]), default=None,
              help="The AK to make when the handle is empty (default: RSA-2048); an existing AK is used as it is.")
@click.option("--tpm-tcti", default=DEFAULT_TPM_TCTI, show_default=True, metavar="TCTI",
              help="How to reach the TPM (swtpm:host=127.0.0.1,port=N for swtpm).")
@click.option("--tpm-ak-handle", default=f"0x{DEFAULT_TPM_AK_HANDLE:08x}", show_default=True, metavar="HANDLE",
              callback=tpm_handle, help="The persistent handle the AK lives at (made there if empty).")
def enroll(manufacturer_ca: Path, intermediates: tuple[Path, ...], ek: str, ak_algorithm: str | None,
           tpm_tcti: str, tpm_ak_handle: int) -> None:
    """Enroll this machine's TPM (once, by its operator): prove that the attestation key (AK) lives in the same
    TPM as an endorsement key (EK) whose certificate chains to the manufacturer CA you name, and print the
    platform fingerprint (of the AK) that hosts trust with --trust-platform.

    The proof is credential activation: a secret encrypted to the EK (MakeCredential, in software here) that only
    that TPM can decrypt, and only for that AK (ActivateCredential). Then `asylo proxy --platform tpm` attests
    with this AK.
    """
    from asylo.identity.tpm.enrollment import enroll as enroll_tpm  # noqa: PLC0415 - the TSS only when enrolling

    try:
        enrollment = enroll_tpm(manufacturer_ca=manufacturer_ca, tcti=tpm_tcti, intermediates=intermediates, ek=ek,
                                ak_handle=tpm_ak_handle, ak_algorithm=ak_algorithm)
    except AsyloError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(enrollment.describe())
