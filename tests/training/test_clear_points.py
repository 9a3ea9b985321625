"""The joint clear-point rule (pure numpy: runs without the training extra)."""

from __future__ import annotations

import itertools

import numpy as np

from guard.training.clear_points import allowed_misses, cleared_by, joint_clear_points


def _brute_force(
    sieve: np.ndarray, exit_risk: np.ndarray, harmful: np.ndarray, benign: np.ndarray, misses: int
) -> int:
    """Most benign texts any pair of points clears within the allowed harmful misses."""
    points = [*np.unique(np.concatenate([sieve, exit_risk])), 1.1]
    best = 0
    for s, e in itertools.product(points, points):
        cleared = cleared_by(sieve, exit_risk, s, e)
        if (cleared & harmful).sum() <= misses:
            best = max(best, int((cleared & benign).sum()))
    return best


def test_allowed_misses_rounds_down() -> None:
    assert allowed_misses(4343, 0.995) == 21
    assert allowed_misses(100, 0.995) == 0
    assert allowed_misses(200, 0.995) == 1  # exactly 1.0 despite float error


def test_matches_brute_force_on_random_scores() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = 60
        harmful = rng.random(n) < 0.4
        benign = ~harmful
        # Harmful texts score higher on both stages, with overlap and a few outliers.
        sieve = np.clip(rng.normal(0.3 + 0.4 * harmful, 0.2), 0, 1)
        exit_risk = np.clip(rng.normal(0.3 + 0.4 * harmful, 0.2), 0, 1)
        for recall in (0.9, 0.95, 1.0):
            misses = allowed_misses(int(harmful.sum()), recall)
            points = joint_clear_points(sieve, exit_risk, harmful, benign, misses)
            assert points.harmful_cleared <= misses
            cleared = cleared_by(sieve, exit_risk, points.sieve, points.exit)
            assert int((cleared & harmful).sum()) == points.harmful_cleared
            assert int((cleared & benign).sum()) == points.benign_cleared
            assert points.benign_cleared == _brute_force(sieve, exit_risk, harmful, benign, misses)


def test_spends_the_slack_that_two_points_tuned_alone_leave() -> None:
    # Each harmful outlier fools one stage only: tuned alone, each point must sit below
    # its outlier; together, neither outlier is cleared even with both points high.
    sieve = np.array([0.01, 0.9, 0.9, 0.9, 0.05, 0.1, 0.2, 0.3])
    exit_risk = np.array([0.9, 0.02, 0.9, 0.9, 0.1, 0.2, 0.05, 0.3])
    harmful = np.array([True, True, True, True, False, False, False, False])
    points = joint_clear_points(sieve, exit_risk, harmful, ~harmful, misses=0)
    assert points.harmful_cleared == 0
    assert points.benign_cleared == 4
    assert points.forwarded == 1.0
    assert points.benign_cleared_share == 1.0


def test_no_harmful_texts_clears_everything() -> None:
    risk = np.array([0.2, 0.7])
    points = joint_clear_points(risk, risk, np.zeros(2, bool), np.ones(2, bool), 0)
    assert (points.sieve, points.exit) == (1.0, 1.0)
    assert points.benign_cleared == 2


def test_texts_too_long_to_clear_count_as_forwarded() -> None:
    # The caller marks unclearable windows with infinite risk: never cleared, never a miss.
    sieve = np.array([np.inf, 0.5, 0.1])
    exit_risk = np.array([np.inf, 0.5, 0.1])
    harmful = np.array([True, True, False])
    points = joint_clear_points(sieve, exit_risk, harmful, ~harmful, misses=0)
    assert points.harmful_cleared == 0
    assert points.benign_cleared == 1
    assert points.sieve <= 0.5 or points.exit <= 0.5
