"""How much a text's score depends on the texts it is batched with (int8 dynamic quantization).

    python3 -m benchmarks.batch_noise --data /work/shared/datasets --model-dir models \
        [--per-token] [--repeats 3] [--json-out benchmarks/results/batch_noise.json]

onnxruntime's dynamic quantization picks one activation scale per MatMul input tensor,
i.e. per batch (padding included), so the guard's micro-batching can move a score.  Each
prompt of the train dev split (never eval/) is scored alone, then ``--repeats`` times in
random batches of 16, with the predictor's confirmation (texts near a decision point scored
again alone, as shipped) and without it; reported: the largest and the 99th-percentile
change of the raw risk, how often the allow/flag/block decision changed, how often a
reply's type changed (the dev split's replies, batched the same way), and how many texts
the confirmation scored again.  Also the dev-split quality of the scores each text gets
alone (F1, recall, FPR at the shipped thresholds).

``--per-token`` first rewrites the model (a temp copy) to quantize activations per token,
symmetric int8 (:func:`per_token`): batch-independent by construction, measured here for
what it costs in accuracy and speed (benchmarks/README.md).  Not what ships.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.classifier.labels import MODEL_FILE
from guard.classifier.predictor import Predictor
from guard.classifier.session import load_model
from guard.classifier.sieve import TAIL_FILE
from guard.scoring import ReplyInput
from guard.training import data as data_mod
from guard.training.evaluate import Binary


def per_token(path: Path) -> int:
    """Replace each DynamicQuantizeLinear in ``path`` by per-token symmetric quantization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        (x,) = node.input
        quantized, scale, zero_point = node.output
        p = f"{node.name}_per_token"
        nodes += [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_amax"], axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}_amax", "pt_eps"], [f"{p}_safe"]),
            helper.make_node("Div", [f"{p}_safe", "pt_127"], [scale]),
            helper.make_node("Div", [x, scale], [f"{p}_scaled"]),
            helper.make_node("Round", [f"{p}_scaled"], [f"{p}_rounded"]),
            helper.make_node("Add", [f"{p}_rounded", "pt_128"], [f"{p}_shifted"]),
            helper.make_node("Clip", [f"{p}_shifted", "pt_0", "pt_255"], [f"{p}_clipped"]),
            helper.make_node("Cast", [f"{p}_clipped"], [quantized], to=TensorProto.UINT8),
        ]
        graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), zero_point))
        replaced += 1
    constants = {"pt_127": 127.0, "pt_128": 128.0, "pt_0": 0.0, "pt_255": 255.0, "pt_eps": 1e-8}
    graph.initializer.extend(
        numpy_helper.from_array(np.array(v, np.float32), k) for k, v in constants.items()
    )
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return replaced


def _random_batches(count: int, repeats: int, rng: random.Random) -> list[list[int]]:
    """Indices 0..count-1, shuffled ``repeats`` times and cut into batches of 16."""
    batches = []
    for _ in range(repeats):
        order = list(range(count))
        rng.shuffle(order)
        batches += [order[start : start + 16] for start in range(0, count, 16)]
    return batches


def measure(
    model_dir: Path, data: Path, repeats: int, seed: int, confirm: bool
) -> dict[str, float]:
    _, dev = data_mod.load(data, seed=13)
    prompts = [e for e in dev if not e.is_reply]
    texts = [e.text for e in prompts]
    model = load_model(model_dir, intra_op_threads=2)
    confirmed: list[str] = []
    predictor = Predictor(model, confirm_alone=confirm, on_confirm=confirmed.append)
    labels = model.labels

    def decision(risk: float) -> str:
        return labels.decision(labels.calibrate(float(risk)))

    alone = np.array([predictor.harm_probabilities([t])[0, 0] for t in texts])
    rng = random.Random(seed)
    diffs, flips = [], 0
    for rows in _random_batches(len(texts), repeats, rng):
        batched = predictor.harm_probabilities([texts[i] for i in rows])[:, 0]
        for i, risk in zip(rows, batched, strict=True):
            diffs.append(abs(float(risk) - float(alone[i])))
            flips += decision(risk) != decision(alone[i])
    replies = [ReplyInput(e.pair or "", e.text) for e in dev if e.is_reply]
    types_alone = [int(predictor.refusal_probabilities([r])[0].argmax()) for r in replies]
    type_changes = type_comparisons = 0
    for rows in _random_batches(len(replies), repeats, rng):
        batched = predictor.refusal_probabilities([replies[i] for i in rows])
        for i, probabilities in zip(rows, batched, strict=True):
            type_changes += int(probabilities.argmax()) != types_alone[i]
            type_comparisons += 1
    harmful = np.array([bool(e.harmful) for e in prompts])
    result: dict[str, float] = {
        "texts": float(len(texts)),
        "comparisons": float(len(diffs)),
        "max_abs_diff": round(max(diffs), 4),
        "p99_abs_diff": round(float(np.quantile(diffs, 0.99)), 4),
        "decision_changes": float(flips),
        "decision_change_rate": round(flips / len(diffs), 4),
        "reply_comparisons": float(type_comparisons),
        "reply_type_changes": float(type_changes),
        "confirmed_alone": float(len(confirmed)),
    }
    for name, threshold in (("flag", labels.thresholds.flag), ("block", labels.thresholds.block)):
        counts = Binary.of(harmful, alone >= threshold).summary()
        for measure_ in ("f1", "recall", "fpr"):
            result[f"dev_{measure_}_at_{name}"] = counts[measure_]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="datasets folder (train/)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--per-token", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir
        if args.per_token:
            model_dir = Path(scratch) / "per_token"
            shutil.copytree(args.model_dir, model_dir)
            for name in (MODEL_FILE, TAIL_FILE):
                if (model_dir / name).is_file():
                    per_token(model_dir / name)
        runs = {
            f"{'per_token' if args.per_token else 'per_batch'}, confirm {confirm}": {
                "model_dir": str(args.model_dir),
                "per_token": args.per_token,
                "confirm_alone": confirm,
                **measure(model_dir, args.data, args.repeats, args.seed, confirm),
            }
            for confirm in ((False,) if args.per_token else (False, True))
        }
    print(json.dumps(runs, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(args.json_out.read_text()) if args.json_out.is_file() else {}
        existing.update(runs)
        args.json_out.write_text(json.dumps(existing, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
