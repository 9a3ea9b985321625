"""One validated settings model, fed from a YAML file, ``GUARD_*`` variables and CLI flags.

Precedence, highest first: CLI flags, environment (``GUARD_UPSTREAM__URL`` for nested
fields, ``GUARD_MODE`` for the top-level mode override), the config file, defaults.
Unknown keys are errors everywhere; a bad value raises :class:`guard.errors.ConfigError`
naming the source and the field, and the guard does not start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from guard.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL_DIR = REPO_ROOT / "models"
SHIPPED_POLICY_DIR = REPO_ROOT / "policies"
ENV_PREFIX = "GUARD_"


JointScoring = Literal["when_decisive", "always"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address the guard listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the guard listens on.")
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        gt=0,
        description="Largest chat request body accepted (413 above it, nothing forwarded).",
    )
    request_id_header: str = Field(
        "x-request-id", description="Header carrying the request ID (echoed when safe)."
    )
    unguarded_generation: Literal["refuse", "pass"] = Field(
        "refuse",
        description="Legacy completions, Responses, Assistants runs, batches: text generation "
        "the guard does not judge. refuse: 403 while any category enforces (observe mode "
        "forwards, counted as route=unguarded); pass: forward always.",
    )


class UpstreamSettings(_Section):
    url: str = Field("http://127.0.0.1:8000", description="Base URL of the LLM server.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout (504 after it).")
    read_timeout_s: float = Field(
        120.0, gt=0, description="Longest wait for the next bytes of a reply (504 after it)."
    )
    max_connections: int = Field(256, gt=0, description="Pooled connections to the upstream.")
    # The native client is the cheap default; httpx costs ~1.4 ms more CPU a request
    # (benchmarks/README.md) and is there for what it adds.
    client: Literal["native", "httpx"] = Field(
        "native",
        description="native: the guard's HTTP/1.1 client. httpx: HTTP/2, HTTPS_PROXY/NO_PROXY "
        "and SSL_CERT_FILE from the environment.",
    )
    http2: bool = Field(
        False, description="HTTP/2 to the upstream (httpx and https only; needs httpx[http2])."
    )

    @field_validator("http2")
    @classmethod
    def _http2_needs_httpx(cls, http2: bool, info: ValidationInfo) -> bool:
        if http2 and info.data.get("client") != "httpx":
            raise ValueError("HTTP/2 needs client: httpx (the native client speaks HTTP/1.1)")
        return http2


class ClassifierSettings(_Section):
    model_dir: Path = Field(SHIPPED_MODEL_DIR, description="Folder of the ONNX model files.")
    provider: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="onnxruntime execution provider; auto prefers CUDA when present."
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        description="Threads per inference run (0: onnxruntime chooses); idle ones sleep, "
        "never spin.",
    )
    inference_threads: int = Field(
        2, ge=1, description="Inference runs at once, off the event loop."
    )
    idle_intra_op_threads: int = Field(
        2,
        ge=0,
        description="Threads for a run that starts while no other runs (a lone request "
        "uses the idle cores; one more copy of the transformer in memory, ~25 MiB). "
        "Off when not above intra_op_threads.",
    )
    max_batch: int = Field(16, ge=1, description="Most texts scored in one run.")
    # Batches form from load anyway (guard.classifier.scorer), so 0 keeps a lone request
    # from waiting.
    batch_wait_ms: float = Field(
        0.0, ge=0, description="Extra wait for companions before a run while a thread is free."
    )
    timeout_s: float = Field(
        2.0, gt=0, description="Longest a scoring call may take (then on_scoring_error)."
    )
    sieve: bool = Field(
        True, description="Cascade: the static sieve (models/sieve.onnx) may clear short turns."
    )
    early_exit: bool = Field(
        True,
        description="Cascade: the early exit after the first layer (models/exit.onnx) may "
        "clear short turns; both stages must agree.",
    )


class MemorySettings(_Section):
    backend: Literal["memory", "redis"] = Field(
        "memory", description="Where conversation state lives (redis: shared by replicas)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server (backend redis).")
    on_store_error: Literal["local", "closed"] = Field(
        "local",
        description="Redis unreachable: local serves on per-process state; closed treats it "
        "as a scoring failure, decided by the policy's on_scoring_error (fail_closed blocks).",
    )
    ttl_s: int = Field(
        24 * 3600, gt=0, description="A conversation is forgotten this long after its last turn."
    )
    max_conversations: int = Field(
        100_000, gt=0, description="In-memory store: most conversations kept (LRU)."
    )
    max_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="In-memory store: most bytes of state kept (LRU)."
    )
    conversation_header: str = Field(
        "x-guard-conversation-id",
        description="Client header naming the conversation; without it the history's opening "
        "is fingerprinted.",
    )
    tenant_header: str | None = Field(
        None, description="Header naming the tenant; unset: a keyed hash of the API key."
    )
    # Replicas sharing Redis must share it, so Redis requires one.
    secret: SecretStr | None = Field(
        None,
        description="Key of the keyed hashes (tenants, conversations, relayed replies); "
        "required with redis, random per process when unset.",
    )
    escalation_threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Conversation risk counted in guard_escalations_total when no single turn "
        "reached it (the policy decides on its own).",
    )
    joint_turns: int = Field(
        default=4,
        ge=0,
        description="Recent user turns also scored together as one text (split intent); 0: "
        "off, one scored text per new turn.",
    )
    joint_scoring: JointScoring = Field(
        default="when_decisive",
        description="when_decisive: score the joint text only where it can change a decision "
        "(policy split_intent joint, an escalation flag within the joint weight, or a "
        "conversation with a refusal or block on record); always: every turn.",
    )
    score_cache_entries: int = Field(
        default=50_000, gt=0, description="Per-message scores kept per process."
    )
    redis_timeout_s: float = Field(
        default=0.25, gt=0, description="Redis connect and command timeout."
    )
    reconnect_interval_s: float = Field(
        default=1.0, ge=0, description="Retry Redis this long after a failure."
    )


class PolicySettings(_Section):
    dir: Path = Field(SHIPPED_POLICY_DIR, description="Folder of the policy files.")
    mode: Literal["observe", "enforce"] | None = Field(
        None, description="Overrides every policy file's mode (GUARD_MODE, --mode)."
    )
    watch: bool = Field(True, description="Reload policies on file change as well as SIGHUP.")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["json", "console"] = Field("json", description="JSON lines or console text.")
    include_content: bool = Field(
        False,
        description="Log prompt and reply text. Off by default: never log content or credentials.",
    )


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    classifier: ClassifierSettings = ClassifierSettings()
    memory: MemorySettings = MemorySettings()
    policy: PolicySettings = PolicySettings()
    logging: LogSettings = LogSettings()


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """``GUARD_SECTION__FIELD=value`` -> ``{"section": {"field": "value"}}``.

    ``GUARD_MODE`` is a shorthand for ``GUARD_POLICY__MODE``.  Values stay strings and
    pydantic converts them, so a bad value is reported against its field.
    """
    values: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path == ["mode"]:
            path = ["policy", "mode"]
        if path == ["config"]:
            continue  # GUARD_CONFIG names the file itself
        target = values
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return values


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"invalid settings ({source}):"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "<root>"
        lines.append(f"  {field}: {error['msg']}")
    return "\n".join(lines)


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from file, environment and overrides (CLI flags).

    ``overrides`` uses the nested shape (``{"upstream": {"url": ...}}``).  Raises
    :class:`ConfigError` naming the file and field of the first problem.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(f"{ENV_PREFIX}CONFIG"):
        config_file = Path(env[f"{ENV_PREFIX}CONFIG"])
    data: dict[str, Any] = {}
    sources: list[str] = []
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_file} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file}: top level must be a mapping")
        data = loaded or {}
        sources.append(str(config_file))
    env_data = _env_values(env)
    if env_data:
        sources.append("GUARD_* environment")
    data = _deep_merge(data, env_data)
    if overrides:
        sources.append("command line")
        data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, ", ".join(sources) or "defaults")) from exc
