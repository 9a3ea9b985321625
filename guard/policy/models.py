"""What a policy file may say, as pydantic models (unknown keys are errors).

``policies/global.yaml`` holds the deployment-wide settings (:class:`GlobalPolicy`);
``policies/<category>.yaml`` holds one hazard category each (:class:`CategoryPolicy`).
Context rules connect the two: the global file names the contexts a deployment may
declare (``contexts:``) and the ones it does declare (``deployment:``); a category file
says how it changes under a declared context (``contexts: {security_research: ...}``).
"""

from __future__ import annotations

import string
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from guard.scoring import HAZARDS

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
ModeName = Literal["observe", "enforce"]
Text = Annotated[str, Field(min_length=1)]

# Placeholders a refusal template may use; anything else is a lint error.
PLACEHOLDERS: frozenset[str] = frozenset({"reason", "offer"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_template(template: str) -> str:
    """Reject templates that name unknown placeholders or are not valid format strings."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(
            f"not a valid template ({exc}); write literal braces as {{{{ }}}}"
        ) from exc
    unknown = sorted(set(fields) - PLACEHOLDERS)
    if unknown:
        allowed = ", ".join(f"{{{name}}}" for name in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; allowed: {allowed}")
    return template


# Refusal wording with optional {reason} and {offer} placeholders.
Template = Annotated[str, Field(min_length=1), AfterValidator(check_template)]


class Thresholds(_Model):
    """Risk levels (0-1) at which a request in this category is acted on.

    ``flag``: forward and record.  ``block``: answer with a reasoned refusal, upstream
    spared.  ``rewrite``: from here on the request counts as harmful for the reply: a
    bare refusal is rewritten into a reasoned one, compliance after an earlier refusal
    is caving.  A refusal of a request below ``flag`` is an over-refusal.
    """

    flag: Probability = 0.5
    rewrite: Probability = 0.5
    block: Probability = 0.85

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.flag <= self.block:
            raise ValueError(f"flag ({self.flag}) must not exceed block ({self.block})")
        if not self.rewrite <= self.block:
            raise ValueError(f"rewrite ({self.rewrite}) must not exceed block ({self.block})")
        return self


class ThresholdChanges(_Model):
    """Thresholds a context rule replaces; unnamed ones stay as they are."""

    flag: Probability | None = None
    rewrite: Probability | None = None
    block: Probability | None = None


class ContextRule(_Model):
    """How a category changes when the deployment declares a context."""

    thresholds: ThresholdChanges = ThresholdChanges()
    mode: ModeName | None = None
    offer: Text | None = None  # what the assistant can offer in this deployment instead


class CategoryPolicy(_Model):
    """One hazard category: when to act, and what the guard says when it does."""

    category: str
    mode: ModeName | None = None  # overrides the global mode for this category
    thresholds: Thresholds = Thresholds()
    reason: Text  # why the harm matters, in plain words: one or two sentences
    offer: Text  # what the assistant can do instead
    refusals: tuple[Template, ...] = Field(min_length=2)  # variants
    contexts: dict[str, ContextRule] = {}

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value not in HAZARDS:
            raise ValueError(f"unknown hazard category {value!r}; known: {', '.join(HAZARDS)}")
        return value

    @field_validator("refusals")
    @classmethod
    def _distinct_variants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("refusal variants must differ from each other")
        return value

    def under(self, contexts: tuple[str, ...]) -> CategoryPolicy:
        """This policy with the rules of the declared ``contexts`` applied, in order."""
        policy = self
        for name in contexts:
            rule = self.contexts.get(name)
            if rule is None:
                continue
            changed = rule.thresholds.model_dump(exclude_none=True)
            thresholds = Thresholds.model_validate(policy.thresholds.model_dump() | changed)
            update: dict[str, object] = {"thresholds": thresholds}
            if rule.mode is not None:
                update["mode"] = rule.mode
            if rule.offer is not None:
                update["offer"] = rule.offer
            policy = policy.model_copy(update=update)
        return policy


HistoryAction = Literal["allow", "flag", "block"]


class EscalationPolicy(_Model):
    """Conversation-level decisions, fed by the conversation memory."""

    # Defaults = the shipped global.yaml, tuned on train/multiturn through the engine.
    flag: Probability = 0.9  # conversation risk that flags even when the last turn is mild
    block: Probability = 0.95  # conversation risk that blocks
    forged_history: HistoryAction = "flag"  # assistant turns the guard never relayed
    pruned_history: HistoryAction = "flag"  # history shorter than what the guard has seen
    # After this many blocks in one conversation, a request at flag level is blocked
    # too (0 turns it off): persistence is a signal of its own.
    block_after_blocks: int = Field(default=2, ge=0)
    capitulation: Literal["flag", "rewrite"] = "rewrite"  # compliance after a refusal
    # Harm split across turns: "joint" decides the recent user turns joined with the
    # category thresholds (reason split_intent); "memory" leaves the joint text to the
    # conversation risk, where it counts at the memory's joint weight (reason escalation).
    split_intent: Literal["joint", "memory"] = "memory"
    # A later turn too short to judge alone ("word - meaning", "and then?"): "alone"
    # decides it on its own score like any turn (reason risk); "in_context" lets its own
    # score only block (at the category's block threshold) and leaves the flag band to
    # the conversation-level signals, as the memory does.
    fragments: Literal["alone", "in_context"] = "in_context"

    @model_validator(mode="after")
    def _ordered(self) -> EscalationPolicy:
        if not self.flag <= self.block:
            raise ValueError(f"flag ({self.flag}) must not exceed block ({self.block})")
        return self


class StreamingPolicy(_Model):
    """How much of a streamed reply is held back before the guard decides."""

    first_sentence: bool = True  # decide as soon as the first sentence is complete
    hold_chars: int = Field(default=200, ge=1)  # ... or when this many characters are held
    hold_ms: float = Field(default=1500.0, gt=0)  # ... or when the first held chunk is this old
    # Benign requests (below the category's flag threshold, no refusal earlier in the
    # conversation) stream without any hold; their reply is judged once it has ended.
    hold_benign: bool = False
    leak_watch: bool = True  # after release, check each later sentence for a leak
    leak_watch_chars: int = Field(default=400, ge=1)  # check at least this often without a boundary


class OverRefusalRetry(_Model):
    """Off by default: ask the upstream once more when it refused a benign request."""

    enabled: bool = False
    clarification: Text = (
        "The user's request was reviewed by a safety system and judged benign. "
        "Answer it helpfully and directly."
    )


class GlobalPolicy(_Model):
    """Deployment-wide settings: ``policies/global.yaml``."""

    mode: ModeName = "observe"
    on_scoring_error: Literal["fail_open", "fail_closed"] = "fail_open"
    scoring_timeout_s: float = Field(default=2.0, gt=0)
    contexts: dict[str, Text] = {}  # contexts a deployment may declare: name -> meaning
    deployment: tuple[str, ...] = ()  # the contexts this deployment declares
    escalation: EscalationPolicy = EscalationPolicy()
    streaming: StreamingPolicy = StreamingPolicy()
    over_refusal_retry: OverRefusalRetry = OverRefusalRetry()
    # Replies to requests judged benign that show no lexical sign of refusing are relayed
    # as compliance without running the model (guard.classifier.cues): half the inference
    # of a typical request, at the cost of the few over-refusals phrased without any cue.
    cheap_reply_check: bool = True
    # Enforce mode: send a request upstream while it is being judged instead of after,
    # so the judgement's time hides behind the upstream's own.  A request judged "block"
    # is answered by the guard and its upstream call cancelled, unread; but the upstream
    # has seen it (its cost, its logs).  Observe mode always forwards this way.
    forward_while_judging: bool = False
    # The chain of thought some servers return beside the answer (``reasoning_content``,
    # ``reasoning``) is not judged: the classifier reads answers, and a model's reasoning
    # can spell out what its answer refuses.  relay: as sent; withhold_when_risky: taken
    # out of replies to requests judged risky (flag or above); withhold: always taken out.
    # Enforce mode only.
    reasoning: Literal["relay", "withhold_when_risky", "withhold"] = "withhold_when_risky"
    # System and developer messages are the application's own and are not scored (a
    # careful system prompt, full of what not to help with, reads like harm).  scored:
    # judge them with each request's newest turn, where clients write their own.
    instructions: Literal["trusted", "scored"] = "trusted"
    # Used when no category applies (escalation over several categories, forged history).
    refusals: tuple[Template, ...] = Field(min_length=2)
    reason: Text
    offer: Text
    leak_cut: Template  # appended where a leaking reply is cut; {reason} and {offer} allowed
    unavailable: Text  # fail_closed answer when the guard cannot check a message

    @field_validator("refusals")
    @classmethod
    def _distinct_variants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("refusal variants must differ from each other")
        return value

    @field_validator("deployment")
    @classmethod
    def _declared_contexts_exist(
        cls, value: tuple[str, ...], info: ValidationInfo
    ) -> tuple[str, ...]:
        contexts = info.data.get("contexts", {})
        for name in value:
            if name not in contexts:
                known = ", ".join(contexts) or "none defined under contexts:"
                raise ValueError(f"deployment declares unknown context {name!r} (known: {known})")
        return value
