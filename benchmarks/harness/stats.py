"""Medians over repeats, paired differences and ratios (no figure without its repeats)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


def paired_added(target: list[float], base: list[float]) -> float:
    """Median over repeats of (target − base), each pair measured in the same repeat."""
    return median(t - b for t, b in zip(target, base, strict=True))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def spread(values: Iterable[float]) -> tuple[float, float]:
    """(min, max) over repeats, quoted beside medians so the noise is visible."""
    items = list(values)
    return (min(items), max(items)) if items else (float("nan"), float("nan"))
