"""What one measurement collected: per-round values, and (for latencies) every call's time."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

LATENCY_UNIT = "µs"
CALLS_UNIT = "calls/s"
BULK_UNIT = "MiB/s"


@dataclass
class Series:
    """Rounds of one measurement. A latency series keeps every call's time, and its median is over all of them; a
    throughput series has one value per round, and its median is over the rounds."""

    unit: str
    rounds: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)

    def add_latencies(self, nanoseconds: list[int]) -> None:
        if not nanoseconds:
            raise ValueError("a round needs at least one call")
        micros = [ns / 1000 for ns in nanoseconds]
        self.rounds.append(statistics.median(micros))
        self.samples.extend(micros)

    def add_value(self, value: float) -> None:
        self.rounds.append(value)

    @property
    def median(self) -> float:
        values = self.samples or self.rounds
        return statistics.median(values) if values else float("nan")

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"unit": self.unit, "median": self.median, "rounds": self.rounds}
        if self.samples:
            data["calls"] = len(self.samples)
            data["p10"], data["p90"] = _deciles(self.samples)
        return data


def _deciles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    cuts = statistics.quantiles(values, n=10)
    return cuts[0], cuts[-1]
