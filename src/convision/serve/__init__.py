"""``convision serve``: a web service and page over a checkpoint or an exported ``.onnx``
(:mod:`convision.serve.app`); nothing is imported here, so ``python -m convision.serve model.onnx``
runs without PyTorch."""
