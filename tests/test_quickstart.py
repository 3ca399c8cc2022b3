"""The quickstart: Asylo's demo enclave, through the CLI as a user runs it, and through the API."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import asylo
from asylo.cli.main import cli
from asylo.cli.quickstart import demo_proto, quickstart_enclave_dir, run_quickstart

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


@pytest.mark.parametrize("args, message", [([], "Missing option '--message'"),
                                           (["--message", ""], "--message must not be empty"),
                                           (["--message", "x", "--backend", "nope"], "Invalid value for '--backend'"),
                                           (["--message", "x", "--backend", "sim", "--tls"], "--tls applies to")])
def test_quickstart_bad_arguments(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["quickstart", *args])
    assert result.exit_code == 2
    assert message in result.output


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
