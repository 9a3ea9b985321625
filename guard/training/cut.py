"""Cutting the transformer's ONNX graph in two after a layer (front and tail).

:func:`split` cuts the fp32 export; :func:`resplit` joins two int8 halves and cuts them
again elsewhere.  The front outputs ``hidden`` (the cut layer's states) and
``attention_bias`` (the expanded attention mask the layers share); the tail takes those
and ``attention_mask`` and ends in both heads.  Once both halves are fused the bias is
dropped (:func:`guard.training.fastgraph.drop_bias`) and the tail takes the states and
the mask alone.  Used by :mod:`guard.training.early_exit`.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.utils import extract_model

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
_HEADS = ["harm", "refusal"]


def _produced(model: onnx.ModelProto) -> set[str]:
    return {out for node in model.graph.node for out in node.output}


def _layer_output(produced: set[str], layer: int) -> str:
    """The states after ``layer``, as the export named them (a token-pooling network calls
    its layers itself, so its names lack the encoder's path)."""
    names = [
        f"{prefix}/layer.{layer - 1}/output/LayerNorm/LayerNormalization_output_0"
        for prefix in ("/encoder/encoder", "")
    ]
    found = [name for name in names if name in produced]
    if not found:
        raise ValueError(f"the graph has no output of layer {layer}")
    return found[0]


def _rename_in(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in [*model.graph.input, *model.graph.output]:
        if value.name == old:
            value.name = new


def _rename(path: Path, old: str, new: str) -> None:
    model = onnx.load(str(path))
    _rename_in(model, old, new)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# The boolean attention mask the layers share, expanded to [batch, 1, seq, seq] once.
_BIAS = "/encoder/Expand_output_0"


def split(fp32: Path, layer: int, work: Path) -> tuple[Path, Path]:
    """fp32 front (inputs -> hidden, attention_bias) and tail (those, mask -> heads).

    A token-pooling network builds each layer's mask from ``attention_mask`` itself
    (:class:`guard.training.model.TokenPool`), so its halves hand over the states alone.
    """
    work.mkdir(parents=True, exist_ok=True)
    front, tail = work / "front.fp32.onnx", work / "tail.fp32.onnx"
    produced = _produced(onnx.load(str(fp32)))
    cut = _layer_output(produced, layer)
    bias = [_BIAS] if _BIAS in produced else []
    extract_model(str(fp32), str(front), INPUTS, [cut, *bias])
    extract_model(str(fp32), str(tail), [cut, *bias, "attention_mask"], _HEADS)
    for path in (front, tail):
        _rename(path, cut, "hidden")
        if bias:
            _rename(path, _BIAS, "attention_bias")
    return front, tail


def resplit(front: Path, tail: Path, layer: int, work: Path) -> tuple[Path, Path]:
    """Cut an int8 front and tail again after ``layer``, without the fp32 export.

    Dynamic quantization works node by node, so joining the two int8 graphs and cutting
    the result elsewhere computes exactly what the halves did (checked on the dev split
    after installing, like :func:`split`).
    """
    work.mkdir(parents=True, exist_ok=True)
    head, rest = onnx.load(str(front)), onnx.load(str(tail))
    for part in (head, rest):  # free the name for the new cut
        _rename_in(part, "hidden", "front_hidden")
    graph = onnx.helper.make_graph(
        [*head.graph.node, *rest.graph.node],
        "joined",
        list(head.graph.input),
        list(rest.graph.output),
        initializer=list(
            {i.name: i for i in [*head.graph.initializer, *rest.graph.initializer]}.values()
        ),
        # Recorded shapes carry inference past fused attention nodes (contrib ops).
        value_info=list(
            {v.name: v for v in [*head.graph.value_info, *rest.graph.value_info]}.values()
        ),
    )
    opsets: dict[str, int] = {}
    for part in (head, rest):  # a fused half also imports com.microsoft (fastgraph)
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    joined = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()],
        ir_version=head.ir_version,
    )
    whole = work / "joined.int8.onnx"
    onnx.save(joined, str(whole))
    new_front, new_tail = work / "front.int8.onnx", work / "tail.int8.onnx"
    cut = _layer_output(_produced(joined), layer)
    # Fused halves hand over the states alone (fastgraph.drop_bias); the mask is an input.
    bias = ["attention_bias"] if any(i.name == "attention_bias" for i in rest.graph.input) else []
    extract_model(str(whole), str(new_front), INPUTS, [cut, *bias])
    extract_model(str(whole), str(new_tail), [cut, *bias, "attention_mask"], _HEADS)
    for path in (new_front, new_tail):
        _rename(path, cut, "hidden")
    whole.unlink()
    return new_front, new_tail
