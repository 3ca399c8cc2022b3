"""The platform options `asylo proxy`, `asylo provision-server` and `asylo platform show` share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from asylo.identity.configfs_tsm import DEFAULT_CONFIGFS_TSM
from asylo.identity.machine import DEFAULT_NSM_DEVICE, PLATFORM_CHOICES, PlatformOptions
from asylo.identity.tpm.attester import DEFAULT_AK_HANDLE as DEFAULT_TPM_AK_HANDLE
from asylo.identity.tpm.attester import DEFAULT_PCRS as DEFAULT_TPM_PCRS
from asylo.identity.tpm.attester import DEFAULT_TCTI as DEFAULT_TPM_TCTI
from asylo.status import InvalidArgumentError

F = TypeVar("F", bound=Callable[..., Any])


def tpm_handle(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"a TPM handle such as 0x81010002, got {value!r}", ctx=ctx, param=param) from None


def platform_options(command: F) -> F:
    """Add the platform options to `command`, which receives them as one `platform: PlatformOptions`."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            kwargs["platform"] = PlatformOptions(
                kind=kwargs.pop("platform_kind"), sim_state=kwargs.pop("platform_state"),
                configfs_tsm=kwargs.pop("configfs_tsm"), vcek=kwargs.pop("vcek"),
                collateral=kwargs.pop("collateral"), pccs_url=kwargs.pop("pccs_url"),
                nsm_device=kwargs.pop("nsm_device"), tpm_tcti=kwargs.pop("tpm_tcti"),
                tpm_pcrs=kwargs.pop("tpm_pcrs"), tpm_ak_handle=kwargs.pop("tpm_ak_handle"))
        except InvalidArgumentError as exc:
            raise click.UsageError(exc.message) from None
        return command(*args, **kwargs)

    options = [
        click.option("--platform", "platform_kind", type=click.Choice(PLATFORM_CHOICES), default="sim",
                     show_default=True,
                     help="What attests the enclaves: sim (SIMULATED, a software key: development and tests only), "
                          "snp (an AMD SEV-SNP confidential VM) or tdx (an Intel TDX trust domain), both through "
                          "Linux's configfs-tsm, nitro (an AWS Nitro Enclave's /dev/nsm), tpm (a TPM 2.0 quote of "
                          "the machine's boot state; enroll it first: asylo platform enroll), or auto (a TEE this "
                          "machine offers, else sim; never tpm; the start-up line says which)."),
        click.option("--platform-state", type=click.Path(file_okay=False, path_type=Path),
                     help="sim: the simulated platform's state directory, whose key attests the enclave and "
                          "derives its sealing keys (default: $ASYLO_SIM_PLATFORM_DIR, else "
                          "$XDG_STATE_HOME/asylo/sim-platform; `asylo platform show` prints its fingerprint)."),
        click.option("--configfs-tsm", type=click.Path(file_okay=False, path_type=Path),
                     default=DEFAULT_CONFIGFS_TSM, show_default=True,
                     help="snp, tdx: configfs-tsm's report directory."),
        click.option("--vcek", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="snp: this chip's VCEK certificate (DER or PEM, from AMD's key distribution service), "
                          "sent with each report when the hypervisor supplies no certificate table."),
        click.option("--collateral", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="tdx: the DCAP collateral (JSON) hosts verify this machine's quotes with."),
        click.option("--pccs-url", metavar="URL",
                     help="tdx: fetch the DCAP collateral from this PCCS (https; cached), instead of --collateral."),
        click.option("--nsm-device", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_NSM_DEVICE,
                     show_default=True, help="nitro: the Nitro Secure Module device."),
        click.option("--tpm-tcti", default=DEFAULT_TPM_TCTI, show_default=True, metavar="TCTI",
                     help="tpm: how to reach the TPM (a TSS TCTI string; swtpm:host=127.0.0.1,port=N for swtpm)."),
        click.option("--tpm-pcrs", default=DEFAULT_TPM_PCRS, show_default=True, metavar="BANK:LIST",
                     help="tpm: the PCRs each quote covers, e.g. sha256:0-7 or sha256:0,2,4-7."),
        click.option("--tpm-ak-handle", default=f"0x{DEFAULT_TPM_AK_HANDLE:08x}", show_default=True,
                     callback=tpm_handle, metavar="HANDLE",
                     help="tpm: the persistent handle of the attestation key (asylo platform enroll makes it)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
