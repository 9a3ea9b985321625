"""Threshold rules: where a model's flag and block points go.

Rule 1, :func:`tune_thresholds` (used by ``train`` after training and by ``retune``): the
cost-aware points from the dev split of train/.  Rule 2, :func:`matched_thresholds` (``retune
--match REFERENCE``): the points at which a new model raises as many alerts on a fixed pool
of red-team style chat (:func:`alert_pool`) as the reference model does at its own points.
Rule 3, :func:`recall_kept_thresholds` (``retune --keep-recall REFERENCE``): the highest
points at which a new model still catches as much of the dev split's harmful prompts as the
reference does at its own, so it can only gain by flagging less.  All are documented in the
model card.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.classifier.predictor import Predictor
from guard.training import data as data_mod
from guard.training.data import REFUSAL_CLASSES, Example

HARD_BENIGN_MAX_FPR = 0.02  # flag: at most 2% of the dev split's hard benign prompts
BLOCK_MAX_FPR = 0.01  # block: at most 1% of all the dev split's benign prompts


def _rates(risk: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(F1, recall, false-positive rate) of ``risk >= threshold``."""
    predicted = risk >= threshold
    tp = float((predicted & labels).sum())
    fp = float((predicted & ~labels).sum())
    fn = float((~predicted & labels).sum())
    f1 = 2 * tp / max(1.0, 2 * tp + fp + fn)
    return f1, tp / max(1.0, float(labels.sum())), fp / max(1.0, float((~labels).sum()))


def tune_thresholds(
    predictor: Predictor, dev: list[Example]
) -> tuple[float, float, dict[str, float]]:
    """Cost-aware thresholds from the dev split.

    flag: the lowest threshold whose false-positive rate on the dev split's *hard* benign
    prompts (lookalikes, CyberSecEval false-refusal prompts, real chat turns; see
    ``data.HARD_BENIGN_SOURCES``) is at most 2%, and never below the best-F1 threshold.
    Best F1 alone treats a false flag on benign chat as cheap as a miss; an operator who
    sees every tenth conversation flagged turns the guard off.
    block: the lowest threshold, never below flag, whose false-positive rate on all dev
    benign prompts is at most 1%.
    """
    prompts = [e for e in dev if not e.is_reply]
    risk = predictor.harm_probabilities([e.text for e in prompts])[:, 0]
    labels = np.array([bool(e.harmful) for e in prompts])
    grid = np.round(np.arange(0.05, 0.99, 0.005), 3)
    best_f1, best_f1_at = -1.0, 0.5
    for threshold in grid:  # ties go to the lowest threshold, as in v2
        f1 = _rates(risk, labels, float(threshold))[0]
        if f1 > best_f1:
            best_f1, best_f1_at = f1, float(threshold)
    seen: set[str] = set()
    hard_rows: list[int] = []
    for row, example in enumerate(prompts):
        hard = not example.harmful and example.source in data_mod.HARD_BENIGN_SOURCES
        if hard and example.text not in seen:
            seen.add(example.text)
            hard_rows.append(row)
    hard_risk = risk[hard_rows]

    def hard_fpr(threshold: float) -> float:
        return float((hard_risk >= threshold).mean()) if len(hard_risk) else 0.0

    hard_ok = [float(t) for t in grid if hard_fpr(float(t)) <= HARD_BENIGN_MAX_FPR]
    flag = max(best_f1_at, hard_ok[0] if hard_ok else float(grid[-1]))
    benign_risk = np.sort(risk[~labels])
    index = math.ceil((1 - BLOCK_MAX_FPR) * len(benign_risk)) - 1
    cutoff = float(benign_risk[index]) if len(benign_risk) else 0.5
    block = float(min(0.99, max(flag, cutoff + 1e-3)))
    f1_flag, recall_flag, fpr_flag = _rates(risk, labels, flag)
    f1_block, recall_block, fpr_block = _rates(risk, labels, block)
    stats = {
        "rule": 1.0,  # 1: flag = max(best-F1 point, hard-benign FPR <= 2%); block = FPR <= 1%
        "dev_prompts": float(len(prompts)),
        "dev_hard_benign": float(len(hard_risk)),
        "dev_best_f1": round(best_f1, 4),
        "dev_best_f1_threshold": round(best_f1_at, 3),
        "dev_f1_at_flag": round(f1_flag, 4),
        "dev_recall_at_flag": round(recall_flag, 4),
        "dev_fpr_at_flag": round(fpr_flag, 4),
        "dev_hard_fpr_at_flag": round(hard_fpr(flag), 4),
        "dev_f1_at_block": round(f1_block, 4),
        "dev_recall_at_block": round(recall_block, 4),
        "dev_fpr_at_block": round(fpr_block, 4),
        "dev_hard_fpr_at_block": round(hard_fpr(block), 4),
    }
    replies = [e for e in dev if e.is_reply]
    if replies:
        from guard.scoring import ReplyInput

        probabilities = predictor.refusal_probabilities(
            [ReplyInput(e.text, e.pair or "") for e in replies]
        )
        predicted_class = probabilities.argmax(axis=1)
        truth = np.array([REFUSAL_CLASSES.index(e.refusal or "none") for e in replies])
        stats["dev_refusal_accuracy"] = round(float((predicted_class == truth).mean()), 4)
    return round(flag, 3), round(block, 3), stats


ALERT_POOL = 4000  # hh-rlhf first user turns in the alert-rate pool
ALERT_POOL_SEED = 0


def alert_pool(train_dir: Path, size: int = ALERT_POOL, seed: int = ALERT_POOL_SEED) -> list[str]:
    """A fixed sample of hh-rlhf harmless-base first user turns (train/): red-team style
    chat, mostly informal, that no training run labels for harm."""
    path = train_dir / "hh_rlhf_harmless_base/hh_rlhf_harmless_base.norm.jsonl"
    texts: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            messages = json.loads(line)["messages"]
            if messages and messages[0]["role"] == "user" and str(messages[0]["content"]).strip():
                texts.add(str(messages[0]["content"]))
    ordered = sorted(texts)
    return random.Random(seed).sample(ordered, min(size, len(ordered)))  # noqa: S311


@dataclass(frozen=True, slots=True)
class SharedThresholds:
    """Rule 2's or rule 3's points, and the shares of the texts at or above them: the
    reference's at its own points, the candidate's at the new ones (rule 2: alert rates on
    the alert pool; rule 3: recalls on the dev split's harmful prompts)."""

    flag: float
    block: float
    texts: int
    reference_flag_share: float
    reference_block_share: float
    flag_share: float
    block_share: float


def _share_matched(
    candidate: Predictor,
    reference: Predictor,
    texts: list[str],
    point: Callable[[np.ndarray, float], float],
    *,
    gap: float,
    finish: Callable[[float], float],
) -> SharedThresholds:
    """The candidate's flag and block from the shares of ``texts`` the reference flags and
    blocks at its own points: ``point`` turns a share into a threshold on the candidate's
    scores, block stays ``gap`` above flag, ``finish`` rounds."""
    ref_risk = reference.harm_probabilities(texts)[:, 0]
    new_risk = candidate.harm_probabilities(texts)[:, 0]
    points = reference.model.labels.thresholds
    flag_share = float((ref_risk >= points.flag).mean())
    block_share = float((ref_risk >= points.block).mean())
    flag = point(new_risk, flag_share)
    block = max(flag + gap, point(new_risk, block_share))
    flag, block = finish(flag), finish(min(0.999, block))
    return SharedThresholds(
        flag=flag,
        block=block,
        texts=len(texts),
        reference_flag_share=round(flag_share, 4),
        reference_block_share=round(block_share, 4),
        flag_share=round(float((new_risk >= flag).mean()), 4),
        block_share=round(float((new_risk >= block).mean()), 4),
    )


def _threshold_for_rate(risk: np.ndarray, rate: float) -> float:
    """A threshold at which the share of ``risk`` at or above it is ``rate`` (to a text)."""
    ranked = np.sort(risk)[::-1]
    count = round(rate * len(ranked))
    if count <= 0:
        return float(min(0.999, ranked[0] + 1e-4))
    if count >= len(ranked):
        return float(ranked[-1])
    # Halfway between the last text inside and the first one outside.
    return float((ranked[count - 1] + ranked[count]) / 2)


def matched_thresholds(
    candidate: Predictor, reference: Predictor, pool: list[str]
) -> SharedThresholds:
    """Rule 2: flag and block where ``candidate`` flags and blocks the same share of
    ``pool`` as ``reference`` does at its own points, so a replacement model raises as many
    alerts on red-team style chat as the model it replaces (block stays above flag)."""
    return _share_matched(
        candidate, reference, pool, _threshold_for_rate, gap=1e-3, finish=lambda t: round(t, 4)
    )


def _threshold_keeping(risk: np.ndarray, recall: float) -> float:
    """The highest threshold at which at least ``recall`` of ``risk`` is at or above it."""
    ranked = np.sort(risk)[::-1]
    count = max(1, math.ceil(recall * len(ranked) - 1e-9))
    return float(ranked[min(count, len(ranked)) - 1])


def recall_kept_thresholds(
    candidate: Predictor, reference: Predictor, harmful: list[str]
) -> SharedThresholds:
    """Rule 3: flag and block as high as ``candidate`` can put them while catching at least
    the share of ``harmful`` (the dev split's harmful prompts) that ``reference`` catches at
    its own points; block stays above flag.  Rounded down, so rounding never costs a catch."""
    return _share_matched(
        candidate,
        reference,
        harmful,
        _threshold_keeping,
        gap=1e-4,
        finish=lambda t: math.floor(t * 1e4) / 1e4,
    )
