"""Starting and stopping a software TPM 2.0 (swtpm, Debian's swtpm and swtpm-tools) for the TPM platform's tests.

`running_swtpm(directory)` manufactures a fresh TPM in `directory` with `swtpm_setup`: an RSA-2048 EK and an ECC P-384
EK, each with a certificate (NV 0x01c00002 and 0x01c00016) and a platform certificate, issued by swtpm_localca, a local
CA whose state also lives in `directory` (a configuration of our own, never /var/lib/swtpm-localca). The local CA is
two certificates: a self-signed root, `swtpm-localca-rootca-cert.pem` (what tests name as the "manufacturer CA"), and
the intermediate it signs, `issuercert.pem` (CN=swtpm-localca), which issues the EK certificates. Then it runs
`swtpm socket` on two free loopback ports (the TPM and its control channel), yields what the tests need, and stops
and reaps swtpm afterwards.

Where swtpm or tpm2-pytss is missing the tests skip saying why, unless ASYLO_REQUIRE_SWTPM=1 (CI on a machine that
installs them), where they fail instead: a skipped TPM test there would hide a broken install.

swtpm is a software TPM. Nothing these tests show ran on a hardware TPM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "ASYLO_REQUIRE_SWTPM"
#: swtpm_setup makes two EKs and three certificates (the local CA's keys on first use): about a second here.
SETUP_TIMEOUT = 60
START_TIMEOUT = 10
STOP_TIMEOUT = 10
#: Two free ports are found, then bound by swtpm: another process may take one in between, so try again.
START_ATTEMPTS = 3


@dataclass(frozen=True)
class Swtpm:
    """A running swtpm: the TCTI to reach it, and the local CA's certificates."""

    tcti: str
    port: int
    ca_certificate: Path
    intermediate_certificate: Path
    state_dir: Path


def swtpm_unavailable() -> str | None:
    """Why a software TPM cannot be used here, or None."""
    for tool in ("swtpm", "swtpm_setup", "swtpm_localca"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install swtpm swtpm-tools)"
    try:
        import tpm2_pytss  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        return f"tpm2-pytss is not importable ({exc}): pip install 'pyasylo[tpm]' (needs libtss2-dev)"
    return None


def skip_unless_tss() -> None:
    """Skip the calling test, saying why, if tpm2-pytss is missing (fail instead where ASYLO_REQUIRE_SWTPM=1)."""
    try:
        import tpm2_pytss  # noqa: F401, PLC0415
    except (ImportError, OSError) as exc:
        reason = f"tpm2-pytss is not importable ({exc}): pip install 'pyasylo[tpm]' (needs libtss2-dev)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the TPM tests cannot run: {reason}")
        pytest.skip(f"needs the TSS's Python bindings: {reason}")


def skip_unless_swtpm() -> None:
    """Skip the calling test, saying why, if there is no swtpm (fail instead where ASYLO_REQUIRE_SWTPM=1)."""
    reason = swtpm_unavailable()
    if reason is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the TPM tests cannot run: {reason}")
    pytest.skip(f"needs a software TPM: {reason}")


def manufacture(directory: Path) -> tuple[Path, Path, Path]:
    """Make a TPM's state in `directory`/state with EK certificates from a local CA in `directory`/ca; return the
    state directory, the CA's root certificate and its intermediate."""
    state, ca, scratch = directory / "state", directory / "ca", directory / "tmp"
    for path in (state, ca, scratch):
        path.mkdir(mode=0o700)
    localca_conf = directory / "swtpm-localca.conf"
    localca_conf.write_text(f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\nissuercert = {ca}/issuercert.pem\n"
                            f"certserial = {ca}/certserial\n")
    localca_options = directory / "swtpm-localca.options"
    localca_options.write_text("--platform-manufacturer pyasylo-tests\n--platform-version 2.1\n"
                               "--platform-model swtpm\n")
    setup_conf = directory / "swtpm_setup.conf"
    setup_conf.write_text(f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
                          f"create_certs_tool_config = {localca_conf}\n"
                          f"create_certs_tool_options = {localca_options}\nactive_pcr_banks = sha256\n")
    # TMPDIR: swtpm_setup writes the certificates to a directory of its own under it before storing them in NV.
    env = {**os.environ, "TMPDIR": str(scratch)}
    result = subprocess.run(
        ["swtpm_setup", "--tpm2", "--tpmstate", str(state), "--config", str(setup_conf), "--create-ek-cert",
         "--create-platform-cert", "--pcr-banks", "sha256"],
        capture_output=True, text=True, timeout=SETUP_TIMEOUT, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"swtpm_setup failed ({result.returncode}): {(result.stdout + result.stderr)[-3000:]}")
    root, intermediate = ca / "swtpm-localca-rootca-cert.pem", ca / "issuercert.pem"
    if not root.is_file() or not intermediate.is_file():
        raise RuntimeError(f"swtpm_localca made no CA certificates in {ca}: {sorted(p.name for p in ca.iterdir())}")
    return state, root, intermediate


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on loopback now (swtpm's TPM and control channels)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("found no two consecutive free ports on 127.0.0.1")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
    if process.stderr is not None:
        process.stderr.close()


@contextlib.contextmanager
def running_swtpm(directory: Path) -> Iterator[Swtpm]:
    """A freshly manufactured swtpm with its state in `directory` (see the module doc); stopped and reaped after."""
    skip_unless_swtpm()
    state, root, intermediate = manufacture(directory)
    for _ in range(START_ATTEMPTS):
        port = free_port_pair()
        process = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
             "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1", "--tpmstate", f"dir={state}",
             "--flags", "not-need-init,startup-clear"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while process.poll() is None and not _listening(port + 1) and time.monotonic() < deadline:
                time.sleep(0.02)
            if process.poll() is not None:  # most likely a port taken in between: try others
                continue
            if not _listening(port + 1):
                raise RuntimeError(f"swtpm did not listen on port {port + 1} within {START_TIMEOUT} s")
            yield Swtpm(f"swtpm:host=127.0.0.1,port={port}", port, root, intermediate, state)
            return
        finally:
            _stop(process)
    raise RuntimeError(f"swtpm did not start in {START_ATTEMPTS} attempts")


def extend_pcr(tcti: str, index: int, data: bytes, bank: str = "sha256") -> bytes:
    """Extend PCR `index` of `bank` with the digest of `data` (as a measurement would); return the digest extended.
    PCRs 0-15 can be extended at locality 0, the one the TCTI speaks at."""
    from tpm2_pytss import ESAPI  # noqa: PLC0415

    with ESAPI(tcti) as esapi:
        return extend_pcr_in(esapi, index, data, bank)


def extend_pcr_in(esapi: Any, index: int, data: bytes, bank: str = "sha256") -> bytes:
    """`extend_pcr` through an ESAPI context already open (swtpm serves one connection at a time)."""
    from tpm2_pytss import ESYS_TR, TPM2_ALG, TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA  # noqa: PLC0415

    algorithm = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}[bank]
    digest = hashlib.new(bank, data).digest()
    value = TPMT_HA(hashAlg=algorithm, digest=TPMU_HA(**{bank: digest}))
    esapi.pcr_extend(ESYS_TR.parse(f"pcr{index}"), TPML_DIGEST_VALUES([value]))
    return digest
