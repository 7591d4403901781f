"""The linter: each rule on a small hand-made graph that triggers it and one that does not, and the ResNet-18 lesson
on the real A100 plans (naive QAT flagged, residual-quantised QAT not)."""
from __future__ import annotations

import json

import pytest

from workbench.engine import EngineGraph, EngineLayer
from workbench.lint import Finding, findings_table, lint, lint_plan
from workbench.trtplan import load_plan_dir


def _layer(name, type_, precision, inputs, outputs, ms=0.1, nodes=None, inserted=False, in_shapes=(), out_shapes=()):
    return EngineLayer(name=name, type=type_, precision=precision, onnx_nodes=list(nodes if nodes is not None
                                                                                  else [name]),
                       inputs=list(inputs), outputs=list(outputs), input_shapes=[list(s) for s in in_shapes],
                       output_shapes=[list(s) for s in out_shapes], inserted=inserted, latency_ms=ms)


def _graph(*layers, backend="tensorrt-plan", device="gpu") -> EngineGraph:
    return EngineGraph(backend=backend, layers=list(layers),
                       source_nodes=[n for layer in layers for n in layer.onnx_nodes], device=device)


def _rules(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


def _by_rule(findings, rule) -> Finding:
    return next(f for f in findings if f.rule == rule)


# ---- unfused Q/DQ -------------------------------------------------------------------------------
def test_standalone_quantize_between_layers_is_flagged_with_its_time():
    graph = _graph(_layer("QuantizeLinear_1", "Reformat", "fp32", ["input"], ["q1"], ms=0.02),
                   _layer("Conv_2 + Relu_3", "CaskConvolution", "int8", ["q1"], ["c2"], nodes=["Conv_2", "Relu_3"]),
                   _layer("QuantizeLinear_4", "Reformat", "fp16", ["c2"], ["q4"], ms=0.03),
                   _layer("Conv_5", "CaskConvolution", "int8", ["q4"], ["out"]))
    finding = _by_rule(lint(graph, tensor_dtypes={"c2": "fp16", "q4": "int8", "q1": "int8"}), "unfused-qdq")
    assert [l.name for l in finding.layers] == ["QuantizeLinear_4"]  # the network-input Quantize is needed
    assert finding.ms == pytest.approx(0.03) and finding.onnx_nodes == ["QuantizeLinear_4"]
    assert "fuse" in finding.fix


def test_quantize_at_the_input_and_after_an_explicit_dequantize_is_not_flagged():
    graph = _graph(_layer("QuantizeLinear_1", "Reformat", "fp32", ["input"], ["q1"]),
                   _layer("Conv_2", "CaskConvolution", "int8", ["q1"], ["c2"]),
                   _layer("DequantizeLinear_3", "Reformat", "int8", ["c2"], ["d3"]),
                   _layer("GlobalAveragePool_4", "CaskPooling", "fp32", ["d3"], ["p4"]),
                   _layer("QuantizeLinear_5", "Reformat", "fp32", ["p4"], ["q5"]),
                   _layer("Gemm_6", "CaskConvolution", "int8", ["q5"], ["out"]))
    assert "unfused-qdq" not in _rules(lint(graph, tensor_dtypes={"d3": "fp32", "p4": "fp32", "q5": "int8"}))


# ---- precision transitions ------------------------------------------------------------------------
def test_inserted_reformat_changing_precision_is_flagged():
    graph = _graph(_layer("Conv_1", "CaskConvolution", "fp32", ["input"], ["a"]),
                   _layer("Reformatting CopyNode for Input Tensor 0 to Conv_2", "Reformat", "fp32", ["a"], ["b"],
                          nodes=[], inserted=True, ms=0.04),
                   _layer("Conv_2", "CaskConvolution", "fp16", ["b"], ["out"]))
    finding = _by_rule(lint(graph, tensor_dtypes={"a": "fp32", "b": "fp16"}), "precision-transition")
    assert finding.ms == pytest.approx(0.04) and len(finding.layers) == 1


def test_layout_only_reformat_is_not_a_precision_transition():
    graph = _graph(_layer("Conv_1", "CaskConvolution", "fp16", ["input"], ["a"]),
                   _layer("Reformatting CopyNode for Input Tensor 0 to Conv_2", "Reformat", "fp16", ["a"], ["b"],
                          nodes=[], inserted=True),
                   _layer("Conv_2", "CaskConvolution", "fp16", ["b"], ["out"]))
    assert "precision-transition" not in _rules(lint(graph, tensor_dtypes={"a": "fp16", "b": "fp16"}))


# ---- float Add / pooling between INT8 layers ------------------------------------------------------
def _residual_block(residual_dtype: str):
    """Conv -> Conv+Add (residual from the first Conv's input) -> Quantize -> Conv, as in naive QAT ResNets."""
    layers = [_layer("Conv_1", "CaskConvolution", "int8", ["x"], ["c1"]),
              _layer("Conv_2 + Add_3 + Relu_4", "CaskConvolution", "mixed", ["c1", "x"], ["a3"],
                     nodes=["Conv_2", "Add_3", "Relu_4"]),
              _layer("QuantizeLinear_5", "Reformat", "fp16", ["a3"], ["q5"], ms=0.05),
              _layer("Conv_6", "CaskConvolution", "int8", ["q5"], ["out"])]
    dtypes = {"x": "int8", "c1": "int8", "a3": residual_dtype, "q5": "int8"}
    return _graph(*layers), dtypes


def test_float_residual_add_between_int8_layers_is_flagged_with_the_requantise_time():
    graph, dtypes = _residual_block("fp16")
    finding = _by_rule(lint(graph, tensor_dtypes=dtypes), "float-between-int8")
    assert [l.name for l in finding.layers] == ["Conv_2 + Add_3 + Relu_4"]
    assert "Add_3" in finding.onnx_nodes and finding.ms == pytest.approx(0.05)


def test_int8_residual_add_is_not_flagged():
    layers = [_layer("Conv_1", "CaskConvolution", "int8", ["x"], ["c1"]),
              _layer("Conv_2 + Add_3", "CaskConvolution", "int8", ["c1", "x"], ["a3"], nodes=["Conv_2", "Add_3"]),
              _layer("Conv_6", "CaskConvolution", "int8", ["a3"], ["out"])]
    assert "float-between-int8" not in _rules(lint(_graph(*layers), tensor_dtypes={"x": "int8", "c1": "int8",
                                                                                   "a3": "int8"}))


def test_float_pooling_between_int8_layers_is_flagged():
    layers = [_layer("Conv_1", "CaskConvolution", "int8", ["x"], ["c1"]),
              _layer("MaxPool_2", "TiledPooling", "fp32", ["c1"], ["p2"]),
              _layer("QuantizeLinear_3", "Reformat", "fp32", ["p2"], ["q3"], ms=0.07),
              _layer("Conv_4", "CaskConvolution", "int8", ["q3"], ["out"])]
    dtypes = {"c1": "fp32", "p2": "fp32", "q3": "int8"}
    finding = _by_rule(lint(_graph(*layers), tensor_dtypes=dtypes), "float-between-int8")
    assert [l.name for l in finding.layers] == ["MaxPool_2"] and finding.ms == pytest.approx(0.07)


# ---- channel alignment ----------------------------------------------------------------------------
def test_misaligned_int8_channels_are_flagged_with_the_padded_share():
    conv = _layer("Conv_1", "CaskConvolution", "int8", ["x"], ["y"], ms=1.0, in_shapes=[(8, 48, 14, 14)],
                  out_shapes=[(8, 64, 14, 14)])
    finding = _by_rule(lint(_graph(conv)), "channel-alignment")
    assert finding.ms == pytest.approx(1.0 - 48 / 64)  # 48 channels padded to 64 on a GPU (multiples of 32)


def test_aligned_channels_and_fp32_layers_are_not_flagged():
    aligned = _layer("Conv_1", "CaskConvolution", "int8", ["x"], ["y"], in_shapes=[(8, 64, 14, 14)],
                     out_shapes=[(8, 128, 14, 14)])
    fp32 = _layer("Conv_2", "CaskConvolution", "fp32", ["y"], ["z"], in_shapes=[(8, 50, 14, 14)],
                  out_shapes=[(8, 50, 14, 14)])
    assert "channel-alignment" not in _rules(lint(_graph(aligned, fp32)))


def test_cpu_engines_use_their_own_alignment_and_read_weight_shapes():
    # ONNX Runtime lists the weight shape ([out, in, kh, kw]) among the inputs; CPU kernels block by 16
    conv = _layer("/conv/Conv_token_1", "QLinearConv", "int8", ["x"], ["y"], nodes=["/conv/Conv"],
                  in_shapes=[("batch", 14, 14, 48), (), (), (48, 48, 3, 3)])
    assert "channel-alignment" not in _rules(lint(_graph(conv, backend="onnxruntime", device="cpu")))
    assert "channel-alignment" in _rules(lint(_graph(conv, backend="tensorrt-plan")))


# ---- time shape -----------------------------------------------------------------------------------
def test_one_dominant_layer_is_flagged():
    layers = [_layer(f"Conv_{i}", "Conv", "fp32", [f"t{i}"], [f"t{i + 1}"], ms=ms)
              for i, ms in enumerate((0.1, 2.0, 0.1, 0.1))]
    finding = _by_rule(lint(_graph(*layers)), "dominant-layer")
    assert finding.layers[0].name == "Conv_1" and finding.ms == pytest.approx(2.0)


def test_balanced_layers_have_no_dominant_one():
    layers = [_layer(f"Conv_{i}", "Conv", "fp32", [f"t{i}"], [f"t{i + 1}"], ms=0.5) for i in range(5)]
    assert "dominant-layer" not in _rules(lint(_graph(*layers)))


def test_many_tiny_layers_adding_up_are_flagged():
    big = [_layer(f"Conv_{i}", "Conv", "fp32", [f"a{i}"], [f"a{i + 1}"], ms=1.0) for i in range(4)]
    tiny = [_layer(f"Mul_{i}", "Mul", "fp32", [f"b{i}"], [f"b{i + 1}"], ms=0.03) for i in range(30)]
    finding = _by_rule(lint(_graph(*big, *tiny)), "tiny-layers")
    assert len(finding.layers) == 30 and finding.ms == pytest.approx(0.9)


def test_a_few_tiny_layers_are_not_flagged():
    big = [_layer(f"Conv_{i}", "Conv", "fp32", [f"a{i}"], [f"a{i + 1}"], ms=1.0) for i in range(4)]
    tiny = [_layer(f"Mul_{i}", "Mul", "fp32", [f"b{i}"], [f"b{i + 1}"], ms=0.03) for i in range(5)]
    assert "tiny-layers" not in _rules(lint(_graph(*big, *tiny)))


# ---- acceleration -----------------------------------------------------------------------------------
def test_a_precision_the_engine_does_not_accelerate_is_flagged():
    graph = _graph(_layer("Conv_1", "Conv", "fp32", ["x"], ["y"], ms=0.4), backend="onnxruntime", device="cpu")
    finding = _by_rule(lint(graph, precision="fp16", accelerated=False), "not-accelerated")
    assert "FP16" in finding.title and finding.ms == pytest.approx(0.4)
    assert "not-accelerated" not in _rules(lint(graph, precision="fp16", accelerated=True))
    assert "not-accelerated" not in _rules(lint(graph, precision="fp32", accelerated=False))


# ---- the real A100 ResNet-18 plans ------------------------------------------------------------------
def test_naive_qat_plan_flags_residual_adds_and_standalone_quantize_layers(trt_plans_dir):
    findings = lint_plan(load_plan_dir(trt_plans_dir / "a100-resnet18-qat"))
    adds = _by_rule(findings, "float-between-int8")
    add_layers = [l for l in adds.layers if any(n.startswith("Add_") for n in l.onnx_nodes)]
    assert len(add_layers) == 8 and adds.ms > 0.1
    quantize = _by_rule(findings, "unfused-qdq")
    assert len(quantize.layers) == 9 and all(l.name.startswith("QuantizeLinear_") for l in quantize.layers)
    assert quantize.ms == pytest.approx(sum(l.latency_ms for l in quantize.layers)) and quantize.ms > 0.1
    json.dumps([f.to_json() for f in findings])  # serialisable
    assert findings_table(findings)[0]["ms at stake"] == round(findings[0].ms, 4)


def test_residual_quantised_qat_plan_flags_neither(trt_plans_dir):
    rules = _rules(lint_plan(load_plan_dir(trt_plans_dir / "a100-resnet18-qat-residual")))
    assert "float-between-int8" not in rules and "unfused-qdq" not in rules
