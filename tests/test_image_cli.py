"""`asylo keygen`, `asylo build`, `asylo inspect`: through click's CliRunner, and once as a real process."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from asylo.cli.image_commands import build, inspect, keygen
from asylo.image import load_image, load_signing_key, public_key_bytes, signer_id

MANIFEST_TOML = """\
name = "demo_enclave"
entry_point = "demo_enclave:DemoEnclave"
product_id = 1
svn = 1
debug = true
"""

FILES = {
    "demo_enclave.py": b"class DemoEnclave:\n    pass\n",
    "helpers/__init__.py": b"",
    "helpers/util.py": b"ANSWER = 42\n",
}

HEX64 = re.compile(r"[0-9a-f]{64}")


def run(command: click.Command, *args: str) -> Result:
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result: Result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def enclave_dir(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    (root / "helpers").mkdir(parents=True)
    (root / "enclave.toml").write_text(MANIFEST_TOML, encoding="utf-8")
    for path, content in FILES.items():
        (root / path).write_bytes(content)
    return root


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "signer.pem"
    assert run(keygen, "-o", path).exit_code == 0
    return path


@pytest.fixture
def image_path(tmp_path: Path, enclave_dir: Path, key_path: Path) -> Path:
    path = tmp_path / "demo.img"
    assert run(build, enclave_dir, "--key", key_path, "-o", path).exit_code == 0
    return path


def test_keygen_writes_a_private_key_and_prints_the_signer(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    result = run(keygen, "-o", path)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    expected = signer_id(public_key_bytes(load_signing_key(path))).hex()
    assert result.stdout == f"signer:      {expected}\n"


def test_keygen_refuses_to_overwrite_without_force(key_path: Path) -> None:
    before = key_path.read_bytes()
    assert_one_line_error(run(keygen, "-o", key_path), "already exists")
    assert key_path.read_bytes() == before
    result = run(keygen, "-o", key_path, "--force")
    assert result.exit_code == 0, result.output
    assert key_path.read_bytes() != before
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_build_prints_measurement_and_signer(tmp_path: Path, enclave_dir: Path, key_path: Path) -> None:
    out = tmp_path / "demo.img"
    result = run(build, enclave_dir, "--key", key_path, "-o", out)
    assert result.exit_code == 0, result.output
    image = load_image(out)
    assert result.stdout == f"measurement: {image.measurement_hex}\nsigner:      {image.signer_hex}\n"
    # Building again gives the same file.
    again = tmp_path / "again.img"
    assert run(build, enclave_dir, "--key", key_path, "-o", again).exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_build_errors_are_one_line(tmp_path: Path, enclave_dir: Path, key_path: Path) -> None:
    out = tmp_path / "demo.img"
    assert_one_line_error(run(build, enclave_dir, "--key", tmp_path / "nope.pem", "-o", out), "not found")
    (enclave_dir / "enclave.toml").write_text(MANIFEST_TOML + "snv = 2\n", encoding="utf-8")
    assert_one_line_error(run(build, enclave_dir, "--key", key_path, "-o", out), "manifest key 'snv'")
    (enclave_dir / "enclave.toml").write_text(MANIFEST_TOML, encoding="utf-8")
    missing_dir = tmp_path / "no" / "such"
    assert_one_line_error(
        run(build, enclave_dir, "--key", key_path, "-o", missing_dir / "demo.img"),
        f"{missing_dir / 'demo.img'}: No such file or directory",
    )
    assert not out.exists()


def test_inspect_prints_the_documented_lines(image_path: Path) -> None:
    result = run(inspect, image_path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    image = load_image(image_path)
    assert lines == [
        "name:        demo_enclave",
        "entry point: demo_enclave:DemoEnclave",
        f"measurement: {image.measurement_hex}",
        f"signer:      {image.signer_hex}",
        "product id:  1",
        "svn:         1",
        "debug:       true",
        "files:       3",
    ]
    assert HEX64.fullmatch(lines[2].split()[-1]) and HEX64.fullmatch(lines[3].split()[-1])


def test_inspect_json(image_path: Path) -> None:
    result = run(inspect, image_path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    image = load_image(image_path)
    assert data["name"] == "demo_enclave"
    assert data["entry_point"] == "demo_enclave:DemoEnclave"
    assert data["measurement"] == image.measurement_hex
    assert data["signer"] == image.signer_hex
    assert data["signer_public_key"] == image.signer_public_key.hex()
    assert (data["product_id"], data["svn"], data["debug"]) == (1, 1, True)
    assert data["files"] == [
        {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        for path, content in sorted(FILES.items())
    ]


def test_inspect_refuses_a_tampered_image(image_path: Path) -> None:
    data = bytearray(image_path.read_bytes())
    data[data.index(b"ANSWER = 42")] ^= 1  # one byte of one file, inside the signed image
    image_path.write_bytes(bytes(data))
    assert_one_line_error(run(inspect, image_path), "measurement mismatch")


@pytest.mark.parametrize(
    ("mangle", "fragment"),
    [
        (lambda data: data[:-5], "image truncated"),
        (lambda data: data + b"\0", "trailing bytes"),
        (lambda data: b"NOTANIMG" + data[8:], "bad magic"),
        (lambda data: b"", "image truncated"),
    ],
)
def test_inspect_refuses_broken_files(image_path: Path, mangle: object, fragment: str) -> None:
    assert callable(mangle)
    image_path.write_bytes(mangle(image_path.read_bytes()))
    assert_one_line_error(run(inspect, image_path), fragment)


def test_inspect_missing_file(tmp_path: Path) -> None:
    assert_one_line_error(run(inspect, tmp_path / "missing.img"), "cannot read image")


@pytest.mark.parametrize("command", [keygen, build, inspect])
def test_every_command_explains_itself(command: click.Command) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert command.get_short_help_str(limit=200) in " ".join(result.stdout.split())
    assert "Usage:" in result.stdout


def test_inspect_as_a_real_process(image_path: Path) -> None:
    # Through the installed entry point's function, in a fresh interpreter: what a user's shell runs.
    entry = "from asylo.cli.main import main; main()"
    good = subprocess.run(
        [sys.executable, "-c", entry, "inspect", str(image_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines()[0] == "name:        demo_enclave"
    assert good.stdout.splitlines()[7] == "files:       3"
    image_path.write_bytes(image_path.read_bytes()[:-1])
    bad = subprocess.run(
        [sys.executable, "-c", entry, "inspect", str(image_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith("error: image truncated") and bad.stderr.count("\n") == 1, bad.stderr
