from __future__ import annotations

import pytest

from guard.memory.escalation import EscalationConfig, assess, slope
from guard.memory.state import ConversationState
from guard.scoring import HAZARDS, HarmScore

CONFIG = EscalationConfig(min_turn_words=0, joint_weight=1.0, trend_weight=1.0)


def score(risk: float, category: str = "hate") -> HarmScore:
    categories = dict.fromkeys(HAZARDS, 0.0)
    categories[category] = risk
    return HarmScore(risk=risk, categories=categories)


def test_slope() -> None:
    assert slope([]) == 0.0 and slope([0.5]) == 0.0
    assert slope([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.1)
    assert slope([0.4, 0.3, 0.2]) == pytest.approx(-0.1)


def test_single_turn_is_its_own_risk() -> None:
    result = assess([score(0.3)], score(0.3), None, CONFIG)
    assert result.risk == pytest.approx(0.3) and result.trend == 0.0 and result.category == "hate"


def test_rising_trend_adds_risk_a_jump_does_not() -> None:
    rising = [score(r) for r in (0.1, 0.2, 0.3, 0.4)]
    result = assess(rising, score(0.4), None, CONFIG)
    assert result.trend == pytest.approx(0.1)
    assert result.risk == pytest.approx(0.5)
    jump = assess([score(0.02), score(0.6)], score(0.6), None, CONFIG)
    assert jump.risk == pytest.approx(0.6)
    capped = assess([score(0.0), score(0.45), score(0.9)], score(0.9), None, CONFIG)
    assert capped.risk == 1.0 and capped.trend == pytest.approx(0.45)


def test_joint_score_wins_when_higher() -> None:
    result = assess([score(0.05), score(0.05)], score(0.9, "privacy"), None, CONFIG)
    assert result.risk == pytest.approx(0.9) and result.category == "privacy"
    assert result.base == pytest.approx(0.9)


def test_peak_decays_per_turn() -> None:
    state = ConversationState(user_turns=3, peak_risk=0.9, peak_turn=3, peak_category="privacy")
    at_4 = assess([score(0.05)] * 4, score(0.05), state, CONFIG)
    at_6 = assess([score(0.05)] * 6, score(0.05), state, CONFIG)
    assert at_4.risk == pytest.approx(0.72) and at_4.category == "privacy"
    assert at_6.risk == pytest.approx(0.9 * 0.8**3)


def test_refused_category_raises_a_related_turn() -> None:
    state = ConversationState(user_turns=2, refusals=1, refused_categories=("hate",))
    related = assess([score(0.4, "hate")], score(0.4, "hate"), state, CONFIG)
    unrelated = assess([score(0.4, "privacy")], score(0.4, "privacy"), state, CONFIG)
    assert related.risk == pytest.approx(0.4 + 0.1 + 0.5 * 0.4)
    assert unrelated.risk == pytest.approx(0.5)


def test_no_turns_is_benign() -> None:
    result = assess([], HarmScore.benign(), None, CONFIG)
    assert result.risk == 0.0 and result.category is None


def test_joint_text_joins_recent_turns_and_keeps_the_tail() -> None:
    from guard.memory.escalation import joint_text

    assert joint_text(["only one"], CONFIG) is None
    assert joint_text(["a", "b", "c", "d", "e"], CONFIG) == "b c d e"
    assert joint_text(["a", "b"], EscalationConfig(joint_turns=0)) is None
    long = ["word " * 200, "the newest turn"]
    text = joint_text(long, CONFIG)
    assert text is not None and text.endswith("the newest turn")
    assert len(text) <= CONFIG.joint_chars and text.startswith("word")


def test_later_fragments_count_only_in_context() -> None:
    from guard.memory.escalation import standalone

    config = EscalationConfig(min_turn_words=8)
    harmful = score(0.9)
    assert standalone(harmful, "individual - personal", 3, config).risk == 0.0
    assert standalone(harmful, "individual - personal", 0, config) is harmful  # no context yet
    long_turn = "please tell me in detail how this would be done at home"
    assert standalone(harmful, long_turn, 3, config) is harmful


def test_joint_weight_scales_the_joint_share() -> None:
    result = assess([score(0.05)], score(0.9), None, EscalationConfig(joint_weight=0.5))
    assert result.risk == pytest.approx(0.45) and result.base == pytest.approx(0.45)
