"""The guard's own words: reasoned refusals composed from the policy files.

A refusal names what was declined, says why it matters (the category's ``reason``)
and offers what can be done instead (``offer``).  Which variant a conversation hears
is a pure function of the conversation key and how many refusals it has had, so the
wording differs across conversations, stays predictable within one, and never repeats
back to back: the variant the client shows as the last assistant turn is skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from guard.decisions import GuardRequest
from guard.memory.judgement import ConversationJudgement
from guard.policy.loader import PolicySet

_SPACES = re.compile(r"\s+")


def conversation_key(request: GuardRequest) -> str:
    """A key that stays the same for every request of one conversation.

    (Not the memory's key: that one may move from a fingerprint of the opening to one
    of the first reply, and the wording should not move with it.)
    """
    if request.conversation_id:
        return request.conversation_id
    users = request.conversation.user_turns
    # The first user turn is re-sent with every request of a conversation.
    return "first-turn:" + (users[0] if users else "")


def _render(template: str, reason: str, offer: str) -> str:
    return _SPACES.sub(" ", template.format(reason=reason.strip(), offer=offer.strip())).strip()


def _start(key: str, count: int) -> int:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def _last_assistant(request: GuardRequest) -> str | None:
    turns = request.conversation.assistant_turns
    return _SPACES.sub(" ", turns[-1]).strip() if turns else None


def compose_refusal(
    policies: PolicySet,
    category: str | None,
    request: GuardRequest,
    judgement: ConversationJudgement | None,
) -> str:
    """A reasoned refusal for ``category`` (the global one when None or unknown)."""
    policy = policies.categories.get(category) if category else None
    source = policy if policy is not None else policies.general
    variants = [_render(t, source.reason, source.offer) for t in source.refusals]
    earlier = (judgement.prior_refusals + judgement.prior_blocks) if judgement else 0
    return _pick(variants, conversation_key(request), earlier, _last_assistant(request))


def _pick(variants: Sequence[str], key: str, earlier: int, avoid: str | None) -> str:
    first = (_start(key, len(variants)) + earlier) % len(variants)
    for step in range(len(variants)):
        candidate = variants[(first + step) % len(variants)]
        if candidate != avoid:
            return candidate
    return variants[first]


def compose_leak_cut(policies: PolicySet, category: str | None) -> str:
    """The sentence that ends a reply cut before its leaking part."""
    policy = policies.categories.get(category) if category else None
    source = policy if policy is not None else policies.general
    return _render(policies.general.leak_cut, source.reason, source.offer)


def unavailable(policies: PolicySet) -> str:
    return _SPACES.sub(" ", policies.general.unavailable).strip()
