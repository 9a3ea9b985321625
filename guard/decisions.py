"""Typed results the engine hands to the front doors.

A front door (the proxy or the middleware) asks the engine about a request before it
forwards it, and about the reply after; it then does exactly what the verdict says.
In observe mode ``action`` is never more than ``flag`` while ``would`` records what
enforce mode would have done, so operators can measure before they enforce.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from guard.conversation import Conversation
from guard.memory.judgement import ConversationJudgement
from guard.scoring import Refusal


class Action(enum.StrEnum):
    ALLOW = "allow"  # forward / relay unchanged
    FLAG = "flag"  # forward / relay unchanged, record as suspicious
    BLOCK = "block"  # answer with the guard's own reply; the upstream is spared
    REWRITE = "rewrite"  # replace the upstream's reply with the guard's


class Mode(enum.StrEnum):
    OBSERVE = "observe"  # shadow: decide and measure, never alter traffic
    ENFORCE = "enforce"


@dataclass(frozen=True, slots=True)
class GuardRequest:
    """A chat request as the engine sees it: no HTTP, no framework.

    ``tenant`` is the raw tenant header value or API key; the conversation memory turns
    it into a keyed hash before use and it is never logged or stored.
    """

    request_id: str
    conversation: Conversation
    tenant: str | None = None
    conversation_id: str | None = None
    model: str | None = None
    stream: bool = False


@dataclass(frozen=True, slots=True)
class RequestVerdict:
    """Decision on a request, taken before anything is forwarded."""

    action: Action
    would: Action
    mode: Mode
    risk: float
    category: str | None = None
    reply_text: str | None = None  # the guard's answer when action is BLOCK
    reasons: tuple[str, ...] = ()
    judgement: ConversationJudgement | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Ask the upstream once more: the reply refused a request judged benign.

    Only set in enforce mode, for whole (non-streamed) replies, when the policy's
    ``over_refusal_retry`` is enabled.  The front door re-sends the same request with
    ``clarification`` appended as a final ``system`` message, then hands both replies
    to :meth:`guard.engine.Engine.check_retry` (``retried=None`` when the second call
    failed) and relays what that verdict says.
    """

    clarification: str


@dataclass(frozen=True, slots=True)
class ReplyVerdict:
    """Decision on an assistant reply, taken before (the rest of) it is relayed."""

    action: Action
    would: Action
    mode: Mode
    refusal: Refusal
    category: str | None = None
    text: str | None = None  # replacement when action is REWRITE or BLOCK
    reasons: tuple[str, ...] = ()
    retry: Retry | None = None  # over-refusal: try the upstream once more (see Retry)


_ACTION_RANK = {Action.ALLOW: 0, Action.FLAG: 1, Action.REWRITE: 2, Action.BLOCK: 3}


def stronger(first: Action, second: Action) -> Action:
    """The more consequential of two actions (block > rewrite > flag > allow)."""
    return first if _ACTION_RANK[first] >= _ACTION_RANK[second] else second


class StreamStepKind(enum.StrEnum):
    HOLD = "hold"  # keep buffering upstream chunks; nothing decided yet
    RELEASE = "release"  # relay every held chunk unchanged, then keep going
    REPLACE = "replace"  # drop held chunks and the rest of upstream; send ``text``, end


@dataclass(frozen=True, slots=True)
class StreamStep:
    kind: StreamStepKind
    text: str | None = None
    verdict: ReplyVerdict | None = field(default=None)
    index: int = 0  # the choice a REPLACE's text continues (n > 1)
    others: tuple[int, ...] = ()  # the other choices a REPLACE ends with it
