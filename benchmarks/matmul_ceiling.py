"""How fast can a turn's matrix products be on this core: the floor under the 3 ms target.

    python3 benchmarks/matmul_ceiling.py --model-dir models \
        --out benchmarks/results/matmul_ceiling.json

Reads every int8 weight matrix the shipped transformer multiplies by (the inputs of its
``MatMulInteger`` nodes, front and tail), times onnxruntime's int8 product
(``DynamicQuantizeMatMul``, the kernel the guard's session fuses them into) alone on one
thread for each distinct shape with as many rows as a turn has tokens, and sums the times
over the model's products (the two heads on one pooled row): what the products of one
turn cost before anything else runs.
Beside it, the same kernel on large products, where it runs nearest this core's peak, so
that the model's shapes can be read as a share of what the core does at all.  Random
weights and inputs (the kernel's time does not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guard.classifier.labels import MODEL_FILE
from guard.classifier.session import session_options
from guard.classifier.sieve import TAIL_FILE

LARGE = ((512, 1536, 1536), (1024, 2048, 2048))
HEAD_OUTPUTS = 64  # a product with fewer outputs than this is a head (harm: 16, refusal: 4)


def weight_shapes(model_dir: Path) -> Counter[tuple[int, int]]:
    """(inner, outer) of every int8 weight matrix the transformer multiplies by."""
    shapes: Counter[tuple[int, int]] = Counter()
    for name in (MODEL_FILE, TAIL_FILE):
        path = model_dir / name
        if not path.is_file():
            continue
        graph = onnx.load(str(path)).graph
        weights = {i.name: tuple(i.dims) for i in graph.initializer if len(i.dims) == 2}
        for node in graph.node:
            if node.op_type == "MatMulInteger" and node.input[1] in weights:
                inner, outer = weights[node.input[1]]
                shapes[(int(inner), int(outer))] += 1
    return shapes


def product_session(rows: int, inner: int, outer: int) -> ort.InferenceSession:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.integers(-127, 128, (inner, outer)).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    node = helper.make_node(
        "DynamicQuantizeMatMul", ["x", "w", "s", "z"], ["y"], domain="com.microsoft"
    )
    graph = helper.make_graph(
        [node],
        "product",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, inner])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, outer])],
        weights,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    # The guard's own session options, one intra-op thread: the kernel as a turn runs it.
    return ort.InferenceSession(
        model.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"]
    )


def time_product(rows: int, inner: int, outer: int, repeats: int) -> float:
    """p50 seconds of one product, after a warm-up."""
    session = product_session(rows, inner, outer)
    x = np.random.default_rng(1).standard_normal((rows, inner)).astype(np.float32)
    for _ in range(20):
        session.run(None, {"x": x})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {"x": x})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--tokens", type=int, default=64, help="rows of each product")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    shapes = weight_shapes(args.model_dir)
    if not shapes:
        raise SystemExit(f"no int8 matrix products found in {args.model_dir}")
    rows = []
    turn_s = 0.0
    turn_macs = 0
    for (inner, outer), count in sorted(shapes.items()):
        # The heads (a handful of outputs) read one pooled row per window, not every token.
        rows_of = 1 if outer < HEAD_OUTPUTS else args.tokens
        seconds = time_product(rows_of, inner, outer, args.repeats)
        macs = rows_of * inner * outer
        turn_s += count * seconds
        turn_macs += count * macs
        rows.append(
            {
                "shape": [rows_of, inner, outer],
                "in_model": count,
                "p50_us": round(seconds * 1e6, 1),
                "gmac_s": round(macs / seconds / 1e9, 1),
            }
        )
    large = []
    for shape in LARGE:
        seconds = time_product(*shape, repeats=max(20, args.repeats // 10))
        macs = shape[0] * shape[1] * shape[2]
        large.append({"shape": list(shape), "p50_us": round(seconds * 1e6, 1),
                      "gmac_s": round(macs / seconds / 1e9, 1)})  # fmt: skip
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "onnxruntime": ort.__version__,
        "tokens": args.tokens,
        "model_products": rows,
        "large_products": large,
        "turn_products_ms": round(turn_s * 1e3, 3),
        "turn_macs": turn_macs,
        "turn_gmac_s": round(turn_macs / turn_s / 1e9, 1),
    }
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
