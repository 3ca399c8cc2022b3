"""`asylo bench --quick` (and `--provision --quick`) run end to end (servers and proxies all reaped) and write JSON.

A smoke test only: the counts are tiny and no timing is asserted; the benchmark itself is run by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from asylo.cli.bench_command import bench


def test_quick_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "bench-results.json"
    result = CliRunner().invoke(bench, ["--quick", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "empty call 64 B" in result.output
    assert "targets met:" in result.output

    document = json.loads(out.read_text())
    assert document["schema"] == "asylo-bench/1"
    assert document["settings"]["repeat"] == 1
    assert isinstance(document["targets_met"], bool)
    rows = {row["key"]: row for row in document["rows"]}
    assert {"empty_call_64", "empty_call_65536", "empty_call_1048576", "nested_exit_call", "threads",
            "bulk"} <= set(rows)
    for row in rows.values():
        for side in ("baseline", "asylo"):
            assert row[side]["unit"] == row["unit"]
            assert len(row[side]["rounds"]) == 1
        assert row["baseline"]["median"] > 0
        assert row["better"] in ("lower", "higher")
        if row["target"] is None:
            assert row["met"] is None
        else:
            assert row["met"] is (row["ratio"] <= row["target"]["ratio"] if row["better"] == "lower"
                                  else row["ratio"] >= row["target"]["ratio"])
    for key in ("empty_call_64", "empty_call_65536", "empty_call_1048576", "threads", "bulk"):
        assert rows[key]["asylo"]["median"] > 0
        assert math.isclose(rows[key]["ratio"], rows[key]["asylo"]["median"] / rows[key]["baseline"]["median"])
    assert rows["empty_call_64"]["unit"] == "µs" and rows["empty_call_64"]["asylo"]["calls"] == 20
    assert rows["threads"]["unit"] == "calls/s" and rows["bulk"]["unit"] == "MiB/s"


def test_only_measures_the_groups_asked_for(tmp_path: Path) -> None:
    out = tmp_path / "bench-results.json"
    result = CliRunner().invoke(bench, ["--quick", "--only", "bulk", "--only", "nested", "--json", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["settings"]["groups"] == ["nested", "bulk"]
    assert {row["key"] for row in document["rows"]} == {"nested_exit_call", "nested_entry_total", "enter_and_run",
                                                        "bulk", "bulk_upload_then_download"}
    assert "without attestation" not in result.output  # the encryption group's second enclave was never loaded


def test_only_refuses_unknown_groups_and_provision() -> None:
    unknown = CliRunner().invoke(bench, ["--quick", "--only", "everything"])
    assert unknown.exit_code == 2 and "everything" in unknown.output
    provision = CliRunner().invoke(bench, ["--provision", "--only", "bulk"])
    assert provision.exit_code == 2 and "--only" in provision.output


def test_quick_provision_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "provision.json"
    result = CliRunner().invoke(bench, ["--provision", "--quick", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warm (--warm 1, pre-started proxy)" in result.output
    document = json.loads(out.read_text())
    assert document["schema"] == "asylo-bench-provision/1"
    assert len(document["cold"]) == len(document["warm"]) == 3
    assert all(value > 0 for value in document["cold"] + document["warm"])
    assert document["met"] is (document["warm_median"] <= document["target"]["warm_median_at_most_ms"])
