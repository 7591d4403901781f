"""Split an INT8 Q/DQ graph's error into its two sources: one graph with only the weights quantised and one with only
the activations quantised (ONNX -> ONNX), so drift per layer can be attributed to weights or to activations.

Both start from the same INT8 graph the engines run (any calibration method, Q/DQ style, GPTQ or bias correction):
- weights only: the FP32 graph calibration ran on (`calibrate.prepare`), each quantised weight and bias replaced by
  the values its DequantizeLinear gives in the INT8 graph; no activation is quantised.
- activations only: the INT8 graph, each weight or bias DequantizeLinear replaced by the FP32 graph's float constant;
  every activation Q/DQ pair stays.
A constant input is matched by the node that reads it (same node name and input position in both graphs).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import PrecisionError
from ..graph import GraphIndex


def quantised_constants(int8: onnx.ModelProto) -> dict[tuple[str, int], np.ndarray]:
    """(node name, input index) -> dequantised value, for every node input fed by a DequantizeLinear of a constant
    (a quantised weight or bias) in `int8`."""
    initializers = {init.name: init for init in int8.graph.initializer}
    index = GraphIndex(int8)
    found = {}
    for node in int8.graph.node:
        for position, name in enumerate(node.input):
            producer = index.producer(name) if name else None
            if producer is None or producer.op_type != "DequantizeLinear" or producer.input[0] not in initializers:
                continue
            found[(node.name, position)] = _dequantise(producer, initializers)
    return found


def weights_only(float_model: onnx.ModelProto, int8: onnx.ModelProto) -> onnx.ModelProto:
    """`float_model` with every weight and bias that `int8` quantises replaced by its dequantised INT8 value."""
    constants = quantised_constants(int8)
    model = onnx.ModelProto()
    model.CopyFrom(float_model)
    initializers = {init.name for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node if node.name}
    replaced = 0
    for (node_name, position), value in constants.items():
        node = nodes.get(node_name)
        if node is None or position >= len(node.input) or node.input[position] not in initializers:
            continue
        name = f"{node.input[position]}__int8_weights"  # a new name: the float constant may feed other nodes
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        node.input[position] = name
        replaced += 1
    if constants and not replaced:
        raise PrecisionError("The INT8 graph's quantised weights match no node of the FP32 graph (node names "
                             "differ): the weights-only graph cannot be built for this plan.")
    _drop_unused_initializers(model)
    return model


def activations_only(float_model: onnx.ModelProto, int8: onnx.ModelProto) -> onnx.ModelProto:
    """`int8` with every quantised weight and bias replaced by `float_model`'s float constant at the same place."""
    if not any(node.op_type == "QuantizeLinear" for node in int8.graph.node):
        raise PrecisionError("The plan's graph has no QuantizeLinear nodes (dynamic INT8 or nothing quantised): the "
                             "weight/activation split needs a calibrated Q/DQ plan (minmax, entropy or percentile).")
    float_constants = {init.name: init for init in float_model.graph.initializer}
    float_nodes = {node.name: node for node in float_model.graph.node if node.name}
    model = onnx.ModelProto()
    model.CopyFrom(int8)
    places = set(quantised_constants(int8))
    added = set()
    missing = []
    for node in model.graph.node:
        for position in range(len(node.input)):
            if (node.name, position) not in places:
                continue
            twin = float_nodes.get(node.name)
            source = twin.input[position] if twin is not None and position < len(twin.input) else None
            if source not in float_constants:
                missing.append(f"{node.name}:{position}")
                continue
            name = f"{source}__fp32"  # a new name: a bias DequantizeLinear may write the float constant's name
            if name not in added:
                constant = onnx.TensorProto()
                constant.CopyFrom(float_constants[source])
                constant.name = name
                model.graph.initializer.append(constant)
                added.add(name)
            node.input[position] = name
    if missing:
        raise PrecisionError(f"No FP32 constant for {len(missing)} quantised weight(s) of the INT8 graph (e.g. "
                             f"{missing[0]}): the activations-only graph cannot be built for this plan.")
    _drop_dead_nodes(model)
    _drop_unused_initializers(model)
    return model


def _dequantise(node: onnx.NodeProto, initializers: dict[str, onnx.TensorProto]) -> np.ndarray:
    """What DequantizeLinear computes from constant inputs: (x - zero_point) * scale, per axis where scale is 1-D."""
    x = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
    zero = (numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
            if len(node.input) > 2 and node.input[2] in initializers else np.zeros_like(scale))
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * x.ndim
        shape[axis % x.ndim] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (x - zero) * scale


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is read (the replaced DequantizeLinear nodes), until none is left."""
    while True:
        read = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
        dead = [node for node in model.graph.node if not any(out in read for out in node.output)]
        if not dead:
            return
        for node in dead:
            model.graph.node.remove(node)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    read = {name for node in model.graph.node for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)
