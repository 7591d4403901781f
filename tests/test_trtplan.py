"""TensorRT plan import on real trtexec/inspector output (the bundled A100 plans in workbench/data/trt-plans) and hand-made edge cases."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.errors import PlanImportError
from workbench.trtplan import TrtPlan, load_plan, load_plan_dir, split_layer_name
from workbench.trtplan.parse import dtype_of, node_op_type, onnx_layers_from_metadata, parse_graph
from workbench.trtplan.report import (compare_plans, fused_layers, layer_role, plan_comparison_figure,
                                      plan_latency_by_type_figure, plan_summary, quantization_overhead,
                                      residual_adds)

PLAN_DIRS = ["a100-resnet18-fp32", "a100-resnet18-fp16", "a100-resnet18-qat", "a100-resnet18-qat-residual",
             "mobilenet-qat", "mobilenet_v2_residuals-qat"]


@pytest.fixture
def plans(trt_plans_dir) -> dict[str, TrtPlan]:
    return {name: load_plan_dir(trt_plans_dir / name) for name in PLAN_DIRS}


def _raw(trt_plans_dir: Path, name: str, suffix: str):
    (path,) = (trt_plans_dir / name).glob(f"*{suffix}")
    return json.loads(path.read_text())


def test_fixture_folder_holds_all_six_plans(trt_plans_dir):
    assert trt_plans_dir.name == "trt-plans" and (trt_plans_dir / "LICENSE.txt").is_file()
    assert sorted(p.name for p in trt_plans_dir.iterdir() if p.is_dir()) == sorted(PLAN_DIRS)


def test_example_plans_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from workbench.trtplan import example_plan_dir, example_plans

    monkeypatch.chdir(tmp_path)  # no project folder around: the package alone finds its plans
    assert sorted(example_plans()) == sorted(PLAN_DIRS)
    by_name = load_plan_dir("a100-resnet18-qat")
    assert by_name.name == "a100-resnet18-qat" and by_name.latency_ms["median"] > 0
    assert by_name.sources["graph"].startswith(str(example_plan_dir("a100-resnet18-qat")))
    with pytest.raises(PlanImportError, match="a100-resnet18-fp16"):  # the error lists the names there are
        load_plan_dir("resnet18-qat")


def test_every_layer_parsed_in_order(plans, trt_plans_dir):
    for name, plan in plans.items():
        raw = _raw(trt_plans_dir, name, ".graph.json")["Layers"]
        assert [layer.name for layer in plan.layers] == [layer["Name"] for layer in raw], name
        assert all(layer.type != "unknown" and layer.precision != "unknown" for layer in plan.layers), name
        assert plan.schema == "8.x/10.x" and plan.detailed


def test_every_profile_entry_matches_a_layer(plans, trt_plans_dir):
    for name, plan in plans.items():
        entries = _raw(trt_plans_dir, name, ".engine.profile.json")[1:]
        assert plan.unmatched_profile == [], name
        assert all(layer.latency_ms is not None for layer in plan.layers), name
        assert plan.total_layer_ms == pytest.approx(sum(e["averageMs"] for e in entries)), name
        assert plan.profile_count == _raw(trt_plans_dir, name, ".engine.profile.json")[0]["count"]


def test_summed_layer_time_vs_end_to_end_median(plans):
    # Measured on the six fixture plans: per-layer sum is 1.07x (ResNet-18 FP32) to 1.38x (MobileNetV2 QAT)
    # of trtexec's end-to-end median: per-layer profiling serialises layers and adds timing overhead.
    ratios = {name: plan.layer_time_ratio for name, plan in plans.items()}
    assert all(1.0 <= r <= 1.5 for r in ratios.values()), ratios
    assert ratios["a100-resnet18-fp32"] < ratios["mobilenet_v2_residuals-qat"]


def test_end_to_end_latency_and_device_from_metadata(plans):
    medians = {name: round(plan.latency_ms["median"], 2) for name, plan in plans.items() if name.startswith("a100")}
    # The fixture README's reported medians.
    assert medians == {"a100-resnet18-fp32": 1.99, "a100-resnet18-fp16": 0.86, "a100-resnet18-qat": 0.88,
                       "a100-resnet18-qat-residual": 0.55}
    assert plans["a100-resnet18-fp32"].device == "NVIDIA A100 80GB PCIe"
    assert plans["a100-resnet18-fp32"].batch == 32
    assert plans["mobilenet-qat"].device == "NVIDIA TITAN RTX"
    assert set(plans["mobilenet-qat"].latency_ms) >= {"min", "max", "mean", "median", "p90", "p95", "p99"}
    assert plans["a100-resnet18-qat"].precision_flags["int8"] and not plans["a100-resnet18-fp32"].precision_flags["fp16"]


def test_precision_detection(plans):
    def count(name, precision):
        return sum(layer.precision == precision for layer in plans[name].layers)

    assert count("a100-resnet18-fp32", "fp32") == len(plans["a100-resnet18-fp32"].layers)
    assert count("a100-resnet18-fp16", "fp16") >= 30
    for name in ("a100-resnet18-qat", "a100-resnet18-qat-residual", "mobilenet-qat", "mobilenet_v2_residuals-qat"):
        assert count(name, "int8") >= 14, name
    # The conv that joins an INT8 conv output with an FP16 residual reads two datatypes.
    fused_add = next(l for l in plans["a100-resnet18-qat"].layers if "Add_36" in l.onnx_nodes)
    assert fused_add.precision == "mixed"


def test_fused_names_map_to_onnx_nodes(plans):
    fp32 = plans["a100-resnet18-fp32"]
    assert fp32.engine.layer_of("Add_6").name == "Conv_5 + Add_6 + Relu_7"
    assert fp32.engine.layer_of("Relu_7").onnx_nodes == ["Conv_5", "Add_6", "Relu_7"]
    reformat = next(l for l in fp32.layers if l.name.startswith("Reformatting CopyNode"))
    assert reformat.inserted and reformat.onnx_nodes == [] and layer_role(reformat) == "reformat"
    qdq = next(l for l in plans["a100-resnet18-qat"].layers if l.name == "QuantizeLinear_15")
    assert layer_role(qdq) == "qdq" and not qdq.inserted
    fused = fused_layers(fp32)
    assert len(fused) == 17 and all(len(row["onnx_nodes"]) > 1 for row in fused)
    gemm = next(l for l in plans["a100-resnet18-qat"].layers if "Gemm_257" in l.onnx_nodes)
    assert not any("Unnamed" in n for n in gemm.onnx_nodes)


def test_to_json_contract(plans):
    data = json.loads(json.dumps(plans["a100-resnet18-fp16"].to_json(), allow_nan=False))
    assert data["latency_ms"]["median"] == pytest.approx(0.862183)
    assert len(data["layers"]) == 36
    assert set(data["layers"][1]) >= {"name", "type", "precision", "onnx_nodes", "latency_ms"}
    assert data["layers"][1]["onnx_nodes"] == ["Conv_0", "Relu_1"] and data["layers"][1]["precision"] == "fp16"


def test_load_plan_explicit_files_without_discovery(trt_plans_dir):
    folder = trt_plans_dir / "a100-resnet18-fp32"
    bare = load_plan(folder / "resnet.onnx.engine.graph.json", discover=False)
    assert bare.latency_ms is None and bare.layer_time_ratio is None and bare.total_layer_ms is None
    with_profile = load_plan(folder / "resnet.onnx.engine.graph.json", folder / "resnet.onnx.engine.profile.json",
                             discover=False)
    assert with_profile.total_layer_ms == pytest.approx(2.123776) and with_profile.latency_ms is None


def test_plan_summary(plans):
    summary = plan_summary(plans["a100-resnet18-fp16"], top=5)
    assert sum(row["ms"] for row in summary["by_type"]) == pytest.approx(summary["total_layer_ms"])
    assert sum(row["ms"] for row in summary["by_precision"]) == pytest.approx(summary["total_layer_ms"])
    assert summary["top_layers"][0]["name"] == "Conv_0 + Relu_1"
    times = [row["latency_ms"] for row in summary["top_layers"]]
    assert times == sorted(times, reverse=True) and len(times) == 5
    assert summary["reformat_layers"] == 12 and 0.05 < summary["reformat_share"] < 0.15


def test_naive_qat_vs_qat_residual_explained_by_data(plans):
    naive = quantization_overhead(plans["a100-resnet18-qat"])
    residual = quantization_overhead(plans["a100-resnet18-qat-residual"])
    fp16 = plans["a100-resnet18-fp16"].latency_ms["median"]
    # Naive QAT is no faster than FP16; quantised residuals make it ~1.6x faster.
    assert naive["median_ms"] >= fp16 and residual["median_ms"] < 0.7 * fp16
    # Why: all 8 residual Adds read an FP16 residual, so 10 standalone Quantize layers re-quantise them.
    assert naive["residual_adds_not_int8"] == 8 and naive["qdq_layers"] == 10
    assert residual["residual_adds_not_int8"] == 1 and residual["qdq_layers"] == 3
    assert naive["qdq_ms"] + naive["reformat_ms"] > 2 * (residual["qdq_ms"] + residual["reformat_ms"])
    adds = residual_adds(plans["a100-resnet18-qat-residual"])
    assert sum(a["int8_in_and_out"] for a in adds) == 7


def test_compare_same_export_matches_by_name(plans):
    comparison = compare_plans({"fp32": plans["a100-resnet18-fp32"], "fp16": plans["a100-resnet18-fp16"]})
    assert comparison.match == "name" and len(comparison.rows) == 23
    assert all(row.cells["fp32"] and row.cells["fp16"] for row in comparison.rows)
    faster = sum(row.cells["fp16"]["latency_ms"] < row.cells["fp32"]["latency_ms"] for row in comparison.rows)
    assert faster >= 20
    assert comparison.overhead_ms["fp16"]["reformat"] == pytest.approx(plans["a100-resnet18-fp16"].total_layer_ms
                                                                     - sum(r.cells["fp16"]["latency_ms"]
                                                                           for r in comparison.rows))


def test_compare_across_exports_matches_by_op_order(plans):
    four = {k: plans[f"a100-resnet18-{k}"] for k in ("fp32", "fp16", "qat", "qat-residual")}
    comparison = compare_plans(four)
    assert comparison.match == "ordinal"
    first = comparison.rows[0]
    assert first.key == "Conv#0"
    assert [first.cells[k]["precision"] for k in four] == ["fp32", "fp16", "int8", "int8"]
    # QAT-residual fused MaxPool into the first conv: no MaxPool row for it.
    maxpool = next(r for r in comparison.rows if r.op_type == "MaxPool")
    assert maxpool.cells["qat-residual"] is None and maxpool.cells["qat"] is not None
    table = comparison.table()
    assert table[0]["qat ms"] == pytest.approx(0.201728)
    json.dumps(comparison.to_json(), allow_nan=False)


def test_figures_hold_the_plan_numbers(plans):
    fig = plan_latency_by_type_figure(plans["a100-resnet18-qat"])
    bars = [t for t in fig.data if t.type == "bar"]
    assert sum(t.y[0] for t in bars) == pytest.approx(plans["a100-resnet18-qat"].total_layer_ms)
    median = next(t for t in fig.data if t.type == "scatter")
    assert median.y[0] == pytest.approx(0.882568)
    by_precision = plan_latency_by_type_figure(plans, by="precision")
    assert {t.name for t in by_precision.data if t.type == "bar"} >= {"fp32", "fp16", "int8", "mixed"}
    comparison = plan_comparison_figure({"fp32": plans["a100-resnet18-fp32"], "fp16": plans["a100-resnet18-fp16"]})
    assert [t.name for t in comparison.data] == ["fp32", "fp16"]
    assert comparison.data[1].y[0] == pytest.approx(0.111616) and comparison.data[1].x[0] == "Conv_0"
    with pytest.raises(ValueError, match="by must be"):
        plan_latency_by_type_figure(plans["a100-resnet18-qat"], by="colour")


@pytest.mark.parametrize("name, nodes, inserted", [
    ("Conv_0 + Relu_1", ["Conv_0", "Relu_1"], False),
    ("/l1/Conv || /l2/Conv", ["/l1/Conv", "/l2/Conv"], False),
    ("features.0.weight + QuantizeLinear_7 + Conv_9 + PWN(Clip_13)", ["features.0.weight", "QuantizeLinear_7",
                                                                      "Conv_9", "Clip_13"], False),
    ("PWN(PWN(/act/Sigmoid, /act/Mul), /add/Add)", ["/act/Sigmoid", "/act/Mul", "/add/Add"], False),
    ("{ForeignNode[/blk/MatMul.../blk/Softmax]}", ["/blk/MatMul", "/blk/Softmax"], False),
    ("Reformatting CopyNode for Input Tensor 0 to Conv_5 + Add_6 + Relu_7", [], True),
    ("reshape_after_Gemm_48", [], True),
    ("Conv_3 + Relu_4 [profile 1]", ["Conv_3", "Relu_4"], False),
    ("fc.weight + Gemm_257 + (Unnamed Layer* 306) [Shuffle] + unsqueeze_node_after_fc.bias", ["fc.weight", "Gemm_257"],
     False),
])
def test_split_layer_name(name, nodes, inserted):
    split = split_layer_name(name)
    assert split.nodes == nodes and split.inserted == inserted


def test_split_details():
    foreign = split_layer_name("{ForeignNode[/a/Conv.../b/Relu]} + Add_3")
    assert foreign.foreign_regions == [("/a/Conv", "/b/Relu")] and foreign.nodes == ["/a/Conv", "/b/Relu", "Add_3"]
    assert split_layer_name("Reformatting CopyNode for Output Tensor 0 to MaxPool_2").target == "MaxPool_2"
    assert split_layer_name("Conv_1 + (Unnamed Layer* 9) [Shuffle]").internal == ["(Unnamed Layer* 9) [Shuffle]"]
    assert onnx_layers_from_metadata("[ONNX Layer: /c/Conv]\x1f[ONNX Layer: /c/Relu]") == ["/c/Conv", "/c/Relu"]
    assert [node_op_type(n) for n in ("Conv_9", "/layer1/conv1/Conv", "conv1.weight")] == ["Conv", "Conv", None]
    assert [dtype_of(s) for s in ("Row major linear FP32", "Channel major FP16 format where channel % 8 == 0",
                                  "Thirty-two wide channel vectorized row major Int8 format", "Half", "Float",
                                  "BF16", "something else")] == ["fp32", "fp16", "int8", "fp16", "fp32", "bf16", None]


def test_trt10_detailed_metadata_is_preferred_over_the_name():
    graph = {"Bindings": ["x", "y"], "Layers": [
        {"Name": "__myl_ConvRelu_0", "LayerType": "kgen", "Metadata": "[ONNX Layer: /c/Conv]\x1f[ONNX Layer: /c/Relu]",
         "Inputs": [{"Name": "x", "Format/Datatype": "Half"}], "Outputs": [{"Name": "y", "Format/Datatype": "Half"}]}]}
    plan = load_plan(graph)
    assert plan.layers[0].onnx_nodes == ["/c/Conv", "/c/Relu"] and plan.layers[0].precision == "fp16"
    assert plan.engine.backend == "tensorrt-plan" and plan.engine.unmapped_nodes() == []


def test_trt11_io_tensors_schema_and_split_format_fields():
    # Shaped after the TensorRT 11.x IEngineInspector migration guide: "Bindings" became "I/O Tensors" objects,
    # and a tensor's format and datatype are separate fields.
    graph = {
        "I/O Tensors": [
            {"Name": "input_0", "IOMode": "Input", "DataType": "Float", "Dimensions": [1, 3, 224, 224],
             "Location": "Device", "IsShapeInferenceIO": False,
             "ProfileInfo": [{"MinShape": [1, 3, 224, 224], "OptShape": [1, 3, 224, 224],
                              "MaxShape": [1, 3, 224, 224], "Format": "Row major linear FP32 format (kLINEAR)"}]},
            {"Name": "output_0", "IOMode": "Output", "DataType": "Float", "Dimensions": [1, 1000],
             "Location": "Device", "IsShapeInferenceIO": False},
        ],
        "Layers": [
            {"Name": "/conv/Conv + /relu/Relu", "LayerType": "CaskConvolution",
             "Inputs": [{"Name": "input_0", "Format": "Channel major (kHWC8)", "DataType": "Half"}],
             "Outputs": [{"Name": "t1", "Format": "Channel major (kHWC8)", "DataType": "Half"}]},
            {"Name": "/fc/Gemm", "LayerType": "CaskGemm",
             "Inputs": [{"Name": "t1", "Format": "Row major linear (kLINEAR)", "DataType": "Int8"}],
             "Outputs": [{"Name": "output_0", "Format": "Row major linear (kLINEAR)", "DataType": "Float"}]},
        ],
    }
    plan = load_plan(json.dumps(graph), [{"count": 10}, {"name": "/conv/Conv + /relu/Relu", "averageMs": 0.5},
                                         {"name": "/fc/Gemm", "averageMs": 0.25}])
    assert plan.schema == "11.x" and [t["IOMode"] for t in plan.io_tensors] == ["Input", "Output"]
    assert [l.precision for l in plan.layers] == ["fp16", "int8"]
    assert plan.tensor_dtypes["output_0"] == "fp32" and plan.total_layer_ms == pytest.approx(0.75)


def test_layer_names_only_inspector_output():
    graph = {"Bindings": ["x", "y"], "Layers": ["Conv_0 + Relu_1 [profile 0]",
                                               "Reformatting CopyNode for Input Tensor 0 to Gemm_3", "Gemm_3"]}
    profile = [{"count": 4}, {"name": "Conv_0 + Relu_1", "averageMs": 0.1},
               {"name": "Reformatting CopyNode for Input Tensor 0 to Gemm_3", "averageMs": 0.01},
               {"name": "Gemm_3", "averageMs": 0.2}]
    plan = load_plan(graph, profile)
    assert not plan.detailed and plan.unmatched_profile == []
    assert [l.onnx_nodes for l in plan.layers] == [["Conv_0", "Relu_1"], [], ["Gemm_3"]]
    assert [l.type for l in plan.layers] == ["unknown", "Reformat", "unknown"]
    assert all(l.precision == "unknown" for l in plan.layers) and plan.layers[1].inserted
    assert plan.profile_count == 4


@pytest.mark.parametrize("content, message", [
    ("this is not json", "not valid JSON"),
    ('{"Bindings": []}', "no 'Layers' key"),
    ('{"Layers": []}', "neither 'Bindings'"),
    ('{"Layers": [{"LayerType": "Conv"}], "Bindings": []}', "has no 'Name'"),
])
def test_bad_graph_json_raises_plan_import_error(tmp_path, content, message):
    path = tmp_path / "bad.graph.json"
    path.write_text(content)
    with pytest.raises(PlanImportError, match=message) as info:
        load_plan(path)
    assert "bad.graph.json" in str(info.value)  # the message names the file


def test_bad_profile_and_metadata_raise_plan_import_error(tmp_path):
    graph = tmp_path / "m.graph.json"
    graph.write_text(json.dumps({"Bindings": [], "Layers": ["A"]}))
    profile = tmp_path / "m.profile.json"
    profile.write_text(json.dumps([{"count": 1}, {"name": "A", "timeMs": 1.0}]))
    with pytest.raises(PlanImportError, match=r"m\.profile\.json: entry 1 is missing averageMs"):
        load_plan(graph)
    profile.write_text(json.dumps({"name": "A"}))
    with pytest.raises(PlanImportError, match="not a non-empty list"):
        load_plan(graph)
    profile.unlink()
    (tmp_path / "m.profile.metadata.json").write_text(json.dumps({"performance_summary": {}}))
    with pytest.raises(PlanImportError, match="Latency"):
        load_plan(graph)
    with pytest.raises(PlanImportError, match="file not found"):
        load_plan(tmp_path / "missing.graph.json")


def test_load_plan_dir_needs_exactly_one_graph(tmp_path):
    with pytest.raises(PlanImportError, match="found: none"):
        load_plan_dir(tmp_path)
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.graph.json").write_text(json.dumps({"Bindings": [], "Layers": []}))
    with pytest.raises(PlanImportError, match="a.graph.json, b.graph.json"):
        load_plan_dir(tmp_path)
    with pytest.raises(PlanImportError, match="folder not found"):
        load_plan_dir(tmp_path / "nope")


def test_parse_graph_keeps_io_names_for_8x_bindings():
    info = parse_graph({"Bindings": ["in", "out"], "Layers": []})
    assert info.io_tensors == [{"Name": "in"}, {"Name": "out"}] and info.layers == []
