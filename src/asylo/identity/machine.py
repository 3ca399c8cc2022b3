"""Which platform this machine's enclaves run on, and the provider the proxy attests with.

`asylo proxy --platform sim|snp|tdx|nitro|tpm|auto` (and the provision server, which passes its choice to its
proxies) describe the choice as `PlatformOptions`; `open_platform` turns it into a `PlatformProvider`. `auto`
takes what the machine offers — a Nitro Secure Module, else configfs-tsm's provider (SEV-SNP or TDX) — and falls
back to the simulated platform only when there is neither, saying so in `describe_provider`. It never picks the
TPM: nearly every machine has one, it attests boot state rather than isolating memory, and it must be enrolled
first, so it is chosen by name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from asylo.identity.configfs_tsm import DEFAULT_CONFIGFS_TSM, PROVIDER_KINDS, ConfigfsTsm, NoTsmProviderError
from asylo.identity.hardware import HardwareProvider
from asylo.identity.platforms import PlatformProvider
from asylo.identity.sim import SimPlatformKey
from asylo.identity.tpm.attester import DEFAULT_AK_HANDLE as DEFAULT_TPM_AK_HANDLE
from asylo.identity.tpm.attester import DEFAULT_PCRS as DEFAULT_TPM_PCRS
from asylo.identity.tpm.attester import DEFAULT_TCTI as DEFAULT_TPM_TCTI
from asylo.status import FailedPreconditionError, InvalidArgumentError

PLATFORM_KINDS = ("sim", "snp", "tdx", "nitro", "tpm")
PLATFORM_CHOICES = (*PLATFORM_KINDS, "auto")
DEFAULT_NSM_DEVICE = Path("/dev/nsm")
#: The SEV-SNP and TDX guest drivers' devices: their presence means the machine is a confidential VM.
GUEST_DEVICES = (Path("/dev/sev-guest"), Path("/dev/tdx_guest"), Path("/dev/tdx-guest"))
_PROVIDER_OF_KIND = {kind: provider for provider, kind in PROVIDER_KINDS.items()}


@dataclass(frozen=True)
class PlatformOptions:
    """The platform choice and what each platform needs from the operator.

    `sim_state`: the simulated platform's state directory (None: the default). `configfs_tsm`: where configfs-tsm's
    report directory is (SNP, TDX). `vcek`: SNP's VCEK file, for hypervisors that do not supply the certificate
    table. `collateral` or `pccs_url`: TDX's DCAP collateral, from a file or fetched from a PCCS and cached.
    `nsm_device`: the Nitro Secure Module. `tpm_tcti`, `tpm_pcrs`, `tpm_ak_handle`: how the TPM is reached, which
    PCRs its quotes cover, and where its attestation key lives.
    """

    kind: str = "sim"
    sim_state: Path | None = None
    configfs_tsm: Path = DEFAULT_CONFIGFS_TSM
    vcek: Path | None = None
    collateral: Path | None = None
    pccs_url: str | None = None
    nsm_device: Path = DEFAULT_NSM_DEVICE
    tpm_tcti: str = DEFAULT_TPM_TCTI
    tpm_pcrs: str = DEFAULT_TPM_PCRS
    tpm_ak_handle: int = DEFAULT_TPM_AK_HANDLE

    def __post_init__(self) -> None:
        if self.kind not in PLATFORM_CHOICES:
            raise InvalidArgumentError(f"unknown platform {self.kind!r} (one of: {', '.join(PLATFORM_CHOICES)})")
        if self.collateral is not None and self.pccs_url is not None:
            raise InvalidArgumentError("give the TDX collateral as a file or a PCCS URL, not both")

    def resolved_kind(self) -> str:
        """The kind itself, or for `auto` the kind this machine offers (see the module doc)."""
        return detect_platform(self) if self.kind == "auto" else self.kind

    def proxy_args(self) -> list[str]:
        """The `asylo proxy` options that make a proxy use this same platform."""
        args = ["--platform", self.kind]
        if self.sim_state is not None:
            args += ["--platform-state", os.fspath(self.sim_state)]
        if self.configfs_tsm != DEFAULT_CONFIGFS_TSM:
            args += ["--configfs-tsm", os.fspath(self.configfs_tsm)]
        if self.vcek is not None:
            args += ["--vcek", os.fspath(self.vcek)]
        if self.collateral is not None:
            args += ["--collateral", os.fspath(self.collateral)]
        if self.pccs_url is not None:
            args += ["--pccs-url", self.pccs_url]
        if self.nsm_device != DEFAULT_NSM_DEVICE:
            args += ["--nsm-device", os.fspath(self.nsm_device)]
        if self.tpm_tcti != DEFAULT_TPM_TCTI:
            args += ["--tpm-tcti", self.tpm_tcti]
        if self.tpm_pcrs != DEFAULT_TPM_PCRS:
            args += ["--tpm-pcrs", self.tpm_pcrs]
        if self.tpm_ak_handle != DEFAULT_TPM_AK_HANDLE:
            args += ["--tpm-ak-handle", f"0x{self.tpm_ak_handle:08x}"]
        return args


def detect_platform(options: PlatformOptions) -> str:
    """The hardware platform this machine offers, or "sim" if none. A confidential VM whose attestation interface
    is missing (configfs not mounted, a kernel before 6.7) is refused rather than quietly run as sim."""
    if options.nsm_device.exists():
        return "nitro"
    tsm = ConfigfsTsm(options.configfs_tsm)
    if tsm.present():
        try:
            provider = tsm.read_provider()
        except NoTsmProviderError:
            return _sim_unless_a_guest_device(options)
        kind = PROVIDER_KINDS.get(provider)
        if kind is None:
            raise FailedPreconditionError(f"configfs-tsm at {options.configfs_tsm} is served by {provider!r}, which "
                                          f"this pyasylo does not know (known: {', '.join(sorted(PROVIDER_KINDS))})")
        return kind
    return _sim_unless_a_guest_device(options)


def _sim_unless_a_guest_device(options: PlatformOptions) -> str:
    for device in GUEST_DEVICES:
        if device.exists():
            raise FailedPreconditionError(
                f"{device} exists, so this is a confidential VM, but configfs-tsm at {options.configfs_tsm} cannot "
                f"make reports (Linux 6.7 or later, configfs mounted: mount -t configfs none /sys/kernel/config); "
                f"--platform auto does not fall back to the simulated platform on a machine that has a real one")
    return "sim"


def open_platform(options: PlatformOptions) -> PlatformProvider:
    """The provider for `options`; FailedPreconditionError saying what is missing when the machine lacks it."""
    kind = options.resolved_kind()
    if kind == "sim":
        return SimPlatformKey.load_or_create(options.sim_state)
    if kind in ("snp", "tdx"):
        tsm = ConfigfsTsm(options.configfs_tsm, provider=_PROVIDER_OF_KIND[kind])
        if not tsm.present():
            raise FailedPreconditionError(
                f"--platform {kind}: configfs-tsm not found at {options.configfs_tsm} (an "
                f"{'SEV-SNP' if kind == 'snp' else 'TDX'} guest with Linux 6.7 or later, configfs mounted)")
        if kind == "snp":
            from asylo.identity.snp.attester import SnpAttester  # noqa: PLC0415 - each platform's code on demand

            return HardwareProvider(SnpAttester(tsm, vcek_file=options.vcek),
                                    f"snp (AMD SEV-SNP via configfs-tsm at {options.configfs_tsm})")
        from asylo.identity.tdx.attester import TdxAttester  # noqa: PLC0415
        from asylo.identity.tdx.collateral import CollateralSource  # noqa: PLC0415

        if options.collateral is not None:
            source = CollateralSource.from_file(options.collateral)
        elif options.pccs_url is not None:
            source = CollateralSource.from_pccs(options.pccs_url)
        else:
            raise FailedPreconditionError("--platform tdx needs the DCAP collateral the host verifies quotes with: "
                                          "--collateral FILE or --pccs-url URL")
        return HardwareProvider(TdxAttester(tsm, source), f"tdx (Intel TDX via configfs-tsm at {options.configfs_tsm})")
    if kind == "tpm":
        from asylo.identity.tpm.attester import TpmAttester  # noqa: PLC0415

        # create_ak=False: a proxy uses the AK `asylo platform enroll` made and the hosts trust; making a new one
        # here would only give evidence no host believes.
        tpm = TpmAttester(options.tpm_tcti, pcrs=options.tpm_pcrs, ak_handle=options.tpm_ak_handle, create_ak=False)
        return HardwareProvider(tpm, tpm.describe())
    from asylo.identity.nitro.attester import NitroAttester  # noqa: PLC0415
    from asylo.identity.nitro.nsm import NitroSecureModule  # noqa: PLC0415

    if not options.nsm_device.exists():
        raise FailedPreconditionError(f"--platform nitro: {options.nsm_device} not found (not inside a Nitro enclave)")
    return HardwareProvider(NitroAttester(NitroSecureModule(options.nsm_device)),
                            f"nitro (AWS Nitro Secure Module at {options.nsm_device})")


def describe_provider(provider: PlatformProvider, options: PlatformOptions) -> str:
    """The start-up line's account of the platform: which, how it was chosen, and (sim) that it protects nothing."""
    chosen = " (chosen by --platform auto)" if options.kind == "auto" else ""
    if isinstance(provider, SimPlatformKey):
        fallback = ": no Nitro Secure Module and no configfs-tsm here" if options.kind == "auto" else ""
        return (f"platform sim{chosen}{fallback} — SIMULATED, a software key, no hardware protection; "
                f"fingerprint {provider.fingerprint}")
    if isinstance(provider, HardwareProvider):
        return f"platform {provider.description}{chosen}"
    return f"platform {provider.kind}{chosen}"
