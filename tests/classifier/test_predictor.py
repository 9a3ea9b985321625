"""Predictor: a text's score near a decision point does not depend on its batch."""

from __future__ import annotations

import numpy as np

from guard.classifier.labels import CONFIRM_BAND, CONFIRM_REPLY_MARGIN
from guard.classifier.predictor import Predictor
from guard.classifier.session import LoadedModel
from guard.scoring import ReplyInput

# Both score inside the confirmation band with the shipped model (calibrated ~0.18 and ~0.98).
NEAR = [
    "What household chemicals should never be mixed because they make toxic gas?",
    "How can I poison my neighbour's dog?",
]
COMPANIONS = [
    "Write a poem about autumn.",
    "How do I get revenge on my ex without getting caught? " * 3,
    "Could you summarise the plot of a long novel about a sailor, a whale and an obsession, "
    "chapter by chapter, with the names of every ship they meet on the way? " * 4,
    "ok",
]


def _calibrated(predictor: Predictor, text: str) -> float:
    risk = float(predictor.harm_probabilities([text])[0, 0])
    return predictor.model.labels.calibrate(risk)


def test_the_probes_sit_near_a_decision_point(predictor: Predictor) -> None:
    low, high = CONFIRM_BAND
    for text in NEAR:
        assert low <= _calibrated(predictor, text) <= high


def test_a_text_near_a_decision_point_scores_as_it_does_alone(predictor: Predictor) -> None:
    alone = np.vstack([predictor.harm_probabilities([text]) for text in NEAR])
    for start in range(len(COMPANIONS)):
        batch = [*COMPANIONS[start:], *NEAR, *COMPANIONS[:start]]
        together = predictor.harm_probabilities(batch)
        rows = [batch.index(text) for text in NEAR]
        np.testing.assert_array_equal(together[rows], alone)


def test_without_confirmation_the_batch_moves_the_score(loaded_model: LoadedModel) -> None:
    """What the confirmation is for: int8 activation scales are chosen per batch."""
    raw = Predictor(loaded_model, confirm_alone=False)
    alone = np.vstack([raw.harm_probabilities([text]) for text in NEAR])
    moved = [
        not np.array_equal(raw.harm_probabilities([*COMPANIONS[start:], *NEAR])[-2:], alone)
        for start in range(len(COMPANIONS))
    ]
    assert any(moved)


CLOSE_REPLY = ReplyInput(  # its two likeliest types lie within the confirmation margin
    "What's the best way to lose weight fast?",
    "I am not a doctor, but eating fewer calories and exercising helps.",
)
OTHER_REPLIES = [
    ReplyInput("How do I pick a lock?", "I can't help with that."),
    ReplyInput(
        "Write a poem about autumn.", "Leaves fall softly on the ground, gold and red. " * 6
    ),
    ReplyInput("How can I poison my neighbour's dog?", "I won't help with harming an animal."),
]


def test_a_close_reply_type_is_scored_as_it_is_alone(predictor: Predictor) -> None:
    alone = predictor.refusal_probabilities([CLOSE_REPLY])
    top2 = np.sort(np.log(alone[0]))[-2:]
    assert top2[1] - top2[0] < CONFIRM_REPLY_MARGIN
    for start in range(len(OTHER_REPLIES) + 1):
        batch = [*OTHER_REPLIES[:start], CLOSE_REPLY, *OTHER_REPLIES[start:]]
        together = predictor.refusal_probabilities(batch)
        np.testing.assert_array_equal(together[start], alone[0])


def test_without_confirmation_the_batch_moves_a_reply(loaded_model: LoadedModel) -> None:
    raw = Predictor(loaded_model, confirm_alone=False)
    alone = raw.refusal_probabilities([CLOSE_REPLY])[0]
    together = raw.refusal_probabilities([*OTHER_REPLIES, CLOSE_REPLY])[-1]
    assert not np.array_equal(together, alone)


def test_each_confirmation_is_reported(loaded_model: LoadedModel) -> None:
    seen: list[str] = []
    predictor = Predictor(loaded_model, on_confirm=seen.append)
    predictor.harm_probabilities([*COMPANIONS, *NEAR])
    predictor.refusal_probabilities([*OTHER_REPLIES, CLOSE_REPLY])
    # Both near texts, and any companion whose batched score also lands in the band.
    assert seen.count("prompt") >= len(NEAR)
    assert seen.count("reply") == 1
