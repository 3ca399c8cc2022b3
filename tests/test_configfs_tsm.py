"""The configfs-tsm attester against a TEST DOUBLE of configfs-tsm (a FUSE filesystem that follows the kernel's
file protocol; see tests/configfs_tsm_double.py). Not a confidential VM: nothing here ran on hardware."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from asylo.identity.configfs_tsm import INBLOB_SIZE, MAX_BLOB_SIZE, ConfigfsTsm, NoTsmProviderError
from asylo.identity.machine import PlatformOptions, detect_platform
from asylo.status import AttestationError, FailedPreconditionError, InvalidArgumentError
from tests.tsm_helpers import configfs_tsm_double

DATA = bytes(range(64))


def test_a_report_follows_the_file_protocol_and_leaves_no_directory(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo") as root:
        tsm = ConfigfsTsm(root, provider="sev_guest")
        assert tsm.present() and tsm.read_provider() == "sev_guest"
        report = tsm.report(DATA)
        assert report.outblob == b"REPORT:" + DATA
        assert report.auxblob == b""  # the provider gave none (ENXIO, as sev_guest without certificates)
        assert report.provider == "sev_guest"
        assert os.listdir(root) == []  # the request's directory is gone


def test_concurrent_reports_each_get_their_own_directory(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo") as root:
        tsm = ConfigfsTsm(root)
        results: dict[int, bytes] = {}

        def request(index: int) -> None:
            results[index] = tsm.report(bytes([index]) * INBLOB_SIZE).outblob

        threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == {i: b"REPORT:" + bytes([i]) * INBLOB_SIZE for i in range(8)}
        assert os.listdir(root) == []


def test_a_privlevel_is_written_and_counted_in_the_generation(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo") as root:
        assert ConfigfsTsm(root, privlevel=2).report(DATA).outblob == b"REPORT:" + DATA


def test_a_generation_that_moves_during_the_read_is_refused(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--race") as root:
        with pytest.raises(AttestationError, match=r"generation moved from 1 to 2.*another writer"):
            ConfigfsTsm(root).report(DATA)
        assert os.listdir(root) == []


def test_a_write_by_another_before_our_read_is_refused(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--other-writer") as root:
        with pytest.raises(AttestationError, match=r"generation is 2 after our 1 write\(s\): another writer"):
            ConfigfsTsm(root).report(DATA)
        assert os.listdir(root) == []


def test_configfs_tsm_without_a_provider_says_so_and_auto_falls_back(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--no-provider") as root:
        with pytest.raises(NoTsmProviderError, match="has no attestation provider"):
            ConfigfsTsm(root).report(DATA)
        options = PlatformOptions(kind="auto", configfs_tsm=root, nsm_device=tmp_path / "no-nsm",
                                  sim_state=tmp_path / "sim")
        # This machine has no SEV/TDX guest device, so nothing else is on offer: sim, and says so.
        assert detect_platform(options) == "sim"


def test_an_oversized_outblob_is_refused_not_truncated(tmp_path: Path) -> None:
    (tmp_path / "over").mkdir()
    with (configfs_tsm_double(tmp_path / "over", "--echo", "--outblob-size", str(MAX_BLOB_SIZE + 1)) as root,
          pytest.raises(AttestationError, match=f"outblob is over {MAX_BLOB_SIZE} bytes")):
        ConfigfsTsm(root).report(DATA)
    (tmp_path / "fits").mkdir()
    with configfs_tsm_double(tmp_path / "fits", "--echo", "--outblob-size", str(MAX_BLOB_SIZE)) as root:
        assert len(ConfigfsTsm(root).report(DATA).outblob) == MAX_BLOB_SIZE


@pytest.mark.parametrize("missing", ["outblob", "generation", "provider", "inblob"])
def test_a_missing_attribute_is_named(tmp_path: Path, missing: str) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--omit", missing) as root:
        with pytest.raises(AttestationError, match=f"configfs-tsm has no {missing}"):
            ConfigfsTsm(root).report(DATA)
        assert os.listdir(root) == []


def test_another_provider_than_the_expected_one_is_refused(tmp_path: Path) -> None:
    with configfs_tsm_double(tmp_path, "--echo", "--provider", "tdx_guest") as root:
        with pytest.raises(FailedPreconditionError, match="served by 'tdx_guest', not 'sev_guest'"):
            ConfigfsTsm(root, provider="sev_guest").report(DATA)
        assert ConfigfsTsm(root, provider="tdx_guest").report(DATA).provider == "tdx_guest"


def test_no_configfs_tsm_says_what_is_missing(tmp_path: Path) -> None:
    tsm = ConfigfsTsm(tmp_path / "absent")
    assert not tsm.present()
    with pytest.raises(FailedPreconditionError, match=r"configfs-tsm not found at .*Linux 6\.7"):
        tsm.report(DATA)


def test_report_data_must_be_64_bytes_and_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="exactly 64 bytes"):
        ConfigfsTsm(tmp_path).report(b"short")
    with pytest.raises(InvalidArgumentError, match="unknown configfs-tsm provider"):
        ConfigfsTsm(tmp_path, provider="sgx")
    with pytest.raises(InvalidArgumentError, match=r"privlevel must be 0\.\.3"):
        ConfigfsTsm(tmp_path, privlevel=4)
