"""Where the cascade's two cheap stages clear text: their clear points, chosen together.

A window is cleared (the transformer's tail never sees it) only when both stages score it
below their clear points.  Tuned one at a time, each point forwards ``recall`` of the
harmful prompts the transformer flags, so the pair forwards more than that: a harmful
prompt is lost only if *both* stages miss it.  That slack is benign traffic sent to the
tail for nothing.  :func:`joint_clear_points` spends it: of all pairs that together clear
at most a given number of those prompts, the one that clears the most benign ones.

Pure numpy, so the rule is tested without the training extra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class JointPoints:
    """A pair of clear points and what it does on the texts it was chosen on."""

    sieve: float
    exit: float
    harmful: int  # harmful prompts the transformer flags (the ones that must go on)
    harmful_cleared: int  # of those, cleared by the pair
    benign: int  # benign prompts short enough to be cleared
    benign_cleared: int  # of those, cleared by the pair

    @property
    def forwarded(self) -> float:
        return 1.0 - self.harmful_cleared / max(1, self.harmful)

    @property
    def benign_cleared_share(self) -> float:
        return self.benign_cleared / max(1, self.benign)


def allowed_misses(harmful: int, recall: float) -> int:
    """How many of ``harmful`` prompts may be cleared while forwarding ``recall`` of them."""
    return math.floor((1.0 - recall) * harmful + 1e-9)


def cleared_by(
    sieve_risk: FloatArray, exit_risk: FloatArray, sieve: float, exit_point: float
) -> BoolArray:
    """Which texts both stages clear at these points (length is the caller's business)."""
    result: BoolArray = (sieve_risk < sieve) & (exit_risk < exit_point)
    return result


def joint_clear_points(
    sieve_risk: FloatArray,
    exit_risk: FloatArray,
    harmful: BoolArray,
    benign: BoolArray,
    misses: int,
) -> JointPoints:
    """The pair that clears the most ``benign`` texts and at most ``misses`` ``harmful`` ones.

    ``harmful``: the prompts the transformer flags (whatever their length: a long one
    cannot be cleared and so always counts as forwarded, pass it pre-masked by length if
    the caller wants it excluded).  ``benign``: the benign texts short enough to clear.

    Clearing only grows with either point, so for each sieve point (the candidates are the
    harmful texts' own sieve scores: the highest points before one more gets through) the
    best exit point is the lowest exit score among the harmful texts the sieve would let
    through beyond the allowed misses.  Ties go to the lower sieve point, so the sieve
    does not open wider than the benign side rewards.
    """
    sieve_risk = np.asarray(sieve_risk, dtype=np.float64)
    exit_risk = np.asarray(exit_risk, dtype=np.float64)
    positives = int(harmful.sum())
    h_sieve, h_exit = sieve_risk[harmful], exit_risk[harmful]
    b_sieve, b_exit = sieve_risk[benign], exit_risk[benign]
    # Candidate sieve points: each harmful score (everything strictly below it is let
    # through), plus "let everything through".
    candidates = np.unique(np.concatenate([h_sieve, [np.inf]]))
    best: JointPoints | None = None
    for candidate in candidates:
        through = np.sort(h_exit[h_sieve < candidate])
        exit_point = float(through[misses]) if misses < len(through) else math.inf
        # Stored points are probabilities (at most 1); clamping can only clear less.
        point, exit_point = min(float(candidate), 1.0), min(exit_point, 1.0)
        cleared = int(cleared_by(b_sieve, b_exit, point, exit_point).sum())
        if best is None or cleared > best.benign_cleared:
            lost = int(cleared_by(h_sieve, h_exit, point, exit_point).sum())
            best = JointPoints(point, exit_point, positives, lost, int(benign.sum()), cleared)
    assert best is not None  # candidates always holds inf
    return best
