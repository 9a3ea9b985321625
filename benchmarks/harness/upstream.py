"""A fake, fast OpenAI-compatible upstream: the floor every target is measured against.

Starlette under uvicorn, one process.  ``POST /v1/chat/completions`` answers a fixed
benign reply, whole or as a server-sent event stream (``"stream": true``) cut into
chunks of ``--chunk-chars`` characters with ``--chunk-delay-ms`` between them, so
streaming figures see real gaps to preserve.  ``GET /v1/models`` and the health paths
LiteLLM and the guard probe answer fixed JSON.

    python3 -m benchmarks.harness.upstream --port 9100 --chunk-chars 12 --chunk-delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

REPLY = (
    "Paris is the capital of France. It sits on the Seine in the north of the country. "
    "The city has been the seat of government for most of the last thousand years. "
    "Its museums, cafes and parks draw millions of visitors every year."
)
MODELS = {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "bench"}]}


@dataclass(frozen=True)
class Chunking:
    """How the fake model paces a reply: characters per stream chunk, the pause between
    chunks, and the time before anything of the reply is sent (a model's time to its
    first token; 0 answers at once, so the tables measure the gateways, not the model)."""

    chars: int = 12
    delay_ms: float = 5.0
    first_ms: float = 0.0


def completion(model: str) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": REPLY},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 64, "completion_tokens": 48, "total_tokens": 112},
    }
    return json.dumps(body).encode()


def _event(model: str, delta: dict[str, str], finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def sse_events(model: str, chunking: Chunking) -> AsyncIterator[bytes]:
    """The reply as OpenAI stream chunks, paced by ``chunking.delay_ms``."""
    yield _event(model, {"role": "assistant", "content": ""}, None)
    pause = chunking.delay_ms / 1000
    for start in range(0, len(REPLY), chunking.chars):
        if pause:
            await asyncio.sleep(pause)
        yield _event(model, {"content": REPLY[start : start + chunking.chars]}, None)
    yield _event(model, {}, "stop")
    yield b"data: [DONE]\n\n"


def create_app(chunking: Chunking):  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        model = str(body.get("model", "fake"))
        if chunking.first_ms:
            await asyncio.sleep(chunking.first_ms / 1000)
        if body.get("stream"):
            return StreamingResponse(sse_events(model, chunking), media_type="text/event-stream")
        return Response(completion(model), media_type="application/json")

    async def models(request: Request) -> Response:
        return JSONResponse(MODELS)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-chars", type=int, default=Chunking.chars)
    parser.add_argument("--chunk-delay-ms", type=float, default=Chunking.delay_ms)
    parser.add_argument("--first-ms", type=float, default=Chunking.first_ms)
    args = parser.parse_args()
    app = create_app(Chunking(args.chunk_chars, args.chunk_delay_ms, args.first_ms))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
