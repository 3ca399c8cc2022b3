"""The quickstart: Asylo's demo enclave, through the CLI as a user runs it, and through the API."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import asylo
from asylo.cli import quickstart as quickstart_module
from asylo.cli.main import cli
from asylo.cli.quickstart import demo_proto, quickstart_enclave_dir, run_quickstart
from asylo.trusted.sealing import MAGIC

ASYLO = [sys.executable, "-c", "from asylo.cli.main import main; main()"]


def _expected_hex_length(message: str) -> int:
    return 2 * (12 + len(message.encode()) + 16)  # nonce, ciphertext, GCM tag


@pytest.mark.parametrize("flags", [[], ["--backend", "remote", "--tls"], ["--backend", "sim"]],
                         ids=["remote-default", "remote-tls", "sim"])
def test_quickstart_command_prints_what_asylos_guide_shows(flags: list[str]) -> None:
    result = subprocess.run([*ASYLO, "quickstart", "--message", "Asylo Rocks", *flags], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"Encrypted message:\n([0-9a-f]+)\n", result.stdout)
    assert match, result.stdout
    assert len(match.group(1)) == _expected_hex_length("Asylo Rocks")


def test_quickstart_with_sim_backend_and_built_image(tmp_path: Path) -> None:
    runner = CliRunner()
    key, image = tmp_path / "signer.pem", tmp_path / "demo.aimg"
    assert runner.invoke(cli, ["keygen", "-o", str(key)]).exit_code == 0
    built = runner.invoke(cli, ["build", str(quickstart_enclave_dir()), "--key", str(key), "-o", str(image)])
    assert built.exit_code == 0, built.output
    result = runner.invoke(cli, ["quickstart", "--message", "clock", "--backend", "sim", "--image", str(image)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"Encrypted message:\n[0-9a-f]{{{_expected_hex_length('clock')}}}\n", result.output)


FINGERPRINT = "ab" * 32


@pytest.mark.parametrize("args, message", [
    ([], "give --message TEXT to encrypt, or --decrypt HEX"),
    (["--message", ""], "--message must not be empty"),
    (["--message", "x", "--backend", "nope"], "Invalid value for '--backend'"),
    (["--message", "x", "--backend", "sim", "--tls"], "--tls applies to"),
    (["--decrypt", "00" * 40], "--decrypt needs --key-store DIR"),
    (["--message", "x", "--decrypt", "00" * 40, "--key-store", "{keys}"], "give --message TEXT to encrypt, or"),
    (["--decrypt", "not hex", "--key-store", "{keys}"], "not hex"),
    (["--decrypt", "", "--key-store", "{keys}"], "not hex"),
    (["--message", "x", "--seal-policy", "signer"], "--seal-policy goes with --key-store"),
    (["--message", "x", "--key-store", "{keys}", "--seal-policy", "owner"], "Invalid value for '--seal-policy'"),
    (["--message", "x", "--backend", "sim", "--trust-platform", FINGERPRINT], "--trust-platform applies to"),
    (["--message", "x", "--trust-platform", "nope"], "not a platform fingerprint"),
])
def test_quickstart_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    result = CliRunner().invoke(cli, ["quickstart", *(arg.format(keys=keys) for arg in args)])
    assert result.exit_code == 2
    assert message in result.output
    assert not keys.exists()  # refused before anything was made


def test_quickstart_refuses_a_tampered_image(tmp_path: Path, quickstart_image: asylo.VerifiedImage) -> None:
    image = tmp_path / "bad.aimg"
    image.write_bytes(b"ASYLOIMG\x01" + b"\x00" * 8)
    result = CliRunner().invoke(cli, ["quickstart", "--message", "x", "--image", str(image)])
    assert result.exit_code == 1
    assert "error:" in result.output


def test_round_trip_through_the_enclave(quickstart_image: asylo.VerifiedImage) -> None:
    demo_pb2 = demo_proto()
    manager = asylo.EnclaveManager()
    registry = asylo.ExitCallRegistry()
    delivered: list[bytes] = []
    registry.register("encrypted_message", delivered.append)
    sim = asylo.SimLoadConfig(quickstart_image, debug=True)
    try:
        client = manager.load_enclave(asylo.EnclaveLoadConfig("demo", sim=sim, exit_calls=registry))
        enclave_input = asylo.EnclaveInput()
        enclave_input.Extensions[demo_pb2.quickstart_input].value = "Asylo Rocks"
        enclave_input.Extensions[demo_pb2.quickstart_input].action = demo_pb2.Demo.ENCRYPT
        ciphertext_hex = client.enter_and_run(enclave_input).Extensions[demo_pb2.quickstart_output].value
        assert delivered == [ciphertext_hex.encode()]
        assert b"Asylo Rocks".hex() not in ciphertext_hex

        # Decrypt through run (Asylo's DECRYPT action) and through the named entry point.
        decrypt = asylo.EnclaveInput()
        decrypt.Extensions[demo_pb2.quickstart_input].value = ciphertext_hex
        decrypt.Extensions[demo_pb2.quickstart_input].action = demo_pb2.Demo.DECRYPT
        assert client.enter_and_run(decrypt).Extensions[demo_pb2.quickstart_output].value == "Asylo Rocks"
        assert client.call("decrypt", bytes.fromhex(ciphertext_hex)) == b"Asylo Rocks"

        # Another instance has another key: it cannot read what the first encrypted.
        other = manager.load_enclave(asylo.EnclaveLoadConfig("other", sim=sim, exit_calls=registry))
        with pytest.raises(asylo.InvalidArgumentError, match="not made by this enclave"):
            other.call("decrypt", bytes.fromhex(ciphertext_hex))
        tampered = bytearray(bytes.fromhex(ciphertext_hex))
        tampered[-1] ^= 1
        with pytest.raises(asylo.InvalidArgumentError, match="not made by this enclave"):
            client.call("decrypt", bytes(tampered))
    finally:
        manager.shutdown()


def test_run_quickstart_remote_reports_the_remote_enclaves_measurement(tmp_path: Path,
                                                                      quickstart_image: asylo.VerifiedImage) -> None:
    from asylo.cli.quickstart import backend_config  # noqa: PLC0415
    from asylo.image import build_image, generate_signing_key, write_image  # noqa: PLC0415

    path = tmp_path / "demo.aimg"
    write_image(path, build_image(quickstart_enclave_dir(), generate_signing_key()))
    manager = asylo.EnclaveManager()
    result = run_quickstart("remote", backend_config("remote", path, tls_dir=tmp_path / "ca"), manager=manager,
                            echo=False)
    assert result.measurement == quickstart_image.measurement  # same sources, any key: same measurement
    assert len(result.encrypted_hex) == _expected_hex_length("remote")
    assert (tmp_path / "ca" / "ca.pem").exists()


def test_run_quickstart_api(quickstart_image: asylo.VerifiedImage, capsys: pytest.CaptureFixture[str]) -> None:
    manager = asylo.EnclaveManager()
    result = run_quickstart("hello", asylo.SimLoadConfig(quickstart_image, debug=True), manager=manager)
    assert capsys.readouterr().out == f"Encrypted message:\n{result.encrypted_hex}\n"
    assert result.measurement == quickstart_image.measurement
    assert manager.loaded_enclaves() == []


# -- the key store: a sealed key that outlives the run --------------------------------------------------------------

def _encrypted_hex(output: str) -> str:
    match = re.fullmatch(r"Encrypted message:\n([0-9a-f]+)\n", output)
    assert match, output
    return match.group(1)


def _modified_quickstart(tmp_path: Path, key: Path) -> Path:
    """The quickstart enclave with one comment added (another measurement), built and signed with `key`."""
    source = tmp_path / f"modified-source-{key.stem}"
    shutil.copytree(quickstart_enclave_dir(), source, ignore=shutil.ignore_patterns("__pycache__"))
    with (source / "demo_enclave.py").open("a") as code:
        code.write("\n# a later build: same behaviour, another measurement\n")
    image = tmp_path / f"modified-{key.stem}.aimg"
    built = CliRunner().invoke(cli, ["build", str(source), "--key", str(key), "-o", str(image)])
    assert built.exit_code == 0, built.output
    return image


@pytest.mark.parametrize("backend", ["sim", "remote"])
def test_a_second_run_decrypts_what_the_first_encrypted(tmp_path: Path, backend: str) -> None:
    keys = tmp_path / "keys"
    common = ["--key-store", str(keys), "--backend", backend]
    first = subprocess.run([*ASYLO, "quickstart", "--message", "Asylo Rocks", *common], capture_output=True,
                           text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    ciphertext_hex = _encrypted_hex(first.stdout)
    # The host holds only the sealed key and the signing key that makes every run the same enclave.
    assert sorted(p.name for p in keys.iterdir()) == ["quickstart-key.sealed", "quickstart-signer.pem"]
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for path in keys.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = (keys / "quickstart-key.sealed").read_bytes()
    assert sealed.startswith(MAGIC)

    second = subprocess.run([*ASYLO, "quickstart", "--decrypt", ciphertext_hex, *common], capture_output=True,
                            text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "Decrypted message:\nAsylo Rocks\n"
    assert (keys / "quickstart-key.sealed").read_bytes() == sealed  # unsealed, not replaced

    # A run with a fresh key (no key store) made this one: the stored key cannot decrypt it.
    fresh = subprocess.run([*ASYLO, "quickstart", "--message", "Asylo Rocks", "--backend", backend],
                           capture_output=True, text=True, timeout=60, check=False)
    refused = subprocess.run([*ASYLO, "quickstart", "--decrypt", _encrypted_hex(fresh.stdout), *common],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT: ciphertext was not made by this enclave" in refused.stderr


def test_another_measurement_cannot_unseal_the_stored_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    runner = CliRunner()
    first = runner.invoke(cli, ["quickstart", "--message", "secret", "--key-store", str(keys), "--backend", "sim"])
    assert first.exit_code == 0, first.output
    ciphertext_hex = _encrypted_hex(first.output)
    # Same signer, one more comment in the code: another measurement, and the key was sealed for the first only.
    other = _modified_quickstart(tmp_path, keys / "quickstart-signer.pem")
    result = runner.invoke(cli, ["quickstart", "--decrypt", ciphertext_hex, "--key-store", str(keys),
                                 "--backend", "sim", "--image", str(other)])
    assert result.exit_code == 1
    assert "error: PERMISSION_DENIED: cannot unseal the quickstart key in the host's key store" in result.output
    assert "sealed (measurement policy) for measurement" in result.output
    assert "Decrypted message" not in result.output
    # The image built from the key store's signer is still the enclave that can.
    again = runner.invoke(cli, ["quickstart", "--decrypt", ciphertext_hex, "--key-store", str(keys),
                                "--backend", "sim"])
    assert again.output == "Decrypted message:\nsecret\n"


def test_the_signer_policy_lets_the_signers_next_build_decrypt(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    runner = CliRunner()
    first = runner.invoke(cli, ["quickstart", "--message", "for every build", "--key-store", str(keys),
                                "--seal-policy", "signer", "--backend", "sim"])
    assert first.exit_code == 0, first.output
    # The demo says out loud that its signing key sits next to the sealed key.
    assert "anyone with that directory can build an enclave that unseals it" in first.stderr
    ciphertext_hex = _encrypted_hex(first.stdout)
    next_build = _modified_quickstart(tmp_path, keys / "quickstart-signer.pem")
    result = runner.invoke(cli, ["quickstart", "--decrypt", ciphertext_hex, "--key-store", str(keys),
                                 "--backend", "sim", "--image", str(next_build)])
    assert result.output == "Decrypted message:\nfor every build\n"

    other_key = tmp_path / "someone-else.pem"
    assert runner.invoke(cli, ["keygen", "-o", str(other_key)]).exit_code == 0
    someone_elses = _modified_quickstart(tmp_path, other_key)
    refused = runner.invoke(cli, ["quickstart", "--decrypt", ciphertext_hex, "--key-store", str(keys),
                                  "--backend", "sim", "--image", str(someone_elses)])
    assert refused.exit_code == 1
    assert "PERMISSION_DENIED" in refused.output
    assert "sealed (signer policy) for signer" in refused.output


def test_a_key_store_others_can_write_to_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    keys.chmod(0o777)
    result = CliRunner().invoke(cli, ["quickstart", "--message", "x", "--key-store", str(keys), "--backend", "sim"])
    assert result.exit_code == 1
    assert "nobody else can write" in result.output
    assert list(keys.iterdir()) == []


def test_trust_platform_reaches_the_proxy_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[asylo.SimLoadConfig | asylo.RemoteLoadConfig] = []

    def record(message: str, config: asylo.SimLoadConfig | asylo.RemoteLoadConfig, **_: object) -> None:
        seen.append(config)

    monkeypatch.setattr(quickstart_module, "run_quickstart", record)
    result = CliRunner().invoke(cli, ["quickstart", "--message", "x", "--trust-platform", FINGERPRINT.upper(),
                                      "--trust-platform", "cd" * 32])
    assert result.exit_code == 0, result.output
    [config] = seen
    assert isinstance(config, asylo.RemoteLoadConfig)
    assert config.proxy.trusted_platforms == (FINGERPRINT, "cd" * 32)
