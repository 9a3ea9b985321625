"""How a reply is typed: what the refusal head reads, and where it cannot see.

Two readings sit around the head (:meth:`guard.classifier.Predictor.score_replies` or any
:class:`~guard.scoring.Scorer`):

- a reply to a request judged benign with no lexical sign of refusing is compliance
  without a model run (the cascade's cheap first stage, policy ``cheap_reply_check``);
- the head reads a reply's opening window, so a reply that opens as a refusal is also
  read past it, each later sentence joined to its opening (:func:`late_views`): a leak
  after a long preamble shows there.
"""

from __future__ import annotations

from guard.classifier.cues import has_refusal_cue
from guard.decisions import Action, RequestVerdict
from guard.policy.decide import thresholds_for
from guard.policy.loader import PolicySet
from guard.reply_stream import sentence_ends
from guard.scoring import Refusal, ReplyInput, ReplyScore, Scorer

# Sentences of a refusing reply read past its opening window at most (a bound on the
# cost of a very long reply; refusals are short).
MAX_LATE_VIEWS = 128


# The refusal head reads a reply's opening window (~90 tokens of it): a sentence that
# starts past this many characters is out of its sight.
LATE_FROM_CHARS = 300


def late_views(text: str, *, newest_only: bool = False) -> list[str]:
    """The reply's opening sentence joined to each sentence the opening window misses.

    "I can't help with that. [300 words of caveats] However, here is how: step 1 ..."
    opens as a refusal and leaks where the refusal head cannot see; each view puts the
    refusal and one later sentence in one window, the shape the head knows as partial.
    With ``newest_only``, only the view of the last sentence (the text after the last
    but one sentence end), which is what a stream adds between two checks.
    """
    ends = sentence_ends(text)
    if not ends or len(text) <= LATE_FROM_CHARS:
        return []
    opening = text[: ends[0]].rstrip()
    # Each sentence runs from one end to the next (the last to the end of the text).
    spans = [
        (start, stop)
        for start, stop in zip(ends, [*ends[1:], len(text)], strict=True)
        if LATE_FROM_CHARS <= start < len(text)
    ]
    if newest_only:
        spans = spans[-1:]
    return [f"{opening} {text[start:stop].strip()}" for start, stop in spans]


def clears_without_model(policies: PolicySet, verdict: RequestVerdict, reply: str) -> bool:
    """The cascade's cheap first stage: a benign request's reply with no refusal cue.

    Only requests decided ``allow`` below their category's flag threshold qualify, so a
    risky request's reply (leaks, caving, bare refusals) is always judged by the model.
    """
    return (
        policies.general.cheap_reply_check
        and verdict.would is Action.ALLOW
        and verdict.risk < thresholds_for(policies, verdict.category).flag
        and not has_refusal_cue(reply)
    )


async def type_reply(scorer: Scorer, prompt: str, reply: str) -> ReplyScore:
    """The head's type for ``reply``; ``partial`` where it opens as a refusal and one of
    its late views reads partial."""
    return await _read(scorer, prompt, reply, newest_only=False)


async def leaks_in(scorer: Scorer, prompt: str, text: str) -> bool:
    """Whether ``text`` (a reply so far) refuses and then supplies the content: read
    whole, and, where it opens as a refusal, its newest sentence joined to its opening."""
    return (await _read(scorer, prompt, text, newest_only=True)).refusal is Refusal.PARTIAL


async def _read(scorer: Scorer, prompt: str, reply: str, *, newest_only: bool) -> ReplyScore:
    (score,) = await scorer.score_replies([ReplyInput(prompt=prompt, reply=reply)])
    if score.refusal is Refusal.PARTIAL or not score.refusal.is_refusal:
        return score  # only a refusal's later sentences are worth a look
    views = late_views(reply, newest_only=newest_only)[:MAX_LATE_VIEWS]
    if not views:
        return score
    later = await scorer.score_replies([ReplyInput(prompt=prompt, reply=v) for v in views])
    if any(view.refusal is Refusal.PARTIAL for view in later):
        return ReplyScore(refusal=Refusal.PARTIAL, probabilities=score.probabilities)
    return score
