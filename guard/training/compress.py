"""A smaller student initialised from a shipped int8 model: fewer layers, a narrower FFN.

    python3 -m guard.training.train --data /work/shared/datasets --out S --work S_WORK \
        --init-from models/ --teacher models/ --thresholds-from models/ \
        --layers 3 --intermediate 768 --no-cascade

The shipped model's fp32 weights are not kept, but its int8 ONNX files hold every weight
with its scale, so :func:`dequantized_state` rebuilds the network (quantization error
aside) as a starting point.  :func:`student_from` keeps its first ``layers`` layers and,
in each, the ``intermediate`` feed-forward units that matter most on sample windows
(mean absolute activation times the norm of the unit's output weights), then training
distils the teacher into it.  The matrix products are most of the time a turn costs, and
the feed-forward block holds two thirds of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertModel

from guard.classifier.encoding import Encoder, Window
from guard.classifier.labels import MODEL_FILE
from guard.classifier.sieve import TAIL_FILE
from guard.training.model import UNPOOLED, GuardClassifier, Pooling, base_model_dir

_QUANTIZED = "_quantized"


def _weight_key(node_name: str) -> str:
    """'/encoder/encoder/layer.1/attention/self/query/MatMul_quant' -> its torch weight key.

    A token-pooling network's export names its layers from the classifier down
    ('/layer.1/...': its forward calls them itself), so the encoder's path is put back.
    """
    parts = node_name.strip("/").split("/")[:-1]
    if parts and parts[0].startswith("layer."):
        parts = ["encoder", "encoder", *parts]
    return ".".join(parts) + ".weight"


def dequantized_state(model_dir: Path) -> dict[str, torch.Tensor]:
    """The torch state dict of an int8 model folder (whole, or split into front and tail)."""
    state: dict[str, torch.Tensor] = {}
    paths = [model_dir / MODEL_FILE] + [p for p in [model_dir / TAIL_FILE] if p.exists()]
    for path in paths:
        graph = onnx.load(str(path)).graph
        arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        matmul_weights = {
            node.input[1]: _weight_key(node.name)
            for node in graph.node
            if node.op_type == "MatMulInteger" and node.input[1] in arrays
        }
        for name, array in arrays.items():
            if name.endswith(_QUANTIZED):
                stem = name[: -len(_QUANTIZED)]
                scale = arrays[stem + "_scale"].astype(np.float32)
                zero = arrays[stem + "_zero_point"].astype(np.float32)
                weight = (array.astype(np.float32) - zero) * scale
                if name in matmul_weights:  # ONNX MatMul holds W.T
                    state[matmul_weights[name]] = torch.from_numpy(weight.T.copy())
                else:
                    state[stem] = torch.from_numpy(weight)
            elif not name.startswith(("/", "onnx::")) and array.dtype == np.float32:
                state[name] = torch.from_numpy(array.copy())
    return state


def _config(layers: int, intermediate: int | None) -> BertConfig:
    config = BertConfig.from_pretrained(base_model_dir())
    config.num_hidden_layers = layers
    if intermediate is not None:
        config.intermediate_size = intermediate
    return config


def rebuilt(model_dir: Path, layers: int, pool: Pooling = UNPOOLED) -> GuardClassifier:
    """The int8 model's network in torch, at its full width (first ``layers`` layers)."""
    state = dequantized_state(model_dir)
    model = GuardClassifier(BertModel(_config(layers, None), add_pooling_layer=False), pool=pool)
    _load(model, state)
    return model


def _load(model: GuardClassifier, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    if missing:
        raise ValueError(f"the int8 model lacks weights for {missing[:5]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def unit_importance(
    model: GuardClassifier, encoder: Encoder, windows: Sequence[Window], batch_size: int = 32
) -> list[torch.Tensor]:
    """Per layer, each feed-forward unit's mean |activation| over real tokens times the norm
    of its output weights: what removing the unit would move the layer's output by."""
    layers = model.encoder.encoder.layer
    totals = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    mask_now: list[torch.Tensor] = []

    def hook(index: int):  # type: ignore[no-untyped-def]
        def record(_module: object, _inputs: object, output: torch.Tensor) -> None:
            mask = mask_now[0].unsqueeze(-1)
            totals[index] += (output.abs() * mask).sum(dim=(0, 1))

        return record

    handles = [layer.intermediate.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    model.eval()
    tokens = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                batch = encoder.batch(list(windows[start : start + batch_size]))
                mask = torch.from_numpy(batch.attention_mask).float()
                mask_now[:] = [mask]
                tokens += float(mask.sum())
                model(
                    torch.from_numpy(batch.input_ids),
                    torch.from_numpy(batch.attention_mask),
                    torch.from_numpy(batch.token_type_ids),
                )
    finally:
        for handle in handles:
            handle.remove()
    return [
        total / max(tokens, 1.0) * layer.output.dense.weight.norm(dim=0)
        for total, layer in zip(totals, layers, strict=True)
    ]


def student_from(
    model_dir: Path,
    layers: int,
    intermediate: int | None,
    encoder: Encoder,
    windows: Sequence[Window],
    pool: Pooling = UNPOOLED,
) -> GuardClassifier:
    """The first ``layers`` layers of the int8 model, each cut to its ``intermediate`` most
    important feed-forward units (all of them when None), and its heads; with ``pool``,
    the later layers run on merged token states (:class:`guard.training.model.TokenPool`)."""
    full = rebuilt(model_dir, layers, pool)
    width = full.encoder.config.intermediate_size
    if intermediate is None or intermediate >= width:
        return full
    importance = unit_importance(full, encoder, windows)
    student = GuardClassifier(
        BertModel(_config(layers, intermediate), add_pooling_layer=False), pool=pool
    )
    state = full.state_dict()
    for index, scores in enumerate(importance):
        keep = torch.sort(torch.topk(scores, intermediate).indices).values
        prefix = f"encoder.encoder.layer.{index}."
        state[prefix + "intermediate.dense.weight"] = state[prefix + "intermediate.dense.weight"][
            keep
        ]
        state[prefix + "intermediate.dense.bias"] = state[prefix + "intermediate.dense.bias"][keep]
        state[prefix + "output.dense.weight"] = state[prefix + "output.dense.weight"][:, keep]
    _load(student, state)
    return student
