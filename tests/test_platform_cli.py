"""`asylo platform show`, `--platform` on the proxy and `auto`: against the configfs-tsm TEST DOUBLE (a FUSE
filesystem following the kernel's file protocol; tests/configfs_tsm_double.py). No hardware ran here: a positive
`platform show` of a hardware platform needs a root pinned in pyasylo, so it is shown through the provider's own
method with the test chain's verifier, and the command itself is shown refusing the test chain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asylo.identity.hardware import HardwareProvider
from asylo.identity.machine import PlatformOptions, describe_provider, open_platform
from asylo.identity.snp import SnpQuoteVerifier, build_cert_table
from asylo.identity.verify import quote_verifiers
from asylo.status import AttestationError, FailedPreconditionError
from tests.snp_test_chain import SnpTestChain
from tests.tsm_helpers import configfs_tsm_double

VECTORS = Path(__file__).parent / "vectors"
LAUNCH = bytes(range(48))
ABSENT = "/nonexistent/asylo-test"


def asylo(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asylo", *args], capture_output=True, text=True, timeout=60,
                          check=False, **kwargs)  # type: ignore[call-overload]


@pytest.fixture
def chain_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "chain"
    directory.mkdir()
    SnpTestChain.generate().save(directory)
    return directory


def test_show_on_the_simulated_platform_prints_its_fingerprint(tmp_path: Path) -> None:
    done = asylo("platform", "show", "--platform-state", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    assert "platform:    sim (SIMULATED" in done.stdout and "fingerprint: " in done.stdout
    again = asylo("platform", "show", "--state-dir", str(tmp_path / "state"))
    assert again.stdout == done.stdout  # the same key, and --state-dir still works


def test_the_own_launch_of_an_snp_machine_verifies_with_its_reference_values(tmp_path: Path,
                                                                             chain_dir: Path) -> None:
    chain = SnpTestChain.load(chain_dir)
    with configfs_tsm_double(tmp_path, "--snp-chain", str(chain_dir), "--snp-measurement", LAUNCH.hex()) as root:
        provider = open_platform(PlatformOptions(kind="snp", configfs_tsm=root))
        assert isinstance(provider, HardwareProvider)
        launch = provider.own_launch(SnpQuoteVerifier(pinned_roots=chain.pinned_roots))
        assert launch.to_json()["measurement"] == LAUNCH.hex()
        # The command verifies against AMD's roots only, so it refuses the test chain, saying so.
        done = asylo("platform", "show", "--platform", "snp", "--configfs-tsm", str(root))
        assert done.returncode == 1 and "not a root pinned by this pyasylo" in done.stderr, done.stderr
        assert "platform snp (AMD SEV-SNP via configfs-tsm" in done.stderr


def test_show_refuses_evidence_that_does_not_carry_its_nonce(tmp_path: Path) -> None:
    """A genuine report from a real machine, served whatever is asked: it verifies against AMD's roots (its VCEK
    is valid until 2029), and is refused for its report data."""
    table = tmp_path / "auxblob"
    table.write_bytes(build_cert_table({"vcek": (VECTORS / "sev-snp" / "vcek.der").read_bytes()}))
    (tmp_path / "tsm").mkdir()
    with configfs_tsm_double(tmp_path / "tsm", "--fixed-outblob", str(VECTORS / "sev-snp" / "attestation.bin"),
                             "--fixed-auxblob", str(table)) as root:
        provider = open_platform(PlatformOptions(kind="snp", configfs_tsm=root))
        assert isinstance(provider, HardwareProvider)
        with pytest.raises(AttestationError, match="report data is not the nonce it was asked for"):
            provider.own_launch(quote_verifiers()["snp"])
        done = asylo("platform", "show", "--platform", "snp", "--configfs-tsm", str(root))
        assert done.returncode == 1 and "not the nonce it was asked for" in done.stderr, done.stderr


def test_auto_takes_what_the_machine_offers_and_says_so(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--provider", "tdx_guest") as root:
        options = PlatformOptions(kind="auto", configfs_tsm=root, nsm_device=Path(ABSENT),
                                  collateral=VECTORS / "tdx-sgx-dcap" / "tdx_quote_collateral.json")
        assert options.resolved_kind() == "tdx"
        provider = open_platform(options)
        assert provider.kind == "tdx"
        assert describe_provider(provider, options).startswith("platform tdx (Intel TDX via configfs-tsm")
        assert "(chosen by --platform auto)" in describe_provider(provider, options)


def test_auto_falls_back_to_sim_only_when_there_is_nothing_else(tmp_path: Path) -> None:
    options = PlatformOptions(kind="auto", configfs_tsm=Path(ABSENT), nsm_device=Path(ABSENT),
                              sim_state=tmp_path / "state")
    provider = open_platform(options)
    assert provider.kind == "sim"
    line = describe_provider(provider, options)
    assert "platform sim (chosen by --platform auto): no Nitro Secure Module and no configfs-tsm here" in line
    assert "SIMULATED" in line


@pytest.mark.parametrize(("options", "message"), [
    (PlatformOptions(kind="snp", configfs_tsm=Path(ABSENT)), "--platform snp: configfs-tsm not found at"),
    (PlatformOptions(kind="nitro", nsm_device=Path(ABSENT)), "not inside a Nitro enclave"),
])
def test_a_platform_the_machine_lacks_is_refused_at_start(options: PlatformOptions, message: str) -> None:
    with pytest.raises(FailedPreconditionError, match=message):
        open_platform(options)


def test_tdx_without_collateral_says_what_it_needs(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--provider", "tdx_guest") as root, \
            pytest.raises(FailedPreconditionError, match="--collateral FILE or --pccs-url URL"):
        open_platform(PlatformOptions(kind="tdx", configfs_tsm=root))


def test_the_proxy_names_its_platform_on_its_start_up_lines(tmp_path: Path, chain_dir: Path,
                                                            primitives_image_file: Path) -> None:
    with configfs_tsm_double(tmp_path, "--snp-chain", str(chain_dir)) as root:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "asylo", "proxy", "--image", str(primitives_image_file), "--token-stdin",
             "--platform", "auto", "--configfs-tsm", str(root), "--nsm-device", ABSENT, "--hello-timeout", "0.5"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proxy.communicate(os.urandom(32).hex() + "\n", timeout=60)
    assert "ASYLO-PROXY-READY port=" in out and out.split()[2] == "platform=snp", out
    assert "asylo proxy: platform snp (AMD SEV-SNP via configfs-tsm" in err and "chosen by --platform auto" in err


def test_the_proxy_refuses_a_platform_the_machine_lacks(primitives_image_file: Path) -> None:
    done = asylo("proxy", "--image", str(primitives_image_file), "--token-stdin", "--platform", "snp",
                 "--configfs-tsm", ABSENT, input=os.urandom(32).hex() + "\n")
    assert done.returncode == 1 and "configfs-tsm not found" in done.stderr, done.stderr
    assert done.stdout == ""


def test_the_quickstart_expects_a_hardware_launch_when_asked(tmp_path: Path, chain_dir: Path) -> None:
    # On this machine's simulated platform: refused, since no hardware vouches for the launch.
    done = asylo("quickstart", "-m", "hi", "--expect-launch", f"snp={LAUNCH.hex()}")
    assert done.returncode == 1 and "expected a verified snp launch, the enclave has no hardware launch" in \
        done.stderr, done.stderr
    # Proxies on an SNP platform (the double, signed by the test chain): the host gets as far as the chain's
    # root, which no host trusts outside the tests that name it.
    with configfs_tsm_double(tmp_path, "--snp-chain", str(chain_dir), "--snp-measurement", LAUNCH.hex()) as root:
        done = asylo("quickstart", "-m", "hi", "--platform", "snp", "--configfs-tsm", str(root),
                     "--expect-launch", f"snp={LAUNCH.hex()}")
    assert done.returncode == 1 and "not a root pinned by this pyasylo" in done.stderr, done.stderr
    assert "Encrypted message" not in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--expect-launch", "tdz=00"], "no launch expectation for platform 'tdz'"),
    (["--expect-launch", "snp=zz"], "not hex digits for snp measurement"),
    (["--expect-launch", f"tdx={'00' * 48}"], "do not pin the code the launch runs: give mrtd, rtmr1"),
    (["--expect-launch", f"tdx={'00' * 48},rtmr1={'00' * 48}"], "do not pin the code the launch runs"),
    (["--expect-launch", f"nitro=pcr4={'00' * 48}"], "do not pin the code the launch runs: give pcr0"),
    (["--expect-launch", f"snp={'00' * 48},mrtd={'00' * 48}"], "snp has no reference value mrtd"),
    (["--expect-launch", "snp"], "takes KIND=HEX"),
    (["--expect-launch", "snp=00"], "48 bytes"),
    (["--backend", "sim", "--platform", "snp"], "--platform and its options choose the platform"),
    (["--backend", "sim", "--expect-launch", f"snp={LAUNCH.hex()}"], "--expect-launch applies to --backend remote"),
])
def test_quickstart_platform_usage_errors(args: list[str], message: str) -> None:
    done = asylo("quickstart", "-m", "hi", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_launch_expectations_pin_code_only_with_the_right_values() -> None:
    """Which reference values count as pinning the code a launch runs (and so let a host accept the runtime's word
    about its image): not a firmware measurement alone, not a Nitro parent's PCRs, not an empty ID key."""
    from asylo.identity import expect_launch  # noqa: PLC0415
    from asylo.identity.nitro import NitroPcrs  # noqa: PLC0415
    from asylo.identity.snp import SnpLaunch  # noqa: PLC0415
    from asylo.identity.tdx import TdxLaunch  # noqa: PLC0415

    m48 = bytes(range(48))
    assert not TdxLaunch(m48).constrains_launch("tdx")
    assert not TdxLaunch(m48, rtmrs={1: m48}).constrains_launch("tdx")
    assert TdxLaunch(m48, rtmrs={1: m48, 2: m48}).constrains_launch("tdx")
    assert not NitroPcrs({4: m48}).constrains_launch("nitro")
    assert not NitroPcrs({1: m48}).constrains_launch("nitro")
    assert all(NitroPcrs(pcrs).constrains_launch("nitro") for pcrs in ({0: m48}, {8: m48}, {1: m48, 2: m48}))
    assert not SnpLaunch(id_key_digest=bytes(48)).constrains_launch("snp")
    assert SnpLaunch(id_key_digest=m48).constrains_launch("snp") and SnpLaunch(m48).constrains_launch("snp")
    tdx = expect_launch("tdx", {"mrtd": m48, "rtmr1": m48, "rtmr2": m48})
    assert tdx.constrains_launch("tdx") and "rtmr2" in tdx.describe()
