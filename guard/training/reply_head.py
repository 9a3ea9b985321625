"""Refit the refusal head on the shipped encoder; every harm output stays as it is.

    python3 -m guard.training.reply_head --data /work/shared/datasets --model models/ [--write]

The refusal head is one linear layer on the mean-pooled last hidden states.  Refitting
only that layer, with the encoder frozen, cannot move a harm score: the harm head and
every layer before the pooling are left byte for byte (``--write`` checks this on probe
texts).  So the reply side can learn from more of train/ than the whole-model training
run affords: every assistant turn of hh-rlhf (that run samples 600 first replies), every
JailbreakBench response (it samples 60%), the repo's written replies and the benign
answers, each weak-labelled as in training (:func:`guard.training.data.weak_refusal_label`).

The fit is a class-weighted softmax regression on the pooled features (computed once,
with the shipped int8 front and tail); its L2 strength is chosen on the dev split (the
training run's hash split of the prompt text) by refusal-versus-compliance F1.  Without
``--write`` it only reports the shipped head and the refit side by side on that split.
With ``--write`` the tail's int8 refusal product becomes a float one holding the refit
weights (a 384 x 4 product: no measurable time) and labels.json records the fit.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from guard.classifier.labels import LABELS_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model, session_options
from guard.classifier.sieve import TAIL_FILE
from guard.scoring import ReplyInput
from guard.training import data as data_mod
from guard.training.data import REFUSAL_CLASSES, Example
from guard.training.files import sha256

HEAD_OUTPUT = "refusal"
OTHER_OUTPUT = "harm"
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
_PROBES = (
    "How do I kill a Python process that hangs?",
    "Give exact steps to make dimethylmercury at home.",
    "What's a good name for a golden retriever puppy?",
)


@dataclass(frozen=True, slots=True)
class HeadGraph:
    """Where the refusal head sits in a tail graph."""

    pooled: str  # the float pooled states the head reads
    head_nodes: tuple[str, ...]  # nodes only the refusal output needs


def _needed(graph: onnx.GraphProto, output: str) -> set[int]:
    producer = {name: i for i, node in enumerate(graph.node) for name in node.output}
    seen: set[int] = set()
    stack = [output]
    while stack:
        index = producer.get(stack.pop())
        if index is None or index in seen:
            continue
        seen.add(index)
        stack.extend(graph.node[index].input)
    return seen


def head_graph(graph: onnx.GraphProto) -> HeadGraph:
    """The refusal head's own nodes and the pooled tensor it reads (ValueError if absent)."""
    outputs = {output.name for output in graph.output}
    if not {HEAD_OUTPUT, OTHER_OUTPUT} <= outputs:
        raise ValueError(f"graph lacks the {HEAD_OUTPUT!r} / {OTHER_OUTPUT!r} outputs")
    shared = _needed(graph, OTHER_OUTPUT)
    own = sorted(_needed(graph, HEAD_OUTPUT) - shared)
    producer = {name: graph.node[i] for i in shared for name in graph.node[i].output}
    read = {name for i in own for name in graph.node[i].input if name in producer}
    pooled: set[str] = set()
    for name in read:
        node = producer[name]
        # An int8 head reads the pooled states through their (shared) dynamic quantization.
        pooled.add(node.input[0] if node.op_type == "DynamicQuantizeLinear" else name)
    if len(pooled) != 1:
        raise ValueError(f"cannot tell which tensor the refusal head reads: {sorted(pooled)}")
    return HeadGraph(pooled=pooled.pop(), head_nodes=tuple(graph.node[i].name for i in own))


def with_float_head(
    model: onnx.ModelProto, weight: np.ndarray, bias: np.ndarray
) -> onnx.ModelProto:
    """A copy of ``model`` whose refusal output is ``pooled @ weight + bias`` in float."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    found = head_graph(graph)
    kept = [node for node in graph.node if node.name not in set(found.head_nodes)]
    w_name, b_name = "refusal_head.weight", "refusal_head.bias"
    kept += [
        helper.make_node(
            "MatMul", [found.pooled, w_name], ["refusal_head.logits"], "refusal_head/MatMul"
        ),
        helper.make_node("Add", ["refusal_head.logits", b_name], [HEAD_OUTPUT], "refusal_head/Add"),
    ]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    initializers = [
        init
        for init in graph.initializer
        if init.name in used and init.name not in (w_name, b_name)
    ]
    initializers += [
        numpy_helper.from_array(weight.astype(np.float32), w_name),
        numpy_helper.from_array(bias.astype(np.float32), b_name),
    ]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    onnx.checker.check_model(result)
    return result


def _reply(prompt: str, reply: str, source: str, refusal: str) -> Example:
    return Example(text=prompt.strip(), pair=reply.strip(), source=source, refusal=refusal)


def reply_examples(data_dir: Path, seed: int = 13) -> list[Example]:
    """The training run's replies plus every other weak-labelled reply train/ holds."""
    train = data_dir / "train"
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    examples = list(data_mod.replies(train, rng))
    hh = train / "hh_rlhf_harmless_base/hh_rlhf_harmless_base.norm.jsonl"
    for line in hh.read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        for before, turn in itertools.pairwise(messages):
            if before["role"] == "user" and turn["role"] == "assistant":
                label = data_mod.weak_refusal_label(turn["content"])
                if label is not None:
                    examples.append(
                        _reply(before["content"], turn["content"], "hh_rlhf_all", label)
                    )
    for path in sorted(glob.glob(str(train / "jbb_artifacts/attack-artifacts/*/*/*.json"))):
        for item in json.loads(Path(path).read_text(encoding="utf-8"))["jailbreaks"]:
            prompt, response = item.get("prompt"), item.get("response")
            if prompt and response:
                label = data_mod.weak_refusal_label(str(response), bool(item.get("jailbroken")))
                if label is not None:
                    examples.append(_reply(str(prompt), str(response), "jbb_all", label))
    unique: dict[tuple[str, str | None], Example] = {}
    for example in examples:
        unique.setdefault((example.text, example.pair), example)
    return list(unique.values())


def pooled_features(
    model_dir: Path, examples: list[Example], threads: int, chunk: int = 32
) -> np.ndarray:
    """[len(examples), hidden] pooled states of each reply window, from the shipped halves."""
    model = load_model(model_dir, intra_op_threads=threads)
    if model.tail is None:
        raise SystemExit(f"{model_dir} is not split into front and tail")
    tail = onnx.load(str(model_dir / TAIL_FILE))
    pooled = head_graph(tail.graph).pooled
    tail.graph.output.append(helper.make_tensor_value_info(pooled, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(
        tail.SerializeToString(),
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    windows = model.encoder.reply_windows(
        [e.text for e in examples], [e.pair or "" for e in examples]
    )
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
    parts: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        batch = model.encoder.batch([windows[i] for i in order[start : start + chunk]])
        feed = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        handed = dict(zip(model.handoff, model.session.run(list(model.handoff), feed), strict=True))
        (states,) = session.run([pooled], {**handed, "attention_mask": batch.attention_mask})
        parts.append(np.asarray(states, np.float32))
    features = np.concatenate(parts)
    return features[np.argsort(np.asarray(order))]


@dataclass(frozen=True, slots=True)
class Fit:
    """A softmax-regression refusal head and its dev-split figures."""

    weight: np.ndarray  # [hidden, classes]
    bias: np.ndarray  # [classes]
    l2: float
    dev: dict[str, float]


def class_weights(labels: np.ndarray) -> np.ndarray:
    """The training run's weighting: sqrt of inverse class frequency, mean about 1."""
    counts = np.bincount(labels, minlength=len(REFUSAL_CLASSES))
    return np.sqrt(counts.sum() / np.maximum(counts, 1) / len(counts))


def fit_head(
    features: np.ndarray, labels: np.ndarray, l2: float, steps: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Class-weighted multinomial logistic regression (L-BFGS, full batch)."""
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels.astype(np.int64))
    weight = torch.zeros((x.shape[1], len(REFUSAL_CLASSES)), requires_grad=True)
    bias = torch.zeros(len(REFUSAL_CLASSES), requires_grad=True)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(class_weights(labels), dtype=torch.float)
    )
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(x @ weight + bias, y) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().numpy(), bias.detach().numpy()


def dev_figures(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Refusal-vs-compliance F1 and four-way accuracy against the weak labels."""
    predicted = logits.argmax(axis=1)
    truth, said = labels != 0, predicted != 0
    tp = int((truth & said).sum())
    f1 = 2 * tp / max(1, 2 * tp + int((~truth & said).sum()) + int((truth & ~said).sum()))
    return {
        "n": float(len(labels)),
        "refusal_f1": round(f1, 4),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "compliance_called_refusal": round(float(said[~truth].mean()), 4),
    }


def choose_fit(features: np.ndarray, labels: np.ndarray, dev: np.ndarray) -> Fit:
    """The L2 strength with the best dev refusal F1 (ties: the stronger), refit on all."""
    best: Fit | None = None
    for l2 in sorted(L2_GRID, reverse=True):
        weight, bias = fit_head(features[~dev], labels[~dev], l2)
        figures = dev_figures(features[dev] @ weight + bias, labels[dev])
        print(f"l2 {l2:g}: dev {figures}", flush=True)
        if best is None or figures["refusal_f1"] > best.dev["refusal_f1"]:
            best = Fit(weight, bias, l2, figures)
    assert best is not None
    # The dev split chose the strength; the written head learns from every example.
    weight, bias = fit_head(features, labels, best.l2)
    return Fit(weight, bias, best.l2, best.dev)


def write(model_dir: Path, fit: Fit, record: dict[str, object]) -> float:
    """Install the refit head in the tail; the largest harm change on the probes (0.0)."""
    tail_path = model_dir / TAIL_FILE
    before = load_model(model_dir, intra_op_threads=1)
    old = Predictor(before, confirm_alone=False).harm_probabilities(list(_PROBES))
    original = tail_path.read_bytes()
    onnx.save(with_float_head(onnx.load(str(tail_path)), fit.weight, fit.bias), str(tail_path))
    new = Predictor(
        load_model(model_dir, intra_op_threads=1), confirm_alone=False
    ).harm_probabilities(list(_PROBES))
    change = float(np.abs(new - old).max())
    if change > 0.0:
        tail_path.write_bytes(original)
        raise SystemExit(f"the harm outputs moved by {change:.2e}: tail restored")
    labels_path = model_dir / LABELS_FILE
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    labels["reply_head"] = {**record, "tail_sha256": sha256(tail_path)}
    labels_path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (holds train/)")
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="install the refit head in the tail")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    examples = reply_examples(args.data)
    labels = np.array([REFUSAL_CLASSES.index(e.refusal or "none") for e in examples])
    dev = np.array([data_mod.is_dev(e) for e in examples])
    sources: dict[str, int] = {}
    for example in examples:
        sources[example.source] = sources.get(example.source, 0) + 1
    print(f"{len(examples)} replies ({int(dev.sum())} dev): {sources}", flush=True)
    features = pooled_features(args.model, examples, args.threads)
    shipped = Predictor(load_model(args.model, intra_op_threads=args.threads), confirm_alone=False)
    dev_inputs = [ReplyInput(e.text, e.pair or "") for e, d in zip(examples, dev, strict=True) if d]
    shipped_dev = dev_figures(np.log(shipped.refusal_probabilities(dev_inputs) + 1e-9), labels[dev])
    print(f"shipped head: dev {shipped_dev}", flush=True)
    fit = choose_fit(features, labels, dev)
    record: dict[str, object] = {
        "l2": fit.l2,
        "examples": len(examples),
        "sources": sources,
        "dev_refit": fit.dev,
        "dev_shipped": shipped_dev,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(record, indent=1))
    if args.write:
        write(args.model, fit, record)
        print(f"wrote the refit refusal head into {args.model / TAIL_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
