"""The conversation memory's public face: judge a request, record what was relayed.

:meth:`ConversationMemory.judge` identifies the conversation (tenant-namespaced keyed
hashes), scores only the user turns it has not scored before plus, where it can change
a decision, one joint text of the recent turns, checks the history against the replies
the guard relayed, and combines everything into a :class:`ConversationJudgement`.  The engine calls
:meth:`ConversationMemory.record` after a reply was relayed (or a request blocked), so
the next request of the conversation can be checked against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from guard.errors import StateStoreError, StateStoreUnavailable
from guard.memory.changes import Peak, Scored, judged, recorded, with_peak
from guard.memory.escalation import (
    EscalationConfig,
    assess,
    is_fragment,
    joint_text,
    standalone,
)
from guard.memory.identity import (
    ConversationKey,
    Keyring,
    continuation,
    conversation_key,
    keyring_from_settings,
)
from guard.memory.integrity import check_history
from guard.memory.judgement import ConversationJudgement
from guard.memory.memory_store import MemoryStore
from guard.memory.redis_store import RedisStore
from guard.memory.resilient_store import ResilientStore
from guard.memory.score_cache import ScoreCache
from guard.memory.state import ConversationState
from guard.memory.store import Change, StateStore
from guard.metrics import GuardMetrics
from guard.scoring import HarmScore, Refusal, Scorer
from guard.settings import JointScoring, MemorySettings

if TYPE_CHECKING:  # guard.decisions imports the judgement from this package
    from guard.decisions import GuardRequest

log = structlog.get_logger(__name__)


class ConversationMemory:
    """Multi-turn judgement and history integrity over a :class:`StateStore`."""

    def __init__(
        self,
        scorer: Scorer,
        store: StateStore,
        keyring: Keyring,
        *,
        config: EscalationConfig | None = None,
        escalation_threshold: float = 0.5,
        score_cache_entries: int = 50_000,
        joint_scoring: JointScoring = "when_decisive",
        metrics: GuardMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._scorer = scorer
        self._store = store
        self._keyring = keyring
        self._config = config or EscalationConfig()
        self._threshold = escalation_threshold
        self._joint_scoring = joint_scoring
        self._scores = ScoreCache(score_cache_entries)
        self._metrics = metrics
        self._clock = clock

    @classmethod
    def from_settings(
        cls, settings: MemorySettings, scorer: Scorer, metrics: GuardMetrics | None = None
    ) -> ConversationMemory:
        """Build the configured store; raises ConfigError (e.g. Redis without a secret)."""
        keyring = keyring_from_settings(settings)

        def local() -> MemoryStore:
            return MemoryStore(
                ttl_s=settings.ttl_s,
                max_conversations=settings.max_conversations,
                max_bytes=settings.max_bytes,
                metrics=metrics,
            )

        store: StateStore
        if settings.backend == "memory":
            store = local()
        else:
            store = ResilientStore(
                RedisStore(
                    settings.redis_url, ttl_s=settings.ttl_s, timeout_s=settings.redis_timeout_s
                ),
                on_error=settings.on_store_error,
                fallback=local() if settings.on_store_error == "local" else None,
                metrics=metrics,
                retry_interval_s=settings.reconnect_interval_s,
            )
        return cls(
            scorer,
            store,
            keyring,
            config=EscalationConfig(joint_turns=settings.joint_turns),
            escalation_threshold=settings.escalation_threshold,
            score_cache_entries=settings.score_cache_entries,
            joint_scoring=settings.joint_scoring,
            metrics=metrics,
        )

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def joint_ceiling(self) -> float:
        """The most the joint text adds to the risk of a conversation with no refusal or
        block on record (its weight): a policy whose escalation flag lies above it cannot
        be moved by the joint text until there is such a record."""
        return self._config.joint_weight

    async def aclose(self) -> None:
        await self._store.aclose()

    async def judge(
        self, request: GuardRequest, *, joint_decisive: bool = True
    ) -> ConversationJudgement:
        """Conversation-level judgement of the request's newest user turn.

        ``joint_decisive=False`` tells the memory that the caller's policy decides on the
        joint text only through the conversation risk, with a flag point above
        :attr:`joint_ceiling`; then (with ``joint_scoring: when_decisive``) the joint
        text is scored only once the conversation has a refusal or a block on record,
        the one case where it can still change a decision.  It is the second, longer
        text a request would score, so a benign conversation's later turns cost what
        its first turn costs.

        Raises :class:`StateStoreUnavailable` only when the store is down and
        configured to fail closed; scoring errors propagate unchanged.
        """
        key = conversation_key(
            self._keyring,
            request.conversation,
            tenant=request.tenant,
            explicit_id=request.conversation_id,
        )
        users = request.conversation.user_turns
        state = await self._read(key.storage_key)
        known = state
        if known is None and key.opening_storage_key is not None:
            # The continuation is new but its opening is known: the first reply must
            # be one the guard relayed for that opening, or it is forged.
            known = await self._read(key.opening_storage_key)
        assistant_hashes = [
            self._keyring.text(m.text)
            for m in request.conversation.messages
            if m.role == "assistant"
        ]
        integrity = check_history(known, assistant_hashes, len(users))
        joint_wanted = (
            joint_decisive
            or self._joint_scoring == "always"
            or (known is not None and (known.refusals > 0 or known.blocks > 0))
        )
        scored = await self._score(users, joint=joint_wanted)
        recent, joint, fresh = scored.counted, scored.joint, scored.fresh_turns
        turn = len(users)
        decay = self._config.peak_decay
        view = with_peak(known, scored.earlier, turn, decay)
        esc = assess(recent, joint, view, self._config, turn=turn)
        # "No single turn reached it": judged over the recent turns, which are the
        # ones the joint score and the trend look at.
        single_max = max((s.risk for s in recent), default=0.0)
        newly_escalated = (
            esc.risk >= self._threshold
            and single_max < self._threshold
            and not (known is not None and known.escalated)
        )
        await self._write(
            key.storage_key,
            judged(
                seed=view,
                turn=turn,
                peaks=(Peak(esc.base, turn, esc.base_category), scored.earlier),
                escalated=newly_escalated,
                decay=decay,
                now=self._clock(),
            ),
        )
        self._count(integrity.forged_turns, integrity.pruned, newly_escalated)
        refused = known.refused_categories if known is not None else ()
        return ConversationJudgement(
            conversation=key.conversation,
            tenant=key.tenant,
            turn=len(users),
            turn_score=scored.recent[-1] if scored.recent else HarmScore.benign(),
            joint_score=joint,
            risk=esc.risk,
            trend=esc.trend,
            category=esc.category if esc.risk > 0.0 else None,
            prior_refusals=known.refusals if known is not None else 0,
            prior_blocks=known.blocks if known is not None else 0,
            refused_categories=frozenset(refused),
            forged_turns=integrity.forged_turns,
            pruned=integrity.pruned,
            first_contact=integrity.first_contact,
            fragment=bool(users) and is_fragment(users[-1], len(users) - 1, self._config),
            scored_turns=fresh,
            key_kind=key.kind,
            joint_scored=scored.joint_scored,
        )

    async def record(
        self,
        judgement: ConversationJudgement,
        *,
        relayed: str | None,
        refusal: Refusal | None,
        category: str | None,
        blocked: bool,
    ) -> None:
        """Remember what the client got: ``relayed`` is the exact text sent (the guard's
        own reply for blocks and rewrites), ``refusal`` its type when known.

        Never raises for store outages: the reply is already on its way, and the next
        judge() reports the outage per ``memory.on_store_error``.
        """
        reply_hash = self._keyring.text(relayed) if relayed is not None else None
        refused_category = category or judgement.category
        change = recorded(
            turn=judgement.turn,
            reply_hash=reply_hash,
            refused=refusal is not None and refusal.is_refusal,
            blocked=blocked,
            category=refused_category,
            now=self._clock(),
        )
        storage_key = f"{judgement.tenant}:{judgement.conversation}"
        try:
            state = await self._store.update(storage_key, change)
            if judgement.key_kind == "opening" and relayed is not None:
                # The next request carries this reply and is keyed by it: start that
                # conversation's state from the opening's record.
                follow_on = ConversationKey(
                    judgement.tenant,
                    continuation(self._keyring, judgement.conversation, relayed),
                    "continuation",
                ).storage_key
                await self._store.update(
                    follow_on, lambda current: change(current) if current is not None else state
                )
        except StateStoreError as exc:
            log.warning(
                "state_record_lost", conversation=judgement.conversation, error=type(exc).__name__
            )

    async def score_texts(self, texts: Sequence[str]) -> list[HarmScore]:
        """Harm scores of ``texts`` through the score cache: a text seen before (a fixed
        system prompt, say) is not scored again."""
        hashes = [self._keyring.prompt(text) for text in texts]
        found = {h: score for h in hashes if (score := self._scores.get(h)) is not None}
        missing = {h: text for h, text in zip(hashes, texts, strict=True) if h not in found}
        await self._score_missing(missing, found)
        return [found[h] for h in hashes]

    async def _score_missing(self, missing: dict[str, str], found: dict[str, HarmScore]) -> None:
        """Score the texts not cached (hash -> text), into the cache and ``found``."""
        if missing:
            results = await self._scorer.score_prompts(list(missing.values()))
            for text_hash, score in zip(missing, results, strict=True):
                self._scores.put(text_hash, score)
                found[text_hash] = score

    async def _score(self, users: Sequence[str], *, joint: bool = True) -> Scored:
        """Scores of the recent user turns and (``joint``) the joint text; every turn
        scored once.

        Each user turn's keyed hash is checked against the score cache (a rewritten or
        first-seen turn anywhere in the history is scored), but only the recent turns'
        scores are materialised: older ones already went into the conversation's record.
        """
        hashes = [self._keyring.prompt(text) for text in users]
        recent = hashes[-max(self._config.trend_turns, 1) :]
        joined = joint_text(users, self._config) if joint else None
        joint_hash = self._keyring.prompt(joined) if joined is not None else None
        found: dict[str, HarmScore] = {}
        for text_hash in (*recent, joint_hash):
            if text_hash is not None and text_hash not in found:
                cached = self._scores.get(text_hash)
                if cached is not None:
                    found[text_hash] = cached
        missing: dict[str, str] = {}
        for text_hash, text in zip(hashes, users, strict=True):
            if (
                text_hash not in found
                and text_hash not in missing
                and text_hash not in self._scores
            ):
                missing[text_hash] = text
        fresh_turns = len(missing)
        if joined is not None and joint_hash is not None and joint_hash not in found:
            missing.setdefault(joint_hash, joined)
        await self._score_missing(missing, found)
        first = len(hashes) - len(recent)
        recent_scores = [found[h] for h in recent]
        counted = [
            standalone(score, users[first + i], first + i, self._config)
            for i, score in enumerate(recent_scores)
        ]
        if joint_hash is not None:
            joint_score = found[joint_hash]
        else:
            joint_score = recent_scores[-1] if recent_scores else HarmScore.benign()
        # A turn before the recent window that was scored now (first contact, or a
        # rewritten earlier turn) still counts: as the conversation's peak at its turn.
        earlier: Peak | None = None
        older = len(hashes) - len(recent)
        for index, text_hash in enumerate(hashes[:older]):
            older_score = found.get(text_hash)
            if older_score is not None:
                older_score = standalone(older_score, users[index], index, self._config)
            if older_score is not None and (earlier is None or older_score.risk >= earlier.risk):
                earlier = Peak(older_score.risk, index + 1, older_score.category)
        return Scored(
            recent_scores, counted, joint_score, fresh_turns, earlier, joint_hash is not None
        )

    async def _read(self, storage_key: str) -> ConversationState | None:
        try:
            return await self._store.get(storage_key)
        except StateStoreUnavailable:
            raise
        except StateStoreError:
            log.warning("state_unreadable", key=storage_key)
            return None

    async def _write(self, storage_key: str, change: Change) -> None:
        try:
            await self._store.update(storage_key, change)
        except StateStoreUnavailable:
            raise
        except StateStoreError:
            log.warning("state_unwritable", key=storage_key)

    def _count(self, forged: int, pruned: bool, escalated: bool) -> None:
        if self._metrics is None:
            return
        if forged:
            self._metrics.history_faults.labels(kind="forged").inc()
        if pruned:
            self._metrics.history_faults.labels(kind="pruned").inc()
        if escalated:
            self._metrics.escalations.inc()
