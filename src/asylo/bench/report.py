"""The benchmark's results: rows that compare the project to its baselines, the table, the JSON."""

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
    """One comparison: the project's median against the baseline's (the raw grpc.aio stream, timed on its loop),
    with the floor under it (the raw blocking-TCP echo) and the project over its gRPC transport beside it.

    `target` bounds `ratio` (project / baseline) and `tcp_target` bounds `ratio_tcp` (project / raw TCP): at most
    the target where lower is better (latency), at least where higher is better (throughput); None for rows shown
    for information. A row meets its targets when it meets every one it has.
    """

    key: str
    label: str
    baseline: Series
    asylo: Series
    raw_sync: Series | None = None
    target: float | None = None
    #: What the baseline column is, where it is not the plain raw in-loop stream of the same thing.
    baseline_note: str = ""
    #: The raw blocking-TCP echo doing the same thing (None where there is nothing to compare it with).
    raw_tcp: Series | None = None
    #: The same measurement over the project's gRPC transport ("asylo" is the default transport).
    asylo_grpc: Series | None = None
    tcp_target: float | None = None
    #: What the raw TCP column is, where it is not the same thing over a blocking socket.
    tcp_note: str = ""

    def __post_init__(self) -> None:
        if self.tcp_target is not None and self.raw_tcp is None:
            raise ValueError(f"{self.key}: a target against raw TCP needs a raw TCP measurement")

    @property
    def higher_is_better(self) -> bool:
        return self.asylo.unit != LATENCY_UNIT

    @property
    def ratio(self) -> float:
        return _ratio(self.asylo, self.baseline)

    @property
    def ratio_tcp(self) -> float | None:
        """asylo / raw TCP, where there is a raw TCP measurement."""
        return None if self.raw_tcp is None else _ratio(self.asylo, self.raw_tcp)

    @property
    def ratio_grpc(self) -> float | None:
        """asylo over its gRPC transport / the baseline, where the row has it."""
        return None if self.asylo_grpc is None else _ratio(self.asylo_grpc, self.baseline)

    def _within(self, ratio: float, target: float) -> bool:
        return ratio >= target if self.higher_is_better else ratio <= target

    @property
    def met(self) -> bool | None:
        checks = [(self.ratio, self.target)]
        if self.ratio_tcp is not None:
            checks.append((self.ratio_tcp, self.tcp_target))
        bounded = [(ratio, target) for ratio, target in checks if target is not None]
        if not bounded:
            return None
        return all(self._within(ratio, target) for ratio, target in bounded)

    @property
    def _op(self) -> str:
        return ">=" if self.higher_is_better else "<="

    @property
    def target_text(self) -> str:
        parts = [] if self.target is None else [f"{self._op} {self.target:g}x"]
        if self.tcp_target is not None:
            parts.append(f"tcp {self._op} {self.tcp_target:g}x")
        return ", ".join(parts) or "(info)"

    def _target_json(self, target: float | None) -> dict[str, object] | None:
        return None if target is None else {"op": self._op, "ratio": target}

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.asylo.unit,
            "better": "higher" if self.higher_is_better else "lower",
            "baseline": self.baseline.to_json(),
            "baseline_note": self.baseline_note,
            "raw_sync": _series_json(self.raw_sync),
            "raw_tcp": _series_json(self.raw_tcp),
            "raw_tcp_note": self.tcp_note,
            "asylo": self.asylo.to_json(),
            "asylo_grpc": _series_json(self.asylo_grpc),
            "ratio": self.ratio,
            "ratio_tcp": self.ratio_tcp,
            "ratio_grpc": self.ratio_grpc,
            "target": self._target_json(self.target),
            "target_tcp": self._target_json(self.tcp_target),
            "met": self.met,
        }


def _ratio(numerator: Series, denominator: Series) -> float:
    below = denominator.median
    return numerator.median / below if below else math.nan


def _series_json(series: Series | None) -> dict[str, object] | None:
    return None if series is None else series.to_json()


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == LATENCY_UNIT:
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"


def _cell(series: Series | None, unit: str) -> str:
    return "-" if series is None else _number(series.median, unit)


def _times(ratio: float | None) -> str:
    return "-" if ratio is None or math.isnan(ratio) else f"{ratio:.2f}x"


def format_table(rows: list[Row]) -> str:
    header = ("measurement", "raw aio (in-loop)", "raw sync", "raw tcp", "asylo", "asylo grpc", "ratio", "vs tcp",
              "target", "result")
    body = []
    for row in rows:
        unit = row.asylo.unit
        result = {None: "", True: "PASS", False: "MISS"}[row.met]
        body.append((row.label, _number(row.baseline.median, unit), _cell(row.raw_sync, unit),
                     _cell(row.raw_tcp, unit), _number(row.asylo.median, unit), _cell(row.asylo_grpc, unit),
                     _times(row.ratio), _times(row.ratio_tcp), row.target_text, result))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                          for i, (cell, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    notes = [f"  {row.label}: {column} is {note}" for row in rows
             for column, note in (("baseline", row.baseline_note), ("raw tcp", row.tcp_note)) if note]
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
