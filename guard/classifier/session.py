"""The one place where the onnxruntime session and the tokenizer are built.

Built eagerly at start-up so a missing file, a corrupt model or an unavailable execution
provider stops the guard with a :class:`ModelLoadError` naming the path or listing the
providers, instead of failing on the first request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from tokenizers import Tokenizer

from guard.classifier.encoding import Encoder
from guard.classifier.labels import MODEL_FILE, TOKENIZER_FILE, Labels, load_labels
from guard.classifier.sieve import (
    EXIT_FILE,
    EXIT_LABELS_FILE,
    SIEVE_FILE,
    TAIL_FILE,
    Sieve,
    load_sieve_labels,
)
from guard.errors import ModelLoadError

Provider = Literal["cpu", "cuda", "auto"]
# Spin of a widened model's pool threads between ops (models/MODEL_CARD.md, Speed).
WIDE_SPIN_US = 100
_PROVIDER_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# Fusions that make the CPU run slower: onnxruntime 1.32's fused SkipLayerNormalization
# takes ~127 us on a 64 x 384 input where the Add and LayerNormalization it replaces take
# ~20, so the 64-token turn ran 9% faster without it (models/MODEL_CARD.md, Speed).  The
# CUDA provider keeps every fusion.
CPU_DISABLED_FUSIONS = ("SkipLayerNormFusion",)
HIDDEN = "hidden"  # the split model's states where the front hands over to the tail
MASK_INPUT = "attention_mask"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """Everything needed to run the classifier."""

    session: ort.InferenceSession
    encoder: Encoder
    labels: Labels
    model_path: Path
    providers: tuple[str, ...]
    sieve: Sieve | None = None
    tail: ort.InferenceSession | None = None  # the layers after the front, when split
    exit: Sieve | None = None  # the early exit on the front's hidden states
    # The front's outputs that the tail takes, ``hidden`` first: a pair cut from the export
    # also hands over ``attention_bias``; a fused pair's tail needs only the mask.
    handoff: tuple[str, ...] = (HIDDEN,)


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


_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def _register_shared_arena() -> None:
    """One CPU memory arena for every session of the process that opts in.

    Each session otherwise keeps an arena of its own, grown to the largest batch it ran
    and never given back: with the idle lane's second copy of the transformer that
    doubled the growth (+131 MiB against +31 MiB shared, 600 batches of 1-16 turns
    alternating between the two copies; same speed).
    """
    global _shared_arena_registered
    with _shared_arena_lock:
        if _shared_arena_registered:
            return
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # 0 / -1: no cap, onnxruntime's default extension strategy and chunk sizes.
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena_registered = True


def session_options(intra_op_threads: int, *, spin_us: int = 0) -> ort.SessionOptions:
    _register_shared_arena()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.intra_op_num_threads = intra_op_threads
    # Idle pool threads must sleep, not spin for onnxruntime's default time: a sidecar
    # shares its cores with the app, and on the 2-core benchmark VM that spinning made a
    # 2-thread run 2.2x slower than one thread (6.9 vs 4.0 ms, front and tail of a 64-token
    # turn) where sleeping made it 1.3x faster.  A spin of some microseconds bridges the
    # gap between one op and the next of the same run without holding a core after it.
    if spin_us > 0:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
    else:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
    early_exit: bool = False,
) -> LoadedModel:
    """Label map, tokenizer and sessions from ``model_dir``; :class:`ModelLoadError` if unusable.

    ``model_file`` is either the whole transformer (outputs ``harm`` and ``refusal``) or,
    as shipped, its front layers (output ``hidden``), continued by ``guard.tail.onnx``
    (:mod:`guard.classifier.early_exit`).  With ``sieve`` / ``early_exit`` the cascade's
    cheap stages are loaded too and must be present.
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
    session = open_session(model_path, provider, intra_op_threads, outputs=())
    outputs = {output.name for output in session.get_outputs()}
    tail = None
    handoff: tuple[str, ...] = (HIDDEN,)
    if HIDDEN in outputs:
        tail_path = model_dir / TAIL_FILE
        tail = open_session(tail_path, provider, intra_op_threads, outputs=("harm", "refusal"))
        handoff = tail_handoff(tail)
        missing = sorted(set(handoff) - outputs)
        if missing:
            raise ModelLoadError(
                f"split model {model_path} lacks the outputs {missing} that {tail_path} takes"
            )
    elif not {"harm", "refusal"} <= outputs:
        raise ModelLoadError(
            f"model {model_path} has neither the 'harm'/'refusal' outputs nor 'hidden'"
        )
    if early_exit and tail is None:
        raise ModelLoadError(
            f"model {model_path} is not split, so it has no early exit "
            "(set classifier.early_exit: false)"
        )
    return LoadedModel(
        session=session,
        encoder=Encoder(tokenizer, labels.windowing),
        labels=labels,
        model_path=model_path,
        providers=tuple(session.get_providers()),
        sieve=load_sieve(model_dir, provider=provider, intra_op_threads=intra_op_threads)
        if sieve
        else None,
        tail=tail,
        handoff=handoff,
        exit=load_exit(model_dir, provider=provider, intra_op_threads=intra_op_threads)
        if early_exit
        else None,
    )


def tail_handoff(tail: ort.InferenceSession) -> tuple[str, ...]:
    """The inputs ``tail`` takes from its front (all but the attention mask), ``hidden`` first."""
    names = [i.name for i in tail.get_inputs() if i.name != MASK_INPUT]
    if HIDDEN not in names:
        raise ModelLoadError(f"the tail model has no {HIDDEN!r} input (inputs: {names})")
    return (HIDDEN, *[name for name in names if name != HIDDEN])


def widened(model: LoadedModel, provider: Provider, intra_op_threads: int) -> LoadedModel:
    """The same model with the transformer's sessions opened again for ``intra_op_threads``.

    For runs that start while the classifier is otherwise idle (a lone request can use
    the cores the busy path leaves to concurrent runs); costs one more copy of the
    transformer's weights in memory.  The tokenizer, labels and cheap stages are shared.
    """
    if intra_op_threads < 2:
        raise ValueError("a widened model needs at least 2 intra-op threads")
    outputs = tuple(output.name for output in model.session.get_outputs())
    session = open_session(
        model.model_path, provider, intra_op_threads, outputs=outputs, spin_us=WIDE_SPIN_US
    )
    tail = None
    if model.tail is not None:
        tail = open_session(
            model.model_path.parent / TAIL_FILE,
            provider,
            intra_op_threads,
            outputs=("harm", "refusal"),
            spin_us=WIDE_SPIN_US,
        )
    return replace(model, session=session, tail=tail)


def disabled_fusions(providers: list[str]) -> list[str]:
    """The graph fusions to leave out for a session on ``providers`` (resolved names)."""
    return list(CPU_DISABLED_FUSIONS) if providers[0] == _PROVIDER_NAMES["cpu"] else []


def open_session(
    path: Path,
    provider: Provider,
    intra_op_threads: int,
    *,
    outputs: tuple[str, ...],
    spin_us: int = 0,
) -> ort.InferenceSession:
    """An inference session for one ONNX file, checked to have ``outputs``."""
    if not path.is_file():
        raise ModelLoadError(f"model not found: {path}")
    providers = resolve_providers(provider)
    try:
        session = ort.InferenceSession(
            str(path),
            sess_options=session_options(intra_op_threads, spin_us=spin_us),
            providers=providers,
            disabled_optimizers=disabled_fusions(providers),
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


def load_exit(model_dir: Path, *, provider: Provider = "cpu", intra_op_threads: int = 1) -> Sieve:
    """The early-exit head from ``model_dir`` (exit.json + exit.onnx)."""
    labels = load_sieve_labels(model_dir, EXIT_LABELS_FILE)
    path = model_dir / EXIT_FILE
    return Sieve(open_session(path, provider, intra_op_threads, outputs=("harm",)), labels, path)
