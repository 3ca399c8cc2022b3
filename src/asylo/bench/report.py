"""The benchmark's results: rows that compare the project to its baseline, the table, the JSON."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from asylo.bench.series import LATENCY_UNIT, Series

SCHEMA = "asylo-bench/1"


@dataclass
class Row:
    """One comparison: the project's median against the baseline's (the raw grpc.aio stream, timed on its loop).

    `target` bounds `ratio` (project / baseline): at most `target` where lower is better (latency), at least
    `target` where higher is better (throughput); None for rows shown for information.
    """

    key: str
    label: str
    baseline: Series
    asylo: Series
    raw_sync: Series | None = None
    target: float | None = None
    #: What the baseline column is, where it is not the plain raw in-loop stream of the same thing.
    baseline_note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.asylo.unit != LATENCY_UNIT

    @property
    def ratio(self) -> float:
        baseline = self.baseline.median
        return self.asylo.median / baseline if baseline else math.nan

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "(info)"
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}x"

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.asylo.unit,
            "better": "higher" if self.higher_is_better else "lower",
            "baseline": self.baseline.to_json(),
            "baseline_note": self.baseline_note,
            "raw_sync": None if self.raw_sync is None else self.raw_sync.to_json(),
            "asylo": self.asylo.to_json(),
            "ratio": self.ratio,
            "target": None if self.target is None else {"op": ">=" if self.higher_is_better else "<=",
                                                        "ratio": self.target},
            "met": self.met,
        }


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == LATENCY_UNIT:
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def format_table(rows: list[Row]) -> str:
    header = ("measurement", "raw aio (in-loop)", "raw sync", "asylo", "ratio", "target", "result")
    body = []
    for row in rows:
        unit = row.asylo.unit
        result = {None: "", True: "PASS", False: "MISS"}[row.met]
        body.append((row.label, _number(row.baseline.median, unit),
                     "-" if row.raw_sync is None else _number(row.raw_sync.median, unit),
                     _number(row.asylo.median, unit), f"{row.ratio:.2f}x", row.target_text, result))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                          for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    notes = [f"  {row.label}: baseline is {row.baseline_note}" for row in rows if row.baseline_note]
    return "\n".join([line(header), rule, *(line(cells) for cells in body), *(["notes:", *notes] if notes else [])])


def targets_met(rows: list[Row]) -> bool:
    return all(row.met is not False for row in rows)


def write_json(path: str | os.PathLike[str], document: dict[str, object]) -> Path:
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    temporary.replace(target)
    return target


def _finite(value: object) -> object:
    """`value` with NaN and infinities (a measurement that could not be made) as null: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
