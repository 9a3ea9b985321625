"""The classifier's cheap first stage for replies: does a reply show any sign of refusing?

A reply to a request judged benign that carries none of these cues is compliance for
every practical purpose, so the engine relays it without running the model (half the
inference of a typical request).  The list is written for recall, not precision: a cue
only means "ask the model".  Risky requests are always judged by the model.
Recall on human-labelled refusals is measured in models/MODEL_CARD.md.
"""

from __future__ import annotations

import re

from guard.classifier.encoding import plain_quotes

# Matched against the case-folded reply without IGNORECASE, behind a lookahead for the
# letters the alternatives start with: ~5x faster on a typical reply (70 -> 14 us for
# 230 characters), the same answers (tests/classifier/test_cues.py).
_CUES = re.compile(
    r"""
    (?=\b[acdhimnprsuw])
    (?:
    \b(?:sorry|apologi[sz]e|apologies|unfortunately|regrettably)\b
    | \b(?:can(?:no|')t|can\ not|could(?:n't|\ not)|won't|will\ not|wouldn't|would\ not)\b
    | \b(?:shouldn't|should\ not|mustn't|must\ not|may\ not|am\ not|i'm\ not)\b
    | \b(?:unable|not\ able|not\ going\ to|not\ (?:be\ )?(?:possible|appropriate|ethical))\b
    | \b(?:declin|refus|reject)\w*
    | \b(?:must|have\ to|need\ to)\ (?:decline|refuse|refrain)\b
    | \b(?:prefer|rather)\ not\b
    | \b(?:not|never)\ (?:comfortable|allowed|permitted|okay|ok|advisable|condone)\b
    | \b(?:inappropriate|unethical|illegal|unlawful|harmful|dangerous|prohibited)\b
    | \bagainst\ (?:my|the|our|openai's)\ (?:guidelines|polic(?:y|ies)|principles|rules|values)
    | \bas\ an\ (?:ai|a\.i\.|assistant|language\ model)\b
    | \b(?:i|we)\ (?:don't|do\ not|doesn't|does\ not)\ (?:provide|assist|help|support|engage|
        create|generate|give|share|offer|write)\b
    | \bi'?m\ (?:not\ (?:able|going|in\ a\ position)|afraid)\b
    | \bno\ (?:way|can\ do)\b
    )
    """,
    re.VERBOSE,
)


def has_refusal_cue(reply: str) -> bool:
    """True when ``reply`` shows any lexical sign of declining (then the model decides)."""
    return _CUES.search(plain_quotes(reply).casefold()) is not None
