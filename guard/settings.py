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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    request_id_header: str = "x-request-id"
    # POST to legacy completions, Responses, Assistants runs or batches: text generation
    # the guard does not judge.  refuse: 403 in OpenAI's error shape while any category
    # enforces (observe mode forwards it, counted as route="unguarded"); pass: forward.
    unguarded_generation: Literal["refuse", "pass"] = "refuse"


class UpstreamSettings(_Section):
    url: str = "http://127.0.0.1:8000"
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(120.0, gt=0)
    max_connections: int = Field(256, gt=0)
    # native: guard.http1, the cheap default.  httpx: HTTP/2, HTTPS_PROXY/NO_PROXY and
    # SSL_CERT_FILE from the environment, at ~1.4 ms more CPU a request (benchmarks/README.md).
    client: Literal["native", "httpx"] = "native"
    http2: bool = False  # httpx and https only; needs h2 (pip install 'httpx[http2]')

    @field_validator("http2")
    @classmethod
    def _http2_needs_httpx(cls, http2: bool, info: ValidationInfo) -> bool:
        if http2 and info.data.get("client") != "httpx":
            raise ValueError("HTTP/2 needs client: httpx (the native client speaks HTTP/1.1)")
        return http2


class ClassifierSettings(_Section):
    model_dir: Path = SHIPPED_MODEL_DIR
    provider: Literal["cpu", "cuda", "auto"] = "cpu"
    intra_op_threads: int = Field(1, ge=0)  # 0 lets onnxruntime choose
    inference_threads: int = Field(2, ge=1)  # sessions run concurrently off the loop
    max_batch: int = Field(16, ge=1)
    # Extra wait for companions before a run while a thread is free; batches form from
    # load anyway (guard.classifier.scorer), so 0 keeps a lone request from waiting.
    batch_wait_ms: float = Field(0.0, ge=0)
    timeout_s: float = Field(2.0, gt=0)
    # The cascade's cheap stages (guard.classifier.sieve): the static sieve
    # (models/sieve.onnx) and the early exit after the transformer's first layer
    # (models/exit.onnx) clear plainly benign user turns before the transformer's end.
    # Off: every text goes through the whole transformer.
    sieve: bool = True
    early_exit: bool = True


class MemorySettings(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    on_store_error: Literal["local", "closed"] = "local"
    ttl_s: int = Field(24 * 3600, gt=0)
    max_conversations: int = Field(100_000, gt=0)
    max_bytes: int = Field(256 * 1024 * 1024, gt=0)
    conversation_header: str = "x-guard-conversation-id"
    tenant_header: str | None = None
    # Key for the keyed hashes of tenants, conversations and relayed replies.  Replicas
    # sharing Redis must share it; with the in-memory store a random per-process key is
    # used when unset.
    secret: SecretStr | None = None
    # Conversation risk at or above this, where no single turn reached it, counts in
    # guard_escalations_total; the policy takes its own flag/block decisions.
    escalation_threshold: float = Field(default=0.5, ge=0, le=1)
    # User turns scored together as one text each request (split intent); 0 turns it
    # off and leaves one scored text per new turn (benchmarks/README.md: cost).
    joint_turns: int = Field(default=4, ge=0)
    score_cache_entries: int = Field(default=50_000, gt=0)  # per-message scores kept per process
    redis_timeout_s: float = Field(default=0.25, gt=0)  # connect and command timeout
    reconnect_interval_s: float = Field(default=1.0, ge=0)  # retry Redis this long after a failure


class PolicySettings(_Section):
    dir: Path = SHIPPED_POLICY_DIR
    mode: Literal["observe", "enforce"] | None = None  # overrides the policy files' mode
    watch: bool = True  # reload on file change as well as SIGHUP


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"
    # Off by default: never log prompt text, reply text or credentials.
    include_content: bool = False


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
