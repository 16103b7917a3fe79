"""Estimated peak activation memory of an ONNX graph at batch 1, the figure an MCU tensor arena must hold.

Assumes the graph runs layer by layer and frees a tensor once its consumer is
done, so the peak is the largest (inputs + outputs) of any one layer.
Quantize/DequantizeLinear nodes are looked through, so a QDQ int8 graph is
measured on the same layers as its float32 source, with 1-byte activations;
Relu/Clip count as in place, since runtimes fuse them into the layer before.
An estimate for comparing formats, not a measurement (``peak_rss_kb`` is).
"""
from __future__ import annotations

from pathlib import Path

PASS_THROUGH_OPS = ("QuantizeLinear", "DequantizeLinear", "Relu", "Clip")


def _elements(value_info) -> int:
    n = 1
    for d in value_info.type.tensor_type.shape.dim:
        n *= d.dim_value if d.HasField("dim_value") else 1  # the symbolic batch axis counts as 1
    return n


def activation_peak_bytes(path: str | Path, bytes_per_element: int) -> int:
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load_model(str(path)))
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    alias: dict[str, str] = {}  # Q/DQ/Relu output → the tensor it re-encodes in place
    for node in graph.node:
        if node.op_type in PASS_THROUGH_OPS:
            alias[node.output[0]] = node.input[0]

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    sizes = {v.name: _elements(v) for v in [*graph.input, *graph.value_info, *graph.output]}
    peak = 0
    for node in graph.node:
        if node.op_type in PASS_THROUGH_OPS or node.op_type == "Constant":
            continue
        live = {source(i) for i in node.input if i} | set(node.output)
        peak = max(peak, sum(sizes.get(t, 0) for t in live if t not in constants))
    return peak * bytes_per_element
