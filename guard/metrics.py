"""Prometheus metrics, all on an injected registry (tests get a fresh one each).

Names carry the ``guard_`` prefix, base units (seconds, bytes) and ``_total`` for
counters; every label has a small fixed set of values, listed beside it.

Every series of those fixed label sets is created at zero when the metrics are built, so
a scrape shows it before its first event: ``rate``/``increase`` then see the first
increment (an alert on the first failed policy reload needs the 0 before the 1) and
dashboards show 0 rather than "no data".  The dashboard and alert rules in deploy/ use
exactly these names; tests/deploy checks them against a fresh registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from guard.scoring import HAZARDS

# Latency buckets from 100 us to 60 s: the guard's own work is sub-millisecond to a few
# milliseconds, the upstream's is seconds.
_LATENCY = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

ROUTES = ("chat", "passthrough", "unguarded", "health")  # label: route
DECISIONS = ("allow", "flag", "block", "rewrite")  # label: decision
MODES = ("observe", "enforce")  # label: mode
DIRECTIONS = ("request", "reply")  # label: direction
REFUSALS = ("none", "bare", "reasoned", "partial")  # label: refusal
HISTORY_FAULTS = ("forged", "pruned")  # label: kind
STORE_OPS = ("get", "put")  # label: op
LANES = ("busy", "idle")  # label: lane, of classifier_runs
STAGES = ("prompt", "reply")  # label: stage
STATUSES = ("2xx", "4xx", "5xx")  # label: status
ACTIONS = ("flag", "block", "rewrite")  # label: decision, of category_actions
OUTCOMES = ("fail_open", "fail_closed")  # label: outcome
CASCADE_STAGES = ("sieve", "exit", "model")  # label: stage (guard.scoring.Stage)
CONFIRMATION_KINDS = ("prompt", "reply")  # label: kind
UPSTREAM_ERRORS = ("unavailable", "timeout", "bad_response")  # label: kind
RELOAD_RESULTS = ("success", "failure")  # label: result


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
        )
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
        self.reasoning_withheld = Counter(
            "guard_reasoning_withheld_total",
            "Replies (whole or streamed) sent without their chain of thought (policy reasoning).",
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
        self.cascade_texts = Counter(
            "guard_classifier_texts_total",
            "User-side texts scored, by the classifier cascade stage that decided them.",
            ["stage"],
            registry=r,
        )
        self.classifier_runs = Counter(
            "guard_classifier_runs_total",
            "Inference batches, by lane: idle (started while no other ran, so it took "
            "classifier.idle_intra_op_threads) or busy.",
            ["stage", "lane"],
            registry=r,
        )
        self.classifier_confirmations = Counter(
            "guard_classifier_confirmations_total",
            "Texts scored again alone because their batched score lay near a decision point.",
            ["kind"],
            registry=r,
        )
        self.scoring_failures = Counter(
            "guard_scoring_failures_total",
            "Scoring errors and timeouts, by failure policy.",
            ["outcome"],
            registry=r,
        )
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
        )
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
        )
        self.policy_info = Info(
            "guard_policy",
            "Active policy version (content hash) and mode.",
            registry=r,
        )
        self._create_known_series()

    def _create_known_series(self) -> None:
        """Create every series of the fixed label sets at zero (see the module docstring).

        Labels whose values are open (``over_refusals``' category may name a benign topic)
        are left to appear on first use.
        """
        for route in ROUTES:
            self.request_duration.labels(route=route)
            for status in STATUSES:
                self.requests.labels(route=route, status=status)
        for direction in DIRECTIONS:
            self.guard_overhead.labels(direction=direction)
            for decision in DECISIONS:
                self.would_decisions.labels(direction=direction, decision=decision)
                for mode in MODES:
                    self.decisions.labels(direction=direction, decision=decision, mode=mode)
        for category in HAZARDS:
            for action in ACTIONS:
                self.category_actions.labels(category=category, decision=action)
        for refusal in REFUSALS:
            self.refusals.labels(refusal=refusal)
        for kind in HISTORY_FAULTS:
            self.history_faults.labels(kind=kind)
        for stage in STAGES:
            self.classifier_duration.labels(stage=stage)
            for lane in LANES:
                self.classifier_runs.labels(stage=stage, lane=lane)
        for outcome in OUTCOMES:
            self.scoring_failures.labels(outcome=outcome)
        for stage in CASCADE_STAGES:
            self.cascade_texts.labels(stage=stage)
        for kind in CONFIRMATION_KINDS:
            self.classifier_confirmations.labels(kind=kind)
        for error in UPSTREAM_ERRORS:
            self.upstream_errors.labels(kind=error)
        for op in STORE_OPS:
            self.store_errors.labels(op=op)
        for result in RELOAD_RESULTS:
            self.policy_reloads.labels(result=result)
