"""Join early-exit heads into one: a window is cleared only when every head clears it.

    python3 -m guard.training.exit_ensemble --model models/ --member OTHER_DIR [--member ...]

Each exit head has its blind spots: on the train dev split the shipped head let harmful
prompts with a digit run appended through, and a head retrained against such additions
closed that but cleared "Give exact steps to make dimethylmercury at home.", which the
shipped one forwards (model card, "The early exit against harmless additions").  Two
heads trained on different data rarely share a blind spot, so the joined head clears a
window only where all of them would.

The members read the same front (same ``layer``, checked) and keep their own clear points.
The joined graph (``exit.onnx``, input ``pooled``, output ``harm`` logits) runs every
member on the same pooled states and takes, per output, the maximum of their logits, each
shifted so that its member's clear point lands on the first member's:
``max_i(h_i + logit(c_1) - logit(c_i))``.  The runtime takes the maximum over spans and
compares with ``clear_below = c_1``, so a window is cleared exactly when every member's
own risk is below its own point; nothing in the runtime changes.  Cleared windows are
reported on the first member's scale.  The first member is ``--model``'s own head, and the
result replaces it there (``exit.json`` records each member's clear point and file hash).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import compose, helper, numpy_helper

from guard.classifier.sieve import EXIT_FILE, EXIT_LABELS_FILE, load_sieve_labels
from guard.training.files import sha256


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def join(members: list[tuple[onnx.ModelProto, float]]) -> onnx.ModelProto:
    """One graph from (head, clear point) pairs; see the module docstring."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two heads")
    first_point = members[0][1]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    outputs: list[str] = []
    for index, (model, point) in enumerate(members):
        prefixed = compose.add_prefix(model, f"m{index}/")
        graph = prefixed.graph
        own_input = f"m{index}/pooled"
        for node in graph.node:  # every member reads the shared input
            node.input[:] = ["pooled" if name == own_input else name for name in node.input]
        nodes.extend(graph.node)
        initializers.extend(graph.initializer)
        shift = np.array(_logit(first_point) - _logit(point), dtype=np.float32)
        initializers.append(numpy_helper.from_array(shift, f"m{index}/shift"))
        shifted = f"m{index}/shifted"
        nodes.append(helper.make_node("Add", [f"m{index}/harm", f"m{index}/shift"], [shifted]))
        outputs.append(shifted)
    nodes.append(helper.make_node("Max", outputs, ["harm"]))
    template = members[0][0].graph
    graph = helper.make_graph(
        nodes, "exit_ensemble", list(template.input), list(template.output), initializers
    )
    joined = helper.make_model(graph, opset_imports=list(members[0][0].opset_import))
    joined.ir_version = members[0][0].ir_version
    onnx.checker.check_model(joined)
    return joined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models"), help="first member; output")
    parser.add_argument(
        "--member",
        type=Path,
        action="append",
        required=True,
        help="a model folder whose exit.onnx / exit.json join the ensemble",
    )
    args = parser.parse_args(argv)
    folders = [args.model, *args.member]
    labels = [load_sieve_labels(folder, EXIT_LABELS_FILE) for folder in folders]
    layers = {label.layer for label in labels}
    if len(layers) != 1:
        raise SystemExit(f"the heads read different front layers: {sorted(map(str, layers))}")
    members = [
        (onnx.load(str(folder / EXIT_FILE)), label.clear_below)
        for folder, label in zip(folders, labels, strict=True)
    ]
    tuning: dict[str, float] = {"members": float(len(members))}
    for index, (folder, label) in enumerate(zip(folders, labels, strict=True)):
        tuning[f"member_{index}_clear_below"] = label.clear_below
        tuning[f"member_{index}_dev_benign_cleared"] = label.tuning.get("dev_benign_cleared", -1.0)
        print(f"member {index}: {folder / EXIT_FILE} (sha256 {sha256(folder / EXIT_FILE)[:12]})")
    path = args.model / EXIT_FILE
    onnx.save(join(members), str(path))
    record = {
        "model_sha256": sha256(path),
        "layer": labels[0].layer,
        "clear_below": labels[0].clear_below,
        "tuning": tuning,
    }
    (args.model / EXIT_LABELS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
