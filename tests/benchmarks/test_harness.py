"""The benchmark harness measures what it says: real processes, real sockets, real wrk.

No timing is asserted (speed is the benchmarks' business); these check that the fake
upstream speaks OpenAI's format whole and streamed, that the load generator counts and
parses, that the clients see every chunk, and that the tables come from the numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from benchmarks import quality, report
from benchmarks.harness import clients, load, payload, procmem, stats, targets
from benchmarks.harness.upstream import REPLY, Chunking
from benchmarks.readme_block import load_result

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (Debian: wrk)")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("upstream")
    with targets.upstream(tmp, Chunking(chars=40, delay_ms=1), lifetime_s=120) as target:
        yield target


def test_user_turn_is_64_tokens() -> None:
    tokenizer = Path("models/tokenizer.json")
    if not tokenizer.exists():
        pytest.skip("no shipped tokenizer in models/")
    assert payload.token_counts(tokenizer) == {64: 2000}


def test_upstream_answers_whole_and_streamed_replies(upstream: targets.Target) -> None:
    whole = httpx.post(upstream.url(), content=payload.single_turn(), timeout=10).json()
    assert whole["choices"][0]["message"]["content"] == REPLY
    with httpx.Client(timeout=10) as client:
        timing = clients.stream_once(client, upstream, payload.single_turn(stream=True))
    assert timing.text == REPLY
    assert len(timing.gaps_ms) == -(-len(REPLY) // 40) - 1  # one event per 40-char chunk


def test_process_tree_cpu_and_rss_are_read(upstream: targets.Target) -> None:
    assert upstream.pid is not None and upstream.root_pid is not None
    assert procmem.rss_mib(upstream.pid) > 10
    assert procmem.tree_cpu_s(upstream.root_pid) > 0


@needs_wrk
def test_wrk_counts_requests_and_failures(upstream: targets.Target) -> None:
    result = load.wrk(upstream, load.NumberedBody.fresh(), concurrency=2, duration_s=1)
    assert result.requests > 0 and result.failures == 0
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    missing = load.wrk(upstream, None, concurrency=1, duration_s=1, path="/nowhere")
    assert missing.failures == missing.requests > 0  # 404s are counted as failures


def test_lua_script_varies_the_conversation_header() -> None:
    script = load.lua_script('{"a": 1}', {"Authorization": "Bearer k"}, "x-guard-conversation-id")
    assert 'wrk.body = "{\\"a\\": 1}"' in script
    assert 'wrk.headers["x-guard-conversation-id"] = "' in script
    assert '-" .. counter' in script
    assert "return wrk.format(nil, nil, nil, nil)" in script  # the fixed body
    numbered = load.lua_script(load.NumberedBody("{", "}", 7), {})
    assert 'return wrk.format(nil, nil, nil, "{" .. spaced(7 + counter) .. "}")' in numbered
    assert 'wrk.headers["Authorization"] = "Bearer k"' in script


def test_paired_added_is_the_median_of_same_repeat_differences() -> None:
    assert stats.paired_added([5.0, 9.0, 6.0], [1.0, 2.0, 3.0]) == 4.0
    assert stats.ratio(6.0, 3.0) == 2.0


def _run(target: str, c: int, repeat: int, p50: float, rps: float) -> dict[str, object]:
    return {
        "repeat": repeat,
        "target": target,
        "concurrency": c,
        "requests": 100,
        "requests_per_s": rps,
        "p50_ms": p50,
        "p99_ms": 2 * p50,
        "mean_ms": p50,
        "max_ms": 3 * p50,
        "failures": 0,
        "cpu_ms_per_request": 0.5,
    }


def test_report_tables_follow_the_result_file() -> None:
    latency = [
        _run(name, 1, r, p50, rps)
        for r in range(3)
        for name, p50, rps in (
            ("direct", 1.0, 900),
            ("guard-enforce", 3.0 + r, 300),
            ("litellm", 20.0, 50),
        )
    ]
    result = {
        "scorer": "onnx",
        "repeats": 3,
        "duration_s": 1,
        "concurrency": [1],
        "command": "x",
        "started": "s",
        "finished": "f",
        "latency": latency,
        "machine": {"cpu": "cpu", "cores": 2, "python": "3", "load_average": [1, 1, 1]},
    }
    text = report.render(result)
    assert "| enforce adds ≤ 5 ms p50 at c=1 (64-token turn) | 3.000 ms | yes |" in text
    assert "| guard ≥ 3× LiteLLM max req/s (slower guard mode) | 6.00× | yes |" in text


def test_quality_table_marks_missing_results(tmp_path: Path) -> None:
    text = quality.render(None, None)
    assert "| harmbench_test | not yet measured |" in text
    evaluation = {
        "model_version": "m1",
        "thresholds": {"flag": 0.5, "block": 0.9},
        "prompts": {
            "xstest_prompts": {
                "at_flag": {
                    "n": 450,
                    "tp": 190,
                    "fp": 8,
                    "fn": 10,
                    "tn": 242,
                    "f1": 0.9548,
                    "fpr": 0.032,
                },
                "at_block": {
                    "n": 450,
                    "tp": 180,
                    "fp": 2,
                    "fn": 20,
                    "tn": 248,
                    "f1": 0.9424,
                    "fpr": 0.008,
                },
            }
        },
    }
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(evaluation))
    loaded = load_result(path)
    text = quality.render(loaded, None)
    assert "| xstest_prompts | 450 | 0.955 | 3.2% | 0.942 | 0.8% |" in text
    assert "Llama Guard 3-8B F1 0.884, FPR 4.4%" in text


def test_overhead_reads_the_guards_histograms_and_times_serial_requests(
    upstream: targets.Target,
) -> None:
    from prometheus_client import generate_latest

    from benchmarks import overhead
    from guard.metrics import GuardMetrics

    metrics = GuardMetrics()
    metrics.request_duration.labels(route="chat").observe(0.004)
    metrics.classifier_duration.labels(stage="prompt").observe(0.003)
    metrics.guard_overhead.labels(direction="request").observe(0.0035)
    metrics.guard_overhead.labels(direction="reply").observe(0.0002)
    before = overhead.parse_totals(generate_latest(metrics.registry).decode())
    metrics.request_duration.labels(route="chat").observe(0.008)
    metrics.request_duration.labels(route="chat").observe(0.010)
    metrics.upstream_duration.observe(0.001)
    after = overhead.parse_totals(generate_latest(metrics.registry).decode())
    means = overhead.means_between(before, after)
    assert means["request_ms"] == pytest.approx(9.0)
    assert means["upstream_ms"] == pytest.approx(1.0)
    assert means["classifier_ms"] == 0.0  # nothing observed in between
    times = overhead.serial(upstream.port, 3)
    assert len(times) == 3 and all(t > 0 for t in times)
