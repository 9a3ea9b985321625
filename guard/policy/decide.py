"""Pure decisions: scores, a conversation judgement and a policy set in; an action out.

No I/O and no state: the engine gathers the inputs (classifier, conversation memory)
and acts on the result (metrics, memory records, the guard's words).
"""

from __future__ import annotations

from guard.decisions import Action, Mode, RequestVerdict
from guard.memory.judgement import ConversationJudgement
from guard.policy.loader import PolicySet
from guard.policy.models import Thresholds
from guard.scoring import HarmScore, Refusal

# A category is named on a verdict only when the classifier gives it at least this
# much weight; below it "the most likely category" of a benign text is noise.
CATEGORY_FLOOR = 0.2
_RANK = {Action.ALLOW: 0, Action.FLAG: 1, Action.REWRITE: 2, Action.BLOCK: 3}
_HISTORY_ACTIONS = {"allow": Action.ALLOW, "flag": Action.FLAG, "block": Action.BLOCK}
# Reasons judged on the last turn itself; others concern the whole conversation.
TURN_REASONS = ("risk", "split_intent")


def enforced(would: Action, mode: Mode) -> Action:
    """What actually happens: observe mode never goes beyond flag."""
    if mode is Mode.ENFORCE or would in (Action.ALLOW, Action.FLAG):
        return would
    return Action.FLAG


def category_of(judgement: ConversationJudgement | None, turn: HarmScore) -> str | None:
    """The conversation's category, else the last turn's when it carries real weight."""
    if judgement is not None and judgement.category is not None:
        return judgement.category
    if not turn.categories:
        return None
    top = turn.category
    return top if turn.categories[top] >= CATEGORY_FLOOR else None


def thresholds_for(policies: PolicySet, category: str | None) -> Thresholds:
    """The category's thresholds (context rules applied); defaults without a category."""
    policy = policies.categories.get(category) if category else None
    return policy.thresholds if policy is not None else Thresholds()


def _level(risk: float, flag: float, block: float) -> Action:
    if risk >= block:
        return Action.BLOCK
    return Action.FLAG if risk >= flag else Action.ALLOW


def request_decision(
    policies: PolicySet,
    thresholds: Thresholds,
    turn: HarmScore,
    judgement: ConversationJudgement | None,
) -> tuple[Action, tuple[str, ...]]:
    """The strictest of every signal, with the reason for each that fired."""
    signals = [("risk", _level(turn.risk, thresholds.flag, thresholds.block))]
    if judgement is not None:
        escalation = policies.general.escalation
        joint = judgement.joint_score.risk
        turn_level = _RANK[signals[0][1]]
        # Conversation-level signals count only where they go beyond the last turn.
        for name, level in (
            ("split_intent", _level(joint, thresholds.flag, thresholds.block)),
            ("escalation", _level(judgement.risk, escalation.flag, escalation.block)),
        ):
            if _RANK[level] > turn_level:
                signals.append((name, level))
        if judgement.forged_turns:
            signals.append(("forged_history", _HISTORY_ACTIONS[escalation.forged_history]))
        if judgement.pruned:
            signals.append(("pruned_history", _HISTORY_ACTIONS[escalation.pruned_history]))
        strictest = max((action for _, action in signals), key=_RANK.__getitem__)
        repeat = escalation.block_after_blocks
        if repeat and judgement.prior_blocks >= repeat and strictest is Action.FLAG:
            signals.append(("repeated_after_blocks", Action.BLOCK))
    would = max((action for _, action in signals), key=_RANK.__getitem__)
    reasons = tuple(name for name, action in signals if action is not Action.ALLOW)
    return would, reasons


def reply_decision(
    policies: PolicySet, verdict: RequestVerdict, refusal: Refusal
) -> tuple[Action, tuple[str, ...]]:
    """What enforce mode does with a reply of type ``refusal``, and why."""
    thresholds = thresholds_for(policies, verdict.category)
    benign = verdict.would is Action.ALLOW and verdict.risk < thresholds.flag
    if refusal is Refusal.PARTIAL:
        # The model refused and then supplied what it refused: whatever the prompt
        # scored, the reply itself says the content should not go out.
        return Action.REWRITE, ("leak",)
    if refusal.is_refusal and benign:
        return Action.FLAG, ("over_refusal",)
    if refusal is Refusal.BARE and verdict.risk >= thresholds.rewrite:
        return Action.REWRITE, ("bare_refusal",)
    if refusal is Refusal.NONE and not benign:
        judgement = verdict.judgement
        refused = judgement.refused_categories if judgement is not None else frozenset()
        if verdict.category in refused:
            capitulation = policies.general.escalation.capitulation
            return Action(capitulation), ("capitulation",)
        if verdict.would is Action.BLOCK:
            # Reached only when the request went upstream in observe mode.
            return Action.REWRITE, ("harmful_compliance",)
    return Action.ALLOW, ()
