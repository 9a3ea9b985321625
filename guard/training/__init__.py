"""Training, export and evaluation of the guard's classifier (needs the ``[train]`` extra).

Nothing here is imported at run time: the guard itself only loads the exported ONNX
model with onnxruntime and tokenizers.
"""
