"""ONNX export and int8 dynamic quantization of a trained :class:`GuardClassifier`."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic

from guard.training.model import GuardClassifier

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OUTPUT_NAMES = ["harm", "refusal"]


def export_fp32(model: GuardClassifier, path: Path, opset: int = 17) -> Path:
    """Export with dynamic batch and sequence axes; eval mode (no dropout)."""
    model.eval()
    sample = torch.ones((2, 16), dtype=torch.long)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes.update({name: {0: "batch"} for name in OUTPUT_NAMES})
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter on purpose: cut.py and fastgraph.py read the node names
        # and attention pattern it writes.  Its deprecation notices (its own, and those of
        # the internals it still calls) and the tracer's notes on Python values in
        # transformers' code (constant in an encoder-only export) are known, and would stop
        # a test run that treats warnings as errors.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (sample, sample, torch.zeros_like(sample)),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized at run time)."""
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    return int8_path
