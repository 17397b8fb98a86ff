"""ONNX export and inference.

- `writer`: record a model as one graph (wave, reference) -> enhanced, metadata, checker;
- `fp16`: the float16 variant with float32 inputs and outputs;
- `parity`: the graph against PyTorch on real audio at several lengths and batch sizes;
- `build`: `mbsnet export` as a library call (checkpoint -> checked file, written atomically);
- `runtime`: onnxruntime sessions and `OnnxBackend`, without torch;
- `common`: `ExportError` and the default opset, without torch.

Nothing is imported here, so `mbsnet.export.runtime` loads without torch.
"""
