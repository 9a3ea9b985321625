"""Rewrite an exported transformer's self-attention into onnxruntime's fused kernel.

    python3 -m guard.training.fastgraph --model models/

The torch export spells each layer's attention out op by op: reshapes and transposes of
the query, key and value, two matrix products, a boolean mask turned into a bias, a
softmax and a pass that replaces NaN with zero (for rows with every key masked, which a
window never has: its first token is always real).  :func:`fuse_attention` replaces all
of that with one ``com.microsoft.MultiHeadAttention`` node per layer, fed the projected
query, key and value and the attention mask; the int8 projections around it stay as
they are.  On one core that saves ~7% of a 64-token turn (models/MODEL_CARD.md, Speed).
Once both halves of a split model are fused, :func:`drop_bias` also stops the front
building the expanded mask that only the unfused layers read.  The
outputs match the unfused graph to float rounding: a text scored alone moves by at most
:data:`MAX_DIFFERENCE` in any probability, int8 rounding flips (the command checks sample
texts and restores the folder otherwise; tests/training/test_fastgraph.py checks the
shipped model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from guard.classifier.labels import LABELS_FILE, MODEL_FILE
from guard.classifier.sieve import TAIL_FILE
from guard.training.files import sha256

_MASK = "attention_mask"
_BIAS = "attention_bias"  # the export's expanded mask, handed from front to tail (cut.py)
_CONTRIB = "com.microsoft"
_POOL_MASK = "/pool/Cast"  # TokenPool's key mask, already int32 as the fused node takes it
# Float rounding: the fused kernel sums in another order, which now and then flips the
# rounding of an int8 activation downstream: 1e-4 on the shipped model's probes at first,
# 0.0076 on one reply's type probabilities once the CPU sessions stopped fusing
# SkipLayerNormalization (guard.classifier.session).  Still well inside the int8 model's
# own batch noise (0.043 on the dev split); a wrong rewrite moves answers far more.
MAX_DIFFERENCE = 0.02


def _attention_layers(graph: onnx.GraphProto) -> list[str]:
    produced = {out for node in graph.node for out in node.output}
    prefixes = sorted(
        {
            node.name.rsplit("/", 1)[0] + "/"
            for node in graph.node
            if node.name.endswith("/attention/self/Softmax")
        }
    )
    return [p for p in prefixes if p + "Reshape_4_output_0" in produced]


def fuse_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same network with each BERT self-attention block as one MultiHeadAttention node.

    Raises ValueError for a graph without the export's attention pattern (already fused,
    or not this network), so a changed exporter fails loudly instead of running slowly.
    """
    graph = model.graph
    if _MASK not in {i.name for i in graph.input}:
        raise ValueError("the graph has no attention_mask input")
    layers = _attention_layers(graph)
    if not layers:
        raise ValueError("no unfused BERT self-attention found")
    heads = _heads(graph, layers[0])
    # Named after the first fused layer, so a front and a tail joined again stay valid.
    key_padding = layers[0] + "key_padding_mask"
    masks = _key_masks(graph, layers, key_padding)
    fused = {
        prefix + "Reshape_4_output_0": helper.make_node(
            "MultiHeadAttention",
            [f"{prefix}{part}/Add_output_0" for part in ("query", "key", "value")]
            + ["", masks[prefix]],
            [prefix + "Reshape_4_output_0"],
            name=prefix + "MultiHeadAttention",
            domain=_CONTRIB,
            num_heads=heads,
        )
        for prefix in layers
    }
    cast = helper.make_node(
        "Cast", [_MASK], [key_padding], name=key_padding, to=onnx.TensorProto.INT32
    )
    nodes = [cast] + [
        fused.get(node.output[0], node) if node.output else node for node in graph.node
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    _prune(graph)  # the unfused attention's ops are now dead
    if not any(op.domain == _CONTRIB for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_CONTRIB, 1))
    return model


def _key_masks(graph: onnx.GraphProto, layers: list[str], unpooled: str) -> dict[str, str]:
    """Per layer, the mask its keys are read under: the attention mask, or for layers after
    a token pool (guard.training.model.TokenPool) the pool's own int32 key mask."""
    order = {node.name: index for index, node in enumerate(graph.node)}
    pool = next((node for node in graph.node if node.name.endswith(_POOL_MASK)), None)
    if pool is None:
        return dict.fromkeys(layers, unpooled)
    return {
        prefix: pool.output[0] if order[prefix + "query/Add"] > order[pool.name] else unpooled
        for prefix in layers
    }


def _prune(graph: onnx.GraphProto) -> None:
    """Keep only the nodes, initializers and recorded shapes that the outputs need."""
    needed = {out.name for out in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    kept = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Shapes stay recorded for what is left: onnx's shape inference cannot see through the
    # contrib node, and cutting the graph again (cut.resplit) needs them.
    known = [info for info in graph.value_info if info.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(known)


def drop_bias(front_path: Path, tail_path: Path) -> bool:
    """Stop handing ``attention_bias`` from front to tail once the tail no longer reads it.

    The export's layers share a [batch, 1, seq, seq] mask that the front builds in ~40
    small ops; fused attention takes the attention mask itself, so once the tail is fused
    that work only feeds an input nobody reads (0.17 ms of a 64-token turn with the front
    fused too).  False (untouched) when the tail still reads it or the pair never had it.
    """
    tail = onnx.load(str(tail_path))
    if _BIAS not in {i.name for i in tail.graph.input}:
        return False
    if any(_BIAS in node.input for node in tail.graph.node):
        return False
    inputs = [i for i in tail.graph.input if i.name != _BIAS]
    del tail.graph.input[:]
    tail.graph.input.extend(inputs)
    front = onnx.load(str(front_path))
    outputs = [o for o in front.graph.output if o.name != _BIAS]
    del front.graph.output[:]
    front.graph.output.extend(outputs)
    _prune(front.graph)
    onnx.save(front, str(front_path))
    onnx.save(tail, str(tail_path))
    return True


def _heads(graph: onnx.GraphProto, prefix: str) -> int:
    """Heads of the attention: the query's width over the head size that its reshape
    spells out (the export writes [batch, sequence, -1, head size])."""
    reshape = next(n for n in graph.node if n.name == prefix + "Reshape")
    concat = next(n for n in graph.node if reshape.input[1] in n.output)
    size = next(n for n in graph.node if n.op_type == "Constant" and concat.input[3] in n.output)
    head_size = int(onnx.numpy_helper.to_array(size.attribute[0].t).reshape(-1)[0])
    add = next(n for n in graph.node if n.name == prefix + "query/Add")
    widths = [list(i.dims) for i in graph.initializer if i.name in add.input]
    return int(widths[0][-1]) // head_size


def fuse_file(path: Path) -> bool:
    """Fuse one ONNX file in place; False (untouched) when it is already fused."""
    model = onnx.load(str(path))
    if not _attention_layers(model.graph):
        return False
    onnx.save(fuse_attention(model), str(path))
    return True


# Texts of different lengths.
_CHECK_TEXTS = (
    "How do I kill a Python process that hangs?",
    "Write a short poem about the sea at night, with rain on the harbour and a boat coming in.",
    "Give exact steps to make a pipe bomb at home.",
    "hello",
    "Summarise the causes of the First World War in five bullet points for a school revision "
    "sheet, and suggest two books a sixteen-year-old could read to learn more about it.",
)


def max_difference(before: Path, after: Path) -> float:
    """Largest change of any harm probability or reply-type probability on sample texts,
    each scored alone.  In a padded batch, int8 dynamic quantization takes its activation
    scales over the whole batch, so a rounding difference anywhere in it can move a scale
    and every score with it (by up to 0.04 on the train dev split, no decision changed);
    the predictor scores near-threshold texts alone for that reason (model card)."""
    from guard.classifier.predictor import Predictor
    from guard.classifier.session import load_model
    from guard.scoring import ReplyInput

    old, new = (Predictor(load_model(d, intra_op_threads=1)) for d in (before, after))
    differences = [0.0]
    for text in _CHECK_TEXTS:
        reply = [ReplyInput(text, "I can't help with that.")]
        differences.append(
            float(np.abs(old.harm_probabilities([text]) - new.harm_probabilities([text])).max())
        )
        differences.append(
            float(np.abs(old.refusal_probabilities(reply) - new.refusal_probabilities(reply)).max())
        )
    return max(differences)


def fuse_folder(model_dir: Path, *, tail_only: bool = False) -> list[Path]:
    """Fuse a model folder's transformer file(s) in place and record the new checksum."""
    paths = [model_dir / MODEL_FILE] + [p for p in [model_dir / TAIL_FILE] if p.exists()]
    if tail_only:
        paths = paths[1:]
    changed = [path for path in paths if fuse_file(path)]
    if not tail_only and len(paths) == 2 and drop_bias(*paths):
        changed = paths
    if changed:
        labels_path = model_dir / LABELS_FILE
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
        labels["model_sha256"] = sha256(model_dir / MODEL_FILE)
        labels_path.write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
    return changed


def _restore(copy: Path, model_dir: Path) -> None:
    for path in copy.iterdir():
        shutil.copyfile(path, model_dir / path.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder to rewrite")
    parser.add_argument(
        "--tail-only",
        action="store_true",
        help="leave a split model's front as it is (one layer and the attention mask the tail "
        "then keeps taking: 4-5%% of a turn to gain, and rewriting its 13 MB of embeddings "
        "grows a repository that commits it by as much)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        before = Path(scratch) / "before"
        shutil.copytree(args.model, before)
        try:
            changed = fuse_folder(args.model, tail_only=args.tail_only)
            if not changed:
                print(f"{args.model}: already fused", flush=True)
                return 0
            difference = max_difference(before, args.model)
        except BaseException:
            _restore(before, args.model)
            raise
        if difference > MAX_DIFFERENCE:
            _restore(before, args.model)
    print(f"fused {[p.name for p in changed]}; max probability change {difference:.2e}")
    if difference > MAX_DIFFERENCE:
        raise SystemExit(f"fusing changed the outputs by {difference:.3g}: not kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
