"""The one place where the onnxruntime session and the tokenizer are built.

Built eagerly at start-up so a missing file, a corrupt model or an unavailable execution
provider stops the guard with a :class:`ModelLoadError` naming the path or listing the
providers, instead of failing on the first request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from tokenizers import Tokenizer

from guard.classifier.encoding import Encoder
from guard.classifier.labels import MODEL_FILE, TOKENIZER_FILE, Labels, load_labels
from guard.classifier.sieve import SIEVE_FILE, Sieve, load_sieve_labels
from guard.errors import ModelLoadError

Provider = Literal["cpu", "cuda", "auto"]
_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """Everything needed to run the classifier."""

    session: ort.InferenceSession
    encoder: Encoder
    labels: Labels
    model_path: Path
    providers: tuple[str, ...]
    sieve: Sieve | None = None


def resolve_providers(provider: Provider, available: list[str] | None = None) -> list[str]:
    """onnxruntime provider names for a setting, checked against what is installed."""
    installed = list(ort.get_available_providers() if available is None else available)
    if provider == "auto":
        wanted = [name for name in ("CUDAExecutionProvider",) if name in installed]
        return [*wanted, "CPUExecutionProvider"]
    name = _PROVIDER_NAMES[provider]
    if name not in installed:
        raise ModelLoadError(
            f"execution provider {provider!r} ({name}) is not available in this onnxruntime; "
            f"available: {', '.join(installed)}"
        )
    return [name] if name == "CPUExecutionProvider" else [name, "CPUExecutionProvider"]


def session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def load_model(
    model_dir: Path,
    *,
    provider: Provider = "cpu",
    intra_op_threads: int = 1,
    model_file: str = MODEL_FILE,
    sieve: bool = False,
) -> LoadedModel:
    """Label map, tokenizer and session from ``model_dir``; :class:`ModelLoadError` if unusable.

    With ``sieve`` the cascade's first stage (:mod:`guard.classifier.sieve`) is loaded too
    and must be present.
    """
    labels = load_labels(model_dir)
    tokenizer_path = model_dir / TOKENIZER_FILE
    if not tokenizer_path.is_file():
        raise ModelLoadError(f"tokenizer not found: {tokenizer_path}")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise ModelLoadError(f"cannot load tokenizer {tokenizer_path}: {exc}") from exc
    model_path = model_dir / model_file
    session = open_session(model_path, provider, intra_op_threads, outputs=("harm", "refusal"))
    return LoadedModel(
        session=session,
        encoder=Encoder(tokenizer, labels.windowing),
        labels=labels,
        model_path=model_path,
        providers=tuple(session.get_providers()),
        sieve=load_sieve(model_dir, provider=provider, intra_op_threads=intra_op_threads)
        if sieve
        else None,
    )


def open_session(
    path: Path, provider: Provider, intra_op_threads: int, *, outputs: tuple[str, ...]
) -> ort.InferenceSession:
    """An inference session for one ONNX file, checked to have ``outputs``."""
    if not path.is_file():
        raise ModelLoadError(f"model not found: {path}")
    providers = resolve_providers(provider)
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options(intra_op_threads), providers=providers
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(f"cannot load ONNX model {path}: {exc}") from exc
    missing = set(outputs) - {output.name for output in session.get_outputs()}
    if missing:
        raise ModelLoadError(f"model {path} lacks the outputs {sorted(missing)}")
    return session


def load_sieve(model_dir: Path, *, provider: Provider = "cpu", intra_op_threads: int = 1) -> Sieve:
    """The cascade's first stage from ``model_dir`` (sieve.json + sieve.onnx)."""
    labels = load_sieve_labels(model_dir)
    path = model_dir / SIEVE_FILE
    return Sieve(open_session(path, provider, intra_op_threads, outputs=("harm",)), labels, path)
