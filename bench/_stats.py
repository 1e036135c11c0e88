"""Summaries shared by the benchmarks."""

from __future__ import annotations

from asupermachine._core.kvm.host import this_host


def measured_under() -> str:
    """The line above every bench's table: which KVM flavour and CPU the figures come from."""
    return f"\nmeasured under {this_host()}"


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank ``fraction`` percentile (0.5: median, 0.99: p99)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
