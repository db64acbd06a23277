"""Latency histograms and delivery bitmaps that merge across processes.

Load generator workers record into these and ship them to the parent as plain
lists/bytes, so a run with millions of deliveries never moves per-sample data
between processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

# Buckets are 1% wide on a log scale: percentiles are exact to within 1%,
# which is far below the run-to-run noise on a shared machine.
_BUCKETS_PER_E = 100.0
_MAX_BUCKET = 2400  # exp(24) microseconds is about 300 days


class Histogram:
    """Microsecond values in logarithmic buckets, plus exact count/sum/min/max."""

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def record(self, micros: int) -> None:
        if micros < 1:
            micros = 1
        bucket = min(int(math.log(micros) * _BUCKETS_PER_E), _MAX_BUCKET)
        self.counts[bucket] = self.counts.get(bucket, 0) + 1
        self.count += 1
        self.total += micros
        if self.min is None or micros < self.min:
            self.min = micros
        if self.max is None or micros > self.max:
            self.max = micros

    def merge(self, other: Histogram) -> None:
        for bucket, count in other.counts.items():
            self.counts[bucket] = self.counts.get(bucket, 0) + count
        self.count += other.count
        self.total += other.total
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max

    def percentile(self, fraction: float) -> float | None:
        """The value (µs) below which ``fraction`` of the samples lie."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                # The bucket's geometric middle, clamped to what was really seen.
                value = math.exp((bucket + 0.5) / _BUCKETS_PER_E)
                low = self.min if self.min is not None else value
                high = self.max if self.max is not None else value
                return min(max(value, low), high)
        return float(self.max) if self.max is not None else None

    def summary_ms(self) -> dict[str, float | int | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value / 1000.0, 3)

        return {
            "count": self.count,
            "p50_ms": ms(self.percentile(0.50)),
            "p90_ms": ms(self.percentile(0.90)),
            "p99_ms": ms(self.percentile(0.99)),
            "p999_ms": ms(self.percentile(0.999)),
            "max_ms": ms(None if self.max is None else float(self.max)),
            "mean_ms": ms(self.total / self.count if self.count else None),
        }

    def to_wire(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts.items()),
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Histogram:
        histogram = cls()
        histogram.counts = {int(bucket): int(count) for bucket, count in wire["counts"]}
        histogram.count = int(wire["count"])
        histogram.total = int(wire["total"])
        histogram.min = wire["min"]
        histogram.max = wire["max"]
        return histogram

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        result = cls()
        for part in parts:
            result.merge(part)
        return result


class Bitmap:
    """A growable set of small non-negative integers (sequence numbers)."""

    __slots__ = ("bits",)

    def __init__(self, data: bytes = b"") -> None:
        self.bits = bytearray(data)

    def add(self, value: int) -> bool:
        """Set the bit; False when it was already set (a duplicate)."""
        index, mask = value >> 3, 1 << (value & 7)
        if index >= len(self.bits):
            self.bits.extend(bytes(index - len(self.bits) + 64))
        if self.bits[index] & mask:
            return False
        self.bits[index] |= mask
        return True

    def __contains__(self, value: int) -> bool:
        index = value >> 3
        return index < len(self.bits) and bool(self.bits[index] & (1 << (value & 7)))

    def as_int(self) -> int:
        return int.from_bytes(self.bits, "little")


def popcount(value: int) -> int:
    return value.bit_count()


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 3)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
