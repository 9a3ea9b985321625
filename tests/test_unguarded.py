"""Generation endpoints the guard cannot judge are refused while it enforces."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from servers import FakeUpstream, Guard, running_guard

from guard.decisions import Mode
from guard.unguarded import is_unguarded_generation

GENERATION = [
    "/v1/completions",
    "/v1/responses",
    "/v1/threads/thread_1/runs",
    "/v1/threads/runs",
    "/v1/threads/thread_1/runs/run_1/submit_tool_outputs",
    "/v1/batches",
]


@pytest.fixture(scope="module")
def enforcing(upstream: tuple[FakeUpstream, str]) -> Iterator[Guard]:
    yield from running_guard(upstream[1], Mode.ENFORCE)


@pytest.fixture(scope="module")
def observing(upstream: tuple[FakeUpstream, str]) -> Iterator[Guard]:
    yield from running_guard(upstream[1], Mode.OBSERVE)


@pytest.fixture(scope="module")
def passing(upstream: tuple[FakeUpstream, str]) -> Iterator[Guard]:
    yield from running_guard(
        upstream[1], Mode.ENFORCE, overrides={"server": {"unguarded_generation": "pass"}}
    )


@pytest.mark.parametrize("path", GENERATION)
def test_generation_endpoints_are_refused_and_nothing_is_forwarded(
    enforcing: Guard, fake: FakeUpstream, path: str
) -> None:
    response = httpx.post(f"{enforcing.url}{path}", json={"model": "fake", "prompt": "hi"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "unguarded_endpoint"
    assert "chat completions" in error["message"]
    assert response.headers["x-request-id"]
    assert fake.seen == []
    assert enforcing.sample("guard_requests_total", route="unguarded", status="4xx") >= 1


def test_the_openai_client_gets_a_permission_error_and_its_connection_stays_usable(
    enforcing: Guard, fake: FakeUpstream
) -> None:
    with openai.OpenAI(base_url=f"{enforcing.url}/v1", api_key="sk-a", max_retries=0) as client:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            client.completions.create(model="fake", prompt="Write a poem " * 2000)
        assert caught.value.code == "unguarded_endpoint"
        with pytest.raises(openai.PermissionDeniedError):
            client.responses.create(model="fake", input="hello")
        assert [model.id for model in client.models.list()] == ["fake"]
    assert [seen.path for seen in fake.seen] == ["/v1/models"]


def test_reading_a_stored_response_or_batch_still_passes_through(
    enforcing: Guard, fake: FakeUpstream
) -> None:
    assert httpx.get(f"{enforcing.url}/v1/responses/resp_1").status_code == 418
    assert httpx.post(f"{enforcing.url}/v1/batches/batch_1/cancel").status_code == 418
    assert [seen.path for seen in fake.seen] == [
        "/v1/responses/resp_1",
        "/v1/batches/batch_1/cancel",
    ]


def test_observe_mode_forwards_them_and_counts_them(observing: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(f"{observing.url}/v1/completions", json={"prompt": "hi"})
    assert response.status_code == 418  # the upstream's catch-all answered
    assert fake.seen[-1].path == "/v1/completions"
    assert observing.sample("guard_requests_total", route="unguarded", status="4xx") == 1
    assert observing.sample("guard_requests_total", route="passthrough", status="4xx") == 0


def test_pass_setting_forwards_them_while_enforcing(passing: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(f"{passing.url}/v1/responses", json={"input": "hi"})
    assert response.status_code == 418
    assert fake.seen[-1].path == "/v1/responses"


def test_chat_completions_are_still_judged(enforcing: Guard, fake: FakeUpstream) -> None:
    response = httpx.post(
        f"{enforcing.url}/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "Hello there"}]},
    )
    assert response.status_code == 200
    assert response.headers["x-guard-decision"] == "allow"


@pytest.mark.parametrize(
    ("method", "path", "prefix", "expected"),
    [
        ("POST", "/v1/completions", None, True),
        ("POST", "/v1/completions/", None, True),
        ("POST", "/v1/chat/completions", None, False),
        ("GET", "/v1/responses", None, False),
        ("POST", "/v1/responses/resp_1/cancel", None, False),
        ("POST", "/v1/embeddings", None, False),
        ("POST", "/v1/completions", "/v1", True),
        ("POST", "/tools/completions", "/v1", False),
        ("POST", "/v1x/completions", "/v1", False),
    ],
)
def test_which_requests_are_generation_the_guard_cannot_judge(
    method: str, path: str, prefix: str | None, expected: bool
) -> None:
    scope = {"type": "http", "method": method, "path": path}
    assert is_unguarded_generation(scope, prefix) is expected
