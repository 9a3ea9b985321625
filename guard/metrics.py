"""Prometheus metrics, all on an injected registry (tests get a fresh one each).

Names carry the ``guard_`` prefix, base units (seconds, bytes) and ``_total`` for
counters; every label has a small fixed set of values, listed beside it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Latency buckets from 100 us to 60 s: the guard's own work is sub-millisecond to a few
# milliseconds, the upstream's is seconds.
_LATENCY = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

ROUTES = ("chat", "passthrough", "health")  # label: route
DECISIONS = ("allow", "flag", "block", "rewrite")  # label: decision
MODES = ("observe", "enforce")  # label: mode
DIRECTIONS = ("request", "reply")  # label: direction
REFUSALS = ("none", "bare", "reasoned", "partial")  # label: refusal
HISTORY_FAULTS = ("forged", "pruned")  # label: kind
STORE_OPS = ("get", "put")  # label: op
STAGES = ("prompt", "reply")  # label: stage


class GuardMetrics:
    """Every metric the guard exports, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "guard_requests_total",
            "Requests handled, by route and HTTP status class.",
            ["route", "status"],
            registry=r,
        )  # status: 2xx 4xx 5xx
        self.request_duration = Histogram(
            "guard_request_duration_seconds",
            "Whole request time seen by the client.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.decisions = Counter(
            "guard_decisions_total",
            "Decisions taken, by direction, decision and mode.",
            ["direction", "decision", "mode"],
            registry=r,
        )
        self.would_decisions = Counter(
            "guard_would_decisions_total",
            "What enforce mode would have done, counted in every mode (observe's would-block).",
            ["direction", "decision"],
            registry=r,
        )
        self.category_actions = Counter(
            "guard_category_actions_total",
            "Flags, blocks and rewrites by hazard category.",
            ["category", "decision"],
            registry=r,
        )
        self.refusals = Counter(
            "guard_refusals_total",
            "Assistant replies by refusal type.",
            ["refusal"],
            registry=r,
        )
        self.over_refusals = Counter(
            "guard_over_refusals_total",
            "Refusals of requests judged benign.",
            ["category"],
            registry=r,
        )
        self.leaks_stopped = Counter(
            "guard_leaks_stopped_total",
            "Partial refusals whose leaked part was cut.",
            registry=r,
        )
        self.capitulations = Counter(
            "guard_capitulations_total",
            "Compliance after an earlier refusal on the same topic (the model caved).",
            registry=r,
        )
        self.escalations = Counter(
            "guard_escalations_total",
            "Conversations whose multi-turn risk crossed a threshold no single turn did.",
            registry=r,
        )
        self.history_faults = Counter(
            "guard_history_faults_total",
            "Requests with forged or pruned history.",
            ["kind"],
            registry=r,
        )
        self.classifier_duration = Histogram(
            "guard_classifier_duration_seconds",
            "Model inference time per batch.",
            ["stage"],
            buckets=_LATENCY,
            registry=r,
        )
        self.classifier_batch_size = Histogram(
            "guard_classifier_batch_size",
            "Texts per inference batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.scoring_failures = Counter(
            "guard_scoring_failures_total",
            "Scoring errors and timeouts, by failure policy.",
            ["outcome"],
            registry=r,
        )  # outcome: fail_open fail_closed
        self.upstream_duration = Histogram(
            "guard_upstream_duration_seconds",
            "Upstream time to response headers.",
            buckets=_LATENCY,
            registry=r,
        )
        self.upstream_errors = Counter(
            "guard_upstream_errors_total",
            "Upstream failures by kind.",
            ["kind"],
            registry=r,
        )  # kind: unavailable timeout bad_response
        self.guard_overhead = Histogram(
            "guard_overhead_seconds",
            "Time the guard itself added to a request (decisions).",
            ["direction"],
            buckets=_LATENCY,
            registry=r,
        )
        self.stream_holdback = Histogram(
            "guard_stream_holdback_seconds",
            "Time a streamed reply was held before release.",
            buckets=_LATENCY,
            registry=r,
        )
        self.store_errors = Counter(
            "guard_state_store_errors_total",
            "Conversation state store failures.",
            ["op"],
            registry=r,
        )
        self.store_degraded = Gauge(
            "guard_state_store_degraded",
            "1 while the shared store is unreachable.",
            registry=r,
        )
        self.conversations = Gauge(
            "guard_conversations",
            "Conversations held in the local store.",
            registry=r,
        )
        self.policy_reloads = Counter(
            "guard_policy_reloads_total",
            "Policy reloads by result.",
            ["result"],
            registry=r,
        )  # result: success failure
        self.policy_info = Info(
            "guard_policy",
            "Active policy version (content hash) and mode.",
            registry=r,
        )
