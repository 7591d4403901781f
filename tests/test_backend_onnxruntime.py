"""ONNX Runtime CPU backend: build, run, input checks, layer provenance at every optimisation level, profiling."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_tiny_cnn
from onnx import helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.transformers.float16 import convert_float_to_float16

from workbench.backends import get_backend
from workbench.backends.onnxruntime import OnnxRuntimeOptions
from workbench.engine import Backend, Engine
from workbench.backends.onnxruntime import OnnxRuntimeBackend
from workbench.backends.provenance import trace
from workbench.models.onnx_source import with_unique_node_names
from workbench.errors import BackendError, InputSpecError
from workbench.models.spec import Model

LEVELS = ("disable", "basic", "extended", "all")
VARIANTS = ("fp32", "fp16", "int8-onnxruntime", "int8-tensorrt")


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray) -> None:
        self._feeds = iter([{name: data[i:i + 1]} for i in range(len(data))])

    def get_next(self):
        return next(self._feeds, None)


def _variants(proto: onnx.ModelProto, data: np.ndarray, tmp: Path) -> dict[str, onnx.ModelProto]:
    """FP32, FP16 and both INT8 Q/DQ styles made with ONNX Runtime's own tools (independent of workbench.precision)."""
    name = proto.graph.input[0].name
    src = tmp / "fp32.onnx"
    onnx.save(proto, src)
    out = {"fp32": proto, "fp16": convert_float_to_float16(proto, keep_io_types=True)}
    styles = {
        "int8-onnxruntime": dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8),
        "int8-tensorrt": dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                              extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}),
    }
    for label, kwargs in styles.items():
        dst = tmp / f"{label}.onnx"
        quantize_static(str(src), str(dst), _Batches(name, data), quant_format=QuantFormat.QDQ, per_channel=True,
                        **kwargs)
        out[label] = onnx.load(dst)
    return out


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return get_backend("onnxruntime")


@pytest.fixture(scope="module")
def tiny_data() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((8, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_variants(tmp_path_factory, tiny_data) -> dict[str, onnx.ModelProto]:
    return _variants(make_tiny_cnn(), tiny_data, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def resnet_data() -> np.ndarray:
    return np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def resnet18(resnet_data) -> onnx.ModelProto:
    """torchvision resnet18 (random weights, BatchNorm kept) exported at 64x64 to stay fast."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from workbench.models import load_model

    torch.manual_seed(0)
    module = torchvision.models.resnet18(weights=None).eval()
    return load_model(module, name="resnet18", example_input=torch.from_numpy(resnet_data[:1])).proto


@pytest.fixture(scope="module")
def resnet_variants(tmp_path_factory, resnet18, resnet_data) -> dict[str, onnx.ModelProto]:
    return _variants(resnet18, resnet_data, tmp_path_factory.mktemp("resnet"))


def _assert_complete(graph) -> None:
    counts = Counter(node for layer in graph.layers for node in layer.onnx_nodes)
    assert sorted(counts) == sorted(graph.source_nodes), "every original node is covered, and nothing else"
    assert [n for n, c in counts.items() if c != 1] == [], "each original node belongs to exactly one layer"
    assert graph.unmapped_nodes() == []


def _assert_topological(engine) -> None:
    graph = engine.optimized_model().graph
    available = {v.name for v in graph.input} | {init.name for init in graph.initializer} | {""}
    for layer in engine.layers().layers:
        assert set(layer.inputs) <= available, f"{layer.name} runs before its inputs are produced"
        available |= set(layer.outputs)


# ---- backend ---------------------------------------------------------------------------------------
def test_backend_protocol_version_and_precisions(backend):
    import onnxruntime

    assert isinstance(backend, Backend) and backend.name == "onnxruntime"
    assert backend.version() == onnxruntime.__version__
    assert backend.accelerated("fp32") is True
    assert backend.accelerated("fp16") is False and backend.accelerated("bf16") is False
    assert isinstance(backend.accelerated("int8", "onnxruntime"), bool)
    # Q/DQ placed for TensorRT does not fuse into ONNX Runtime's integer kernels (2-5x slower than FP32)
    assert backend.accelerated("int8", "tensorrt") is False


def test_build_run_matches_across_levels(backend, tiny_variants, tiny_data):
    outputs = {}
    for level in ("disable", "all"):
        engine = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level=level, threads=1))
        assert isinstance(engine, Engine)
        assert engine.session.get_session_options().intra_op_num_threads == 1
        (probs,) = engine.run({"input": tiny_data})
        assert probs.shape == (8, 4)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        outputs[level] = probs
    np.testing.assert_allclose(outputs["all"], outputs["disable"], rtol=1e-4, atol=1e-5)


def test_optimized_model_is_readable_and_fused(backend, tiny_variants):
    engine = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="all"))
    ops = {node.op_type for node in engine.optimized_model().graph.node}
    assert "BatchNormalization" not in ops, "BN is folded into the conv at 'all'"
    assert len(engine.optimized_model().graph.node) < len(tiny_variants["fp32"].graph.node)
    assert not any("inspection only" in note for note in engine.notes)  # a developer caveat, not a reader note


def test_fp16_note(backend, tiny_variants):
    fp16 = backend.build(tiny_variants["fp16"], OnnxRuntimeOptions(optimization_level="disable"))
    fp32 = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="disable"))
    assert any(note.startswith("fp16:") and "not accelerated" in note for note in fp16.notes)
    assert not any(note.startswith("fp16:") for note in fp32.notes)


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("feeds, fragment", [
    ({"image": np.zeros((2, 1, 8, 8), np.float32)}, "Unknown input 'image'"),
    ({}, "Missing input 'input'"),
    ({"input": np.zeros((2, 1, 8, 8), np.float64)}, "expects float32"),
    ({"input": np.zeros((2, 3, 8, 8), np.float32)}, "expects shape ['batch', 1, 8, 8]"),
    ({"input": np.zeros((1, 8, 8), np.float32)}, "got float32[1, 8, 8]"),
    ({"input": [[0.0]]}, "got list"),
])
def test_wrong_input_raises_input_spec_error(backend, tiny_variants, tiny_data, feeds, fragment):
    engine = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="basic"))
    with pytest.raises(InputSpecError) as info:
        engine.run(feeds)
    assert fragment in str(info.value)
    with pytest.raises(InputSpecError):
        engine.profile(feeds, runs=1, progress=False)


def test_corrupt_model_raises_backend_error(backend, tiny_variants):
    broken = onnx.ModelProto()
    broken.CopyFrom(tiny_variants["fp32"])
    broken.graph.node[3].op_type = "NoSuchOp"
    with pytest.raises(BackendError, match="NoSuchOp"):
        backend.build(broken)
    missing_weight = onnx.ModelProto()
    missing_weight.CopyFrom(tiny_variants["fp32"])
    missing_weight.graph.node[0].input[1] = "not_a_tensor"
    with pytest.raises(BackendError, match="ONNX Runtime could not build"):
        backend.build(missing_weight)
    with pytest.raises(BackendError, match="needs a workbench Model"):
        backend.build(b"\x08\x07garbage")
    with pytest.raises(BackendError, match="optimization level"):
        backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="max"))


# ---- provenance ------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", LEVELS)
def test_tiny_cnn_provenance_complete(backend, tiny_variants, variant, level):
    engine = backend.build(tiny_variants[variant], OnnxRuntimeOptions(optimization_level=level))
    graph = engine.layers()
    assert graph.source_nodes == [node.name for node in tiny_variants[variant].graph.node]
    assert [layer.name for layer in graph.layers] == [node.name for node in engine.optimized_model().graph.node]
    _assert_complete(graph)
    _assert_topological(engine)
    for layer in graph.layers:
        assert layer.inserted == (not layer.onnx_nodes)
        assert layer.precision in {"fp32", "fp16", "int8"}
    if variant.startswith("int8"):
        assert any(layer.precision == "int8" for layer in graph.layers)
    if variant == "fp32":
        assert {layer.precision for layer in graph.layers} == {"fp32"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("level", LEVELS)
def test_resnet18_provenance_complete(backend, resnet_variants, variant, level):
    engine = backend.build(resnet_variants[variant], OnnxRuntimeOptions(optimization_level=level))
    graph = engine.layers()
    _assert_complete(graph)
    _assert_topological(engine)
    if variant == "fp32" and level != "disable":
        assert len(graph.layers) < len(graph.source_nodes), "fusion leaves fewer layers than ONNX nodes"


@pytest.mark.parametrize("model_fixture", ["tiny_variants",
                                           pytest.param("resnet_variants", marks=pytest.mark.slow)])
def test_conv_bn_fusion_shows_at_all(backend, request, model_fixture):
    proto = request.getfixturevalue(model_fixture)["fp32"]
    ops = {node.name: node.op_type for node in proto.graph.node}
    producer = {out: node for node in proto.graph.node for out in node.output}
    conv_bn = {(producer[node.input[0]].name, node.name) for node in proto.graph.node
               if node.op_type == "BatchNormalization" and producer[node.input[0]].op_type == "Conv"}
    assert conv_bn, "the test model has Conv -> BatchNormalization pairs"
    graph = backend.build(proto, OnnxRuntimeOptions(optimization_level="all")).layers()
    for conv, bn in conv_bn:
        layer = graph.layer_of(conv)
        assert bn in layer.onnx_nodes, f"{bn} is fused with {conv}"
        assert not layer.inserted and ops[conv] == "Conv"
    fused = [layer for layer in graph.layers if len(layer.onnx_nodes) >= 3]
    assert fused, "at 'all' some layer covers conv + BN + activation"


def test_layout_level_marks_reorders_as_inserted(backend, tiny_variants):
    graph = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="layout")).layers()
    reorders = [layer for layer in graph.layers if layer.type.endswith("ReorderOutput")]
    assert reorders and all(layer.inserted and not layer.onnx_nodes for layer in reorders)
    convs = [layer for layer in graph.layers if layer.type == "com.microsoft.nchwc.Conv"]
    assert convs and all(not layer.inserted for layer in convs)
    _assert_complete(graph)


def test_int8_onnxruntime_style_fuses_qdq_into_qlinear_conv(backend, tiny_variants):
    graph = backend.build(tiny_variants["int8-onnxruntime"], OnnxRuntimeOptions(optimization_level="extended")).layers()
    conv = graph.layer_of("conv1")
    assert conv.type == "QLinearConv" and conv.precision == "int8"
    kinds = {name.rsplit("_", 1)[-1] for name in conv.onnx_nodes}
    assert {"conv1", "DequantizeLinear", "QuantizeLinear"} <= kinds, conv.onnx_nodes


def test_project_precision_transforms_keep_provenance_complete(backend, tiny_variants, tiny_data):
    from workbench.calibration import CalibrationSet
    from workbench.precision import PrecisionPlan, apply_plan

    model = Model.from_proto(tiny_variants["fp32"], name="tiny-cnn", source="tests")
    calibration = CalibrationSet.from_arrays("tiny", tiny_data, input_name="input")
    plans = [PrecisionPlan("fp16"), PrecisionPlan("int8", qdq_style="onnxruntime"),
             PrecisionPlan("int8", qdq_style="tensorrt")]
    for plan in plans:
        baked = apply_plan(model, plan, calibration, progress=False).proto
        for level in LEVELS:
            _assert_complete(backend.build(baked, OnnxRuntimeOptions(optimization_level=level)).layers())


def test_unnamed_folded_and_eliminated_nodes_are_attributed():
    proto = make_tiny_cnn()
    for node in proto.graph.node:
        node.name = ""
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.full(4, 2.0, np.float32), "two"))
    # Constant-folded (both inputs are initializers) and eliminated (Identity) nodes must still land in one layer.
    proto.graph.node.insert(0, helper.make_node("Mul", ["fc_b", "two"], ["fc_b2"], name="fold_me"))
    gemm = next(node for node in proto.graph.node if node.op_type == "Gemm")
    gemm.input[2] = "fc_b2"
    gemm.output[0] = "logits0"
    proto.graph.node.insert(list(proto.graph.node).index(gemm) + 1,
                            helper.make_node("Identity", ["logits0"], ["logits"], name="drop_me"))
    engine = OnnxRuntimeBackend().build(proto, OnnxRuntimeOptions(optimization_level="all"))
    graph = engine.layers()
    assert all(graph.source_nodes) and len(set(graph.source_nodes)) == len(graph.source_nodes)
    _assert_complete(graph)
    layer_names = {layer.name for layer in graph.layers}
    assert "fold_me" not in layer_names and "drop_me" not in layer_names, "ORT folded / eliminated them"
    assert "fold_me" in next(layer for layer in graph.layers if layer.type == "Gemm").onnx_nodes
    assert "drop_me" in next(layer for layer in graph.layers if layer.type == "Softmax").onnx_nodes


def test_trace_on_hand_written_fusion():
    """An optimised node covers the original nodes between its boundary tensors; untouched nodes cover themselves."""
    original = with_unique_node_names(make_tiny_cnn()).graph
    fused = helper.make_graph(
        [helper.make_node("FusedConv", ["input", "w", "b"], ["r1"], name="f1", domain="com.microsoft"),
         helper.make_node("Conv", ["r1", "w2", "b2"], ["c2x"], name="conv2"),
         helper.make_node("Identity", ["c2x"], ["n2"], name="copy"),
         helper.make_node("Add", ["n2", "r1"], ["s"], name="add"),
         helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
         helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
         helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
         helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
         helper.make_node("Softmax", ["logits"], ["probs"], name="softmax")],
        "fused", list(original.input), list(original.output))
    covers = dict(zip([n.name for n in fused.node], trace(original, fused)))
    assert covers["f1"] == ["conv1", "bn1", "relu1"]
    # conv2 writes a renamed tensor that an inserted Identity copies to "n2": conv2 covers conv2 + bn2.
    assert covers["conv2"] == ["conv2", "bn2"]
    assert covers["copy"] == []
    assert covers["add"] == ["add"]
    assert covers["softmax"] == ["softmax"]


# ---- profiling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8-onnxruntime"])
@pytest.mark.parametrize("level", ["disable", "all"])
def test_profile_names_are_layer_names(backend, tiny_variants, tiny_data, variant, level):
    engine = backend.build(tiny_variants[variant], OnnxRuntimeOptions(optimization_level=level))
    timings = engine.profile({"input": tiny_data}, runs=3, warmup=1, progress=False)
    layer_names = {layer.name for layer in engine.layers().layers}
    assert timings and {t.name for t in timings} <= layer_names
    assert all(t.latency_ms >= 0 and t.count == 3 for t in timings)
    computing = {layer.name for layer in engine.layers().layers if not layer.inserted}
    assert computing & {t.name for t in timings}


def test_profile_leaves_no_files(backend, tiny_variants, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = backend.build(tiny_variants["fp32"], OnnxRuntimeOptions(optimization_level="all"))
    engine.profile({"input": tiny_data}, runs=2, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("level", ["disable", "all"])
def test_profile_sum_is_close_to_end_to_end(backend, resnet_variants, resnet_data, level):
    engine = backend.build(resnet_variants["fp32"], OnnxRuntimeOptions(optimization_level=level))
    feeds = {engine.input_specs[0].name: resnet_data}
    runs = 10
    timings = engine.profile(feeds, runs=runs, progress=False)
    assert {t.name for t in timings} <= {layer.name for layer in engine.layers().layers}
    engine.run(feeds)
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        engine.run(feeds)
        walls.append((time.perf_counter() - start) * 1000)
    ratio = sum(t.latency_ms for t in timings) / float(np.median(walls))
    # a units slip (µs vs ms) would be off by 1000x; the band is wide because a busy machine skews either side
    assert 0.05 <= ratio <= 20, f"per-layer sum / end-to-end = {ratio:.2f}"


def test_fp32_node_after_int8_keeps_its_float_weights():
    """A float Conv fed by a DequantizeLinear (a node kept in FP32 next to INT8 ones) runs with its float weights:
    ONNX Runtime's WeightBiasQuantization would quantise them per tensor (off in the workbench's engines)."""
    rng = np.random.default_rng(0)
    # output channels of very different scales: per-tensor INT8 rounds the small channel's weights to zero
    weights = rng.standard_normal((2, 3, 3, 3)).astype(np.float32) * np.array([1e-2, 1.0], np.float32)[:, None, None, None]
    scale = helper.make_tensor("scale", onnx.TensorProto.FLOAT, [], [1 / 64])
    zero = helper.make_tensor("zero", onnx.TensorProto.UINT8, [], [128])
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"], name="q"),
         helper.make_node("DequantizeLinear", ["xq", "scale", "zero"], ["xd"], name="dq"),
         helper.make_node("Conv", ["xd", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("QuantizeLinear", ["c", "out_scale", "zero"], ["cq"], name="q_out"),
         helper.make_node("DequantizeLinear", ["cq", "out_scale", "zero"], ["y"], name="dq_out")],
        "kept", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 8, 8])],
        initializer=[scale, zero, helper.make_tensor("out_scale", onnx.TensorProto.FLOAT, [], [1e-4]),
                     onnx.numpy_helper.from_array(weights, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    engine = OnnxRuntimeBackend().build(Model.from_proto(proto, "kept", "test"))
    got = engine.run({"x": x})[0]
    unoptimised = OnnxRuntimeBackend().build(Model.from_proto(proto, "kept", "test"),
                                             OnnxRuntimeOptions(optimization_level="disable"))
    expected = unoptimised.run({"x": x})[0]  # DQ then a float Conv, nothing rewritten
    assert np.abs(expected[0, 0]).max() > 10 * 1e-4  # the small channel is resolved by the output Q/DQ
    np.testing.assert_allclose(got, expected, rtol=0, atol=1.01e-4)  # at most one output step apart
