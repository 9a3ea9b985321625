"""The guard's classifier at run time: an ONNX model scored with onnxruntime and tokenizers.

``OnnxScorer.from_settings(settings.classifier, metrics)`` is the entry point; the
session is built in :mod:`guard.classifier.session`, windows in
:mod:`guard.classifier.encoding`, label map and thresholds in :mod:`guard.classifier.labels`.
"""

from guard.classifier.labels import Labels, load_labels
from guard.classifier.scorer import OnnxScorer

__all__ = ["Labels", "OnnxScorer", "load_labels"]
