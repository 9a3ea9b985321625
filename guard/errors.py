"""The guard's one exception tree.

Every error the guard raises on purpose derives from :class:`GuardError`.  Errors of
third-party libraries (httpx, onnxruntime, redis, pydantic, yaml) are translated once,
at the boundary where they occur, with ``raise ... from exc`` so the cause survives for
debugging.  The HTTP edge (proxy and middleware) maps these classes to status codes and
writes generic bodies in OpenAI's error shape; it never echoes the exception text of an
upstream or library error to the client.

::

    GuardError
    ├── ConfigError            bad settings or policy file; stops start-up (names file and field)
    │   └── PolicyError        a policy file failed validation or linting
    ├── RequestError           the client's request is unusable -> 4xx, nothing forwarded
    │   ├── InvalidJSON            body is not JSON                        -> 400
    │   ├── InvalidRequest         JSON of the wrong shape (names param)  -> 400
    │   ├── BodyTooLarge           body over the configured limit         -> 413
    │   ├── UnsupportedMediaType   content type other than JSON           -> 415
    │   └── UnguardedEndpoint      text generation the guard cannot judge -> 403
    ├── UpstreamError          the LLM server failed us -> 5xx
    │   ├── UpstreamUnavailable    connection refused / reset / protocol   -> 502
    │   ├── UpstreamTimeout        no answer in time                       -> 504
    │   └── UpstreamBadResponse    answered with something we cannot parse -> 502
    ├── ScoringError           the classifier failed (policy decides fail-open/closed)
    │   ├── ModelLoadError         model/tokenizer missing or unloadable, provider unavailable
    │   └── ScoringTimeout         inference did not finish in time
    └── StateStoreError        conversation state could not be read or written
        └── StateStoreUnavailable  backend (Redis) unreachable
"""

from __future__ import annotations


class GuardError(Exception):
    """Base of every error the guard raises on purpose."""


class ConfigError(GuardError):
    """Settings or a policy file are invalid; raised at start-up or reload."""


class PolicyError(ConfigError):
    """A policy file failed validation; the message names the file, line and field."""


class RequestError(GuardError):
    """The client's request cannot be processed; answered with a 4xx."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidJSON(RequestError):
    code = "invalid_json"


class InvalidRequest(RequestError):
    code = "invalid_value"


class BodyTooLarge(RequestError):
    status_code = 413
    code = "body_too_large"


class UnsupportedMediaType(RequestError):
    status_code = 415
    code = "unsupported_media_type"


class UpstreamError(GuardError):
    """The upstream LLM server could not be used."""

    status_code = 502
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class UpstreamBadResponse(UpstreamError):
    code = "upstream_bad_response"


class ScoringError(GuardError):
    """The classifier could not score; the policy's failure mode decides what happens."""


class ModelLoadError(ScoringError):
    """The model, tokenizer or execution provider could not be loaded."""


class ScoringTimeout(ScoringError):
    """Inference did not finish within the configured time."""


class StateStoreError(GuardError):
    """Conversation state could not be read or written."""


class StateStoreUnavailable(StateStoreError):
    """The state backend is unreachable."""


class UnguardedEndpoint(RequestError):
    """A text-generation endpoint the guard does not judge (legacy completions, Responses,
    Assistants runs, batches); refused so it cannot be used to go around the guard."""

    status_code = 403
    code = "unguarded_endpoint"
