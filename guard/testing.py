"""A deterministic scorer for tests of code built on the guard (and the guard's own).

:class:`KeywordScorer` implements the :class:`guard.scoring.Scorer` protocol from fixed
phrase lists, so a test can drive every decision path without the ONNX model:
a prompt containing a listed phrase scores the phrase's category at 0.97; a reply is
typed from refusal phrases and reason words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from guard.scoring import HAZARDS, HarmScore, Refusal, ReplyInput, ReplyScore

DEFAULT_HARMFUL: Mapping[str, str] = {
    "build a bomb": "indiscriminate_weapons",
    "nerve agent": "indiscriminate_weapons",
    "make meth": "non_violent_crimes",
    "steal a car": "non_violent_crimes",
    "ransomware": "cyber_attacks",
    "hurt myself": "suicide_self_harm",
    "kill my neighbour": "violent_crimes",
}
DEFAULT_SUSPICIOUS: Mapping[str, str] = {
    "lock picking": "non_violent_crimes",
    "explosive": "indiscriminate_weapons",
}
REFUSAL_PHRASES = ("i can't", "i cannot", "i won't", "i'm sorry", "i am unable", "i will not")
REASON_WORDS = ("because", "harm", "dangerous", "illegal", "could hurt", "risk")
LEAK_MARKERS = ("however, here", "that said, here", "step 1", "here's how", "here is how")


class KeywordScorer:
    """Rule-based scorer: harmful phrases score 0.97, suspicious ones 0.6, others 0.02."""

    def __init__(
        self,
        harmful: Mapping[str, str] = DEFAULT_HARMFUL,
        suspicious: Mapping[str, str] = DEFAULT_SUSPICIOUS,
        *,
        reply_window_chars: int | None = None,
    ) -> None:
        self.harmful = dict(harmful)
        self.suspicious = dict(suspicious)
        # Like the model's refusal head, type a reply from its opening only.
        self.reply_window_chars = reply_window_chars
        self.prompt_calls = 0
        self.reply_calls = 0
        self.closed = False

    def score_prompt(self, text: str) -> HarmScore:
        lowered = text.lower()
        categories = dict.fromkeys(HAZARDS, 0.01)
        risk = 0.02
        for table, level in ((self.suspicious, 0.6), (self.harmful, 0.97)):
            for phrase, category in table.items():
                if phrase in lowered:
                    categories[category] = max(categories[category], level)
                    risk = max(risk, level)
        return HarmScore(risk=risk, categories=categories)

    def score_reply(self, reply: ReplyInput) -> ReplyScore:
        lowered = reply.reply[: self.reply_window_chars].lower()
        refused = any(phrase in lowered for phrase in REFUSAL_PHRASES)
        if not refused:
            refusal = Refusal.NONE
        elif any(marker in lowered for marker in LEAK_MARKERS):
            refusal = Refusal.PARTIAL
        elif any(word in lowered for word in REASON_WORDS):
            refusal = Refusal.REASONED
        else:
            refusal = Refusal.BARE
        return ReplyScore(refusal=refusal, probabilities={refusal: 1.0})

    async def score_prompts(self, texts: Sequence[str]) -> list[HarmScore]:
        self.prompt_calls += len(texts)
        return [self.score_prompt(text) for text in texts]

    async def score_replies(self, replies: Sequence[ReplyInput]) -> list[ReplyScore]:
        self.reply_calls += len(replies)
        return [self.score_reply(reply) for reply in replies]

    async def aclose(self) -> None:
        self.closed = True
