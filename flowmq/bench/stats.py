"""Rates and percentiles."""

from __future__ import annotations

MB = 1000000.0  # MB/s figures are 10^6 payload bytes per second


def rate(count: float, seconds) -> float:
    """``count`` per second; 0 when the interval is unknown or empty."""
    if not seconds or seconds <= 0:
        return 0.0
    return count / seconds


def percentile(sorted_values, p: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 when empty)."""
    n = len(sorted_values)
    if not n:
        return 0.0
    rank = int(-(-p * n // 100))  # ceil(p/100 * n)
    return float(sorted_values[min(n, max(1, rank)) - 1])


def latency_summary(values) -> dict:
    """p50/p90/p99/max (and mean) of latencies in microseconds."""
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_us": percentile(ordered, 50),
        "p90_us": percentile(ordered, 90),
        "p99_us": percentile(ordered, 99),
        "max_us": float(ordered[-1]) if ordered else 0.0,
        "mean_us": (sum(ordered) / len(ordered)) if ordered else 0.0,
    }


def spread(counts) -> dict:
    """How evenly a queue group shared the messages."""
    if not counts:
        return {"min": 0, "max": 0, "mean": 0.0, "spread_pct": 0.0}
    mean = sum(counts) / float(len(counts))
    return {
        "min": min(counts),
        "max": max(counts),
        "mean": mean,
        "spread_pct": (100.0 * (max(counts) - min(counts)) / mean) if mean else 0.0,
    }
