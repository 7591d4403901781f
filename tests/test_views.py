"""Views: plotly figures and the graphviz fusion view, built from result objects (real ORT engine graph for tiny_cnn)."""
from __future__ import annotations

import json
import math
import re
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper

from conftest import make_tiny_cnn
from workbench.backends import get_backend
from workbench.engine import EngineGraph, EngineLayer
from workbench.errors import MissingDependencyError, WorkbenchError
from workbench.models.spec import Model
from workbench.precision.plan import PrecisionPlan
from workbench.results import AccuracyStats, DriftPoint, LatencyStats, RunResult
from workbench.views import (config_colors, drift_figure, fusion_graph, layer_latency_comparison, layer_latency_figure,
                             match_layers, summary_html, summary_table, tradeoff_figure)
from workbench.views.figures import PRECISION_COLORS

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def model() -> Model:
    return Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="tests/conftest.py")


@pytest.fixture(scope="module")
def ort_engine(model) -> EngineGraph:
    """The real ONNX Runtime optimised graph of tiny_cnn, with profiled per-layer latency joined in."""
    engine = get_backend("onnxruntime").build(model.proto)
    graph = engine.layers()
    feeds = {"input": np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)}
    timings = {t.name: t.latency_ms for t in engine.profile(feeds, runs=3)}
    for layer in graph.layers:
        layer.latency_ms = timings.get(layer.name)
    return graph


def _int8_engine(fp32: EngineGraph) -> EngineGraph:
    """An INT8 engine over the same nodes with a different grouping: conv1 and conv2 blocks fused into one."""
    layers = []
    for layer in fp32.layers:
        if layer.inserted:
            continue
        if "conv2" in layer.onnx_nodes:
            layers[-1].onnx_nodes += layer.onnx_nodes
            layers[-1].latency_ms = 0.004
            continue
        precision = "int8" if "conv1" in layer.onnx_nodes or "fc" in layer.onnx_nodes else "fp32"
        layers.append(EngineLayer(layer.name, layer.type, precision, list(layer.onnx_nodes), list(layer.inputs),
                                  list(layer.outputs), latency_ms=0.001 * (len(layers) + 1)))
    layers.insert(0, EngineLayer("quantize_input", "QuantizeLinear", "int8", [], ["input"], ["input_q"],
                                 inserted=True, latency_ms=0.0005))
    return EngineGraph("onnxruntime", layers, list(fp32.source_nodes))


def _result(precision: str, engine: EngineGraph | None, median: float, top1: float | None, agreement: float,
            *, drift=(), accelerated=True, synthetic=False, method=None) -> RunResult:
    return RunResult(
        model="tiny-cnn", plan=PrecisionPlan(precision, method=method),
        calibration="synthetic" if method else None, calibration_hash=None, backend="onnxruntime",
        versions={"onnxruntime": "test"}, synthetic_data=synthetic,
        latency=[LatencyStats(batch=8, median=median, p90=median * 1.2, min=median * 0.9, mean=median,
                              runs=5, throughput=8000 / median)],
        accuracy=AccuracyStats(top1=top1, top1_agreement=agreement, cosine=0.999, max_abs_diff=0.01, samples=64),
        engine=engine, layer_time_ratio=0.8, drift=list(drift), drift_graph="onnx graph",
        accelerated=accelerated, notes=["a note"] if not accelerated else [])


@pytest.fixture(scope="module")
def results(ort_engine) -> list[RunResult]:
    drift_fp16 = [DriftPoint("c1", "conv1", math.inf, 1.0, 0.0), DriftPoint("r1", "relu1", 42.0, 0.9999, 1e-3),
                  DriftPoint("probs", "softmax", 35.5, 0.999, 2e-3)]
    drift_int8 = [DriftPoint("c1", "conv1", 20.0, 0.99, 0.1), DriftPoint("r1", "relu1", 18.0, 0.98, 0.2),
                  DriftPoint("probs", "softmax", 12.0, 0.97, 0.3)]
    return [
        _result("fp32", ort_engine, 2.0, 0.90, 1.0),
        _result("fp16", ort_engine, 2.2, 0.89, 0.99, drift=drift_fp16, accelerated=False),
        _result("int8", _int8_engine(ort_engine), 1.0, 0.85, 0.95, drift=drift_int8, method="minmax",
                synthetic=True),
    ]


def _roundtrip(result: RunResult) -> RunResult:
    return RunResult.from_json(json.loads(json.dumps(result.to_json())))


# ---- per-layer latency --------------------------------------------------------------------------------------
def test_layer_latency_bars_cover_every_layer(results):
    result = results[0]
    fig = layer_latency_figure(result)
    assert sum(len(trace.y) for trace in fig.data) == len(result.engine.layers)
    timed = {l.name: l.latency_ms for l in result.engine.layers}
    for trace in fig.data:
        for name, x in zip(trace.y, trace.x):
            assert x == pytest.approx(timed[name] or 0.0)
    assert list(fig.layout.yaxis.categoryarray) == [l.name for l in result.engine.layers]


def test_layer_latency_colours_by_precision_sorted_and_top(results):
    int8 = results[2]
    fig = layer_latency_figure(int8, order="sorted", color_by="precision", top=3)
    by_name = {trace.name: trace for trace in fig.data}
    assert set(by_name) <= {"int8", "fp32"}
    for precision, trace in by_name.items():
        assert trace.marker.color == PRECISION_COLORS[precision]
    order = list(fig.layout.yaxis.categoryarray)
    assert len(order) == 3
    times = {l.name: l.latency_ms for l in int8.engine.layers}
    assert [times[n] for n in order] == sorted(times.values(), reverse=True)[:3]
    with pytest.raises(WorkbenchError, match="order="):
        layer_latency_figure(int8, order="random")


def test_comparison_matches_by_onnx_nodes_and_annotates_speedup(results):
    fp32, int8 = results[0], results[2]
    matches = match_layers(fp32.engine, int8.engine)
    for m in matches:  # each group's layers cover exactly the group's nodes on both sides
        for side in (m.layers_a, m.layers_b):
            covered = {n for l in side for n in l.onnx_nodes}
            assert not covered or covered == set(m.nodes)
    merged = next(m for m in matches if "conv1" in m.nodes)
    assert {"conv1", "conv2", "add"} <= set(merged.nodes) and len(merged.layers_a) == 2 and len(merged.layers_b) == 1
    fig = layer_latency_comparison(fp32, int8)
    trace_a, trace_b = fig.data
    assert len(trace_a.y) == len(matches)
    for a, b, speedup, text in zip(trace_a.x, trace_b.x, trace_b.customdata, trace_b.text):
        if a and b:
            assert speedup == pytest.approx(a / b)
            assert text == f"×{a / b:.2f}"
        else:
            assert speedup is None and text == ""


# ---- drift, trade-off, summary ------------------------------------------------------------------------------
def test_drift_figure_caps_inf_and_marks_identical(results):
    fig = drift_figure(results)
    sqnr = [t for t in fig.data if t.yaxis in (None, "y")]
    assert len(sqnr) == 2  # fp32 has no drift and is left out
    fp16 = sqnr[0]
    finite = [p.sqnr_db for r in results for p in r.drift if math.isfinite(p.sqnr_db)]
    assert fp16.y[0] > max(finite)
    assert fp16.customdata[0] == "identical" and fp16.marker.symbol[0] == "star"
    assert "identical" in fp16.hovertext[0]
    assert list(fp16.y[1:]) == [42.0, 35.5]
    cosine = [t for t in fig.data if t.yaxis == "y2"]
    assert list(cosine[1].y) == [0.99, 0.98, 0.97]
    with pytest.raises(WorkbenchError, match="drift"):
        drift_figure(results[0])


def test_tradeoff_points_and_markers(results):
    fig = tradeoff_figure(results)
    points = [(x, y, s) for t in fig.data for x, y, s in zip(t.x, t.y, t.marker.symbol)]
    assert len(points) == len(results)
    assert sorted(points) == sorted([(1.0, 0.85, "diamond"), (2.0, 0.90, "circle"), (2.2, 0.89, "circle-open")])
    assert fig.layout.yaxis.title.text == "top-1 accuracy"
    assert fig.layout.yaxis.range[1] == 1.0 and all(t.cliponaxis is False for t in fig.data)  # ends at 100 %
    unlabelled = [_roundtrip(r) for r in results]
    unlabelled[1].accuracy.top1 = None
    assert tradeoff_figure(unlabelled).layout.yaxis.title.text == "top-1 agreement with FP32"


def test_summary_table_speedup_and_drop(results):
    rows = summary_table(results)
    assert [r["precision"] for r in rows] == ["fp32", "fp16", "int8"]
    assert rows[0]["speedup_vs_fp32"] == pytest.approx(1.0)
    assert rows[2]["speedup_vs_fp32"] == pytest.approx(2.0)
    assert rows[2]["top1_drop"] == pytest.approx(0.05)
    assert rows[1]["accelerated"] is False and rows[1]["notes"] == "a note"
    assert summary_table(results[2:])[0]["speedup_vs_fp32"] is None  # no FP32 to compare with
    assert [r["batch"] for r in rows] == [r.headline_latency.batch for r in results]
    assert len({r["label"] for r in rows}) == 3


def test_summary_html_is_a_readable_sortable_table(results):
    table = summary_html(results)
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    assert headers[0] == "configuration" and "batch" in headers and "median latency (ms)" in headers
    assert "latency_median_ms" not in table and "speedup_vs_fp32" not in table
    body = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(body) == len(results)
    cells = [re.findall(r"<td[^>]*>([^<]*)", row) for row in body]
    speedup = headers.index("speed-up vs FP32")
    assert [c[speedup] for c in cells] == ["×1.00", "×0.91", "×2.00"]
    assert all("onclick" in th for th in re.findall(r"<th [^>]*>", table))  # click a header to sort
    assert table._repr_html_() == str(table)


def test_every_figure_builds_from_json_roundtrip(results, model):
    loaded = [_roundtrip(r) for r in results]
    assert layer_latency_figure(loaded[0]).to_dict() == layer_latency_figure(results[0]).to_dict()
    assert layer_latency_comparison(loaded[0], loaded[2]).to_dict() == \
        layer_latency_comparison(results[0], results[2]).to_dict()
    assert drift_figure(loaded).to_dict() == drift_figure(results).to_dict()
    assert tradeoff_figure(loaded).to_dict() == tradeoff_figure(results).to_dict()
    assert summary_table(loaded) == summary_table(results)
    assert fusion_graph(model, loaded[0]).svg == fusion_graph(model, results[0]).svg


# ---- fusion view --------------------------------------------------------------------------------------------
def _node_fills(svg: str) -> dict[str, str]:
    """graphviz node id (from <title>) -> fill colour of its shape."""
    fills = {}
    for g in ET.fromstring(svg[svg.find("<svg"):]).iter(f"{SVG}g"):
        if g.get("class") == "node":
            shape = next(e for e in g.iter() if e.tag in (f"{SVG}path", f"{SVG}polygon", f"{SVG}ellipse"))
            fills[g.find(f"{SVG}title").text] = shape.get("fill")
    return fills


def test_fusion_graph_names_colours_and_html(model, ort_engine):
    view = fusion_graph(model, ort_engine)
    for name in model.node_names + [l.name for l in ort_engine.layers]:
        assert name in view.before_svg + view.after_svg
    before, after = _node_fills(view.before_svg), _node_fills(view.after_svg)
    for k, layer in enumerate(ort_engine.layers):
        for node in layer.onnx_nodes:
            assert before[f"b{model.node_names.index(node)}"] == after[f"a{k}"]
    fused = [k for k, l in enumerate(ort_engine.layers) if len(l.onnx_nodes) > 1]
    assert len(fused) == view.summary["fused_groups"] >= 2
    assert len({after[f"a{k}"] for k in fused}) == len(fused)  # one distinct colour per fused group
    assert view.before_svg.count('class="cluster"') == len(fused)
    assert view.summary == {"original_nodes": 11, "engine_layers": len(ort_engine.layers),
                            "fused_groups": len(fused), "inserted_layers": sum(l.inserted for l in ort_engine.layers),
                            "removed_nodes": 0, "page": 0, "pages": 1}
    page = view._repr_html_()
    assert page.count("<svg") == 2 and "<script" not in page and "display:flex" in page
    assert ET.fromstring(view.svg).tag == f"{SVG}svg"  # the combined SVG is well-formed
    only_fused = fusion_graph(model, ort_engine, filter="fused")
    assert {n for n in _node_fills(only_fused.after_svg) if n.startswith("a")} == {f"a{k}" for k in fused}


def _chain(n: int) -> tuple[Model, EngineGraph]:
    nodes = [helper.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}") for i in range(n)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [1, 4])])
    model = Model.from_proto(helper.make_model(graph), name="chain", source="test")
    layers = [EngineLayer(f"fused{i}", "NegRelu", "fp32", [f"n{i}", f"n{i + 1}"], [f"t{i}"], [f"t{i + 2}"])
              for i in range(0, n, 2)]
    return model, EngineGraph("test", layers, model.node_names)


def test_fusion_view_names_the_engine_kernel_as_notebook_02_and_the_report_do(model, ort_engine):
    """An INT8 layer shows as QLinearConv (the kernel that runs) with the ONNX ops it covers, not as "Conv"."""
    conv = next(l for l in ort_engine.layers if "conv1" in l.onnx_nodes)
    int8 = EngineLayer(conv.name, "QLinearConv", "int8", list(conv.onnx_nodes), list(conv.inputs),
                       list(conv.outputs))
    engine = EngineGraph("onnxruntime", [int8 if l is conv else l for l in ort_engine.layers],
                         list(ort_engine.source_nodes))
    after = fusion_graph(model, engine).after_svg
    covered = "+".join(dict.fromkeys(model.proto.graph.node[model.node_names.index(n)].op_type
                                     for n in conv.onnx_nodes))
    assert f"QLinearConv ({covered})" in after


def test_fusion_graph_paginates_big_graphs():
    model, engine = _chain(300)
    first = fusion_graph(model, engine, max_nodes=80)
    assert first.pages == 4
    seen = []
    for page in range(first.pages):
        view = first if page == 0 else fusion_graph(model, engine, max_nodes=80, page=page)
        nodes = [n for n in _node_fills(view.before_svg) if n.startswith("b")]
        assert 0 < len(nodes) <= 80
        seen += nodes
    assert sorted(seen) == sorted(f"b{i}" for i in range(300))  # every node on exactly one page
    with pytest.raises(WorkbenchError, match="out of range"):
        fusion_graph(model, engine, max_nodes=80, page=4)


def test_fusion_graph_errors(model, ort_engine, monkeypatch):
    other, other_engine = _chain(4)
    with pytest.raises(WorkbenchError, match="built from another graph"):
        fusion_graph(model, other_engine)
    with pytest.raises(WorkbenchError, match="filter="):
        fusion_graph(model, ort_engine, filter="slow")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(MissingDependencyError, match="apt-get install graphviz"):
        fusion_graph(model, ort_engine)


# ---- netron -------------------------------------------------------------------------------------------------
def test_netron_serves_on_localhost_and_stops(model):
    pytest.importorskip("netron")
    from workbench.views import netron

    try:
        url = netron.open_in_netron(model)
    except MissingDependencyError as exc:
        pytest.skip(f"Netron refuses to run: {exc}")
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
        assert netron.open_in_netron(model) == url  # same model: same server
        assert url in netron.servers()
    finally:
        netron.stop_all()
    assert netron.servers() == []
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_constant_nodes_are_drawn_like_weights():
    from workbench.backends import get_backend

    nodes = [helper.make_node("Constant", [], ["two"], name="the_constant",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
             helper.make_node("Mul", ["x", "two"], ["y"], name="double"),
             helper.make_node("Relu", ["y"], ["z"], name="relu")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    engine = get_backend("onnxruntime").build(proto).layers()
    view = fusion_graph(proto, engine)
    assert "the_constant" not in view.before_svg and "double" in view.before_svg
    assert view.summary["original_nodes"] == 3 and not engine.unmapped_nodes()


# ---- readability at any size ----------------------------------------------------------------------------------
def test_long_layer_lists_show_the_slowest_and_sum_the_rest():
    layers = [EngineLayer(f"layer{i}", "Conv", "fp32", [f"n{i}"], [], [], latency_ms=0.001 * i) for i in range(100)]
    fig = layer_latency_figure(EngineGraph("test", layers, []), max_rows=40)
    rows = list(fig.layout.yaxis.categoryarray)
    assert len(rows) == 41 and rows[-1] == "other 60 layers (summed)"
    assert set(rows[:40]) == {f"layer{i}" for i in range(60, 100)}  # the 40 slowest, in graph order
    rest = next(t for t in fig.data if t.name == "other layers")
    assert rest.x[0] == pytest.approx(sum(0.001 * i for i in range(60)))
    assert fig.layout.autosize and fig.layout.width is None  # width follows the container
    # the legend is outside the plot (under it, at the bottom of the figure), never over bars
    assert fig.layout.height <= 1400 and fig.layout.legend.yref == "container" and fig.layout.legend.y == 0


def test_each_configuration_keeps_one_distinct_colour_across_figures(results):
    variants = [_roundtrip(results[2]) for _ in range(3)]
    for r, method in zip(variants, ("minmax", "entropy", "percentile")):
        r.plan = replace(r.plan, method=method)
    items = results + variants
    colors = config_colors(items)
    assert len(set(colors.values())) == len({r.label for r in items})  # INT8 variants differ too
    tradeoff = tradeoff_figure(items, colors=colors)
    shown = {t.name.replace("<br>", " "): t.marker.color for t in tradeoff.data}  # long names wrap in the legend
    assert shown == {r.label: colors[r.label] for r in items}
    drift = drift_figure(items, colors=colors)
    assert all(t.line.color == colors[t.name.replace("<br>", " ")] for t in drift.data)
    comparison = layer_latency_comparison(results[0], results[2], colors=colors)
    assert [t.marker.color for t in comparison.data] == [colors[results[0].label], colors[results[2].label]]
    twice = layer_latency_comparison(results[0], results[0], names=("unfused", "fused"))
    assert [t.name for t in twice.data] == ["unfused", "fused"]
    assert twice.data[0].marker.color != twice.data[1].marker.color


def test_drift_is_drawn_by_graph_position_with_names_on_hover(results):
    fig = drift_figure(results)
    sqnr = [t for t in fig.data if t.yaxis in (None, "y")]
    assert list(sqnr[0].x) == [1, 2, 3] and "c1" in sqnr[0].hovertext[0] and "conv1" in sqnr[0].hovertext[0]
    assert fig.layout.yaxis.title.text.startswith("SQNR") and fig.layout.yaxis2.title.text.startswith("cosine")
    assert not fig.layout.annotations or all("SQNR vs FP32 (dB, higher" not in a.text for a in fig.layout.annotations)


@pytest.mark.parametrize("with_positions", [True, False])
def test_drift_x_follows_the_fp32_graph_whichever_variant_ran_first(with_positions):
    """INT8 computed before FP16 (the natural FP32 -> INT8 -> FP16 order) and FP16 exposing tensors INT8 fused
    away: every line still runs left to right (no zig-zag); with positions the x order is the FP32 graph's."""
    def points(names):
        graph = ["c1", "n1", "r1", "c2", "n2", "s", "r2", "probs"]
        return [DriftPoint(t, None, 30.0, 0.99, 0.1, position=graph.index(t) if with_positions else None)
                for t in names]

    int8 = _result("int8", None, 1.0, 0.85, 0.95, drift=points(["c1", "r1", "s", "probs"]), method="minmax")
    fp16 = _result("fp16", None, 2.2, 0.89, 0.99, drift=points(["c1", "n1", "r1", "n2", "s", "r2", "probs"]))
    fig = drift_figure([int8, fp16])
    for trace in fig.data:
        assert list(trace.x) == sorted(trace.x), f"{trace.name} zig-zags: {list(trace.x)}"
    sqnr = {t.legendgroup: list(t.x) for t in fig.data if t.yaxis in (None, "y")}
    assert sqnr[fp16.label] == [1, 2, 3, 4, 5, 6, 7] and sqnr[int8.label] == [1, 3, 5, 7]
    assert RunResult.from_json(json.loads(json.dumps(fp16.to_json()))).drift == fp16.drift


def test_numbers_for_people():
    from workbench.views.tables import format_value, significant

    assert [significant(v) for v in (1234.6, 0.8776, 3.628, 0.0123, 100000.0)] == \
        ["1,235", "0.878", "3.63", "0.0123", "100,000"]
    assert format_value(0.8775, "fraction") == "87.8 %" and format_value(2.25, "speedup") == "×2.25"
    assert format_value(None) == "–" and format_value(True) == "yes"
    assert format_value(["fp32", "fp16"], "text") == "fp32, fp16"


def test_fusion_names_shapes_and_shape_arithmetic_are_readable():
    from workbench.views.fusion import _dims_text, _short

    assert _dims_text(["unk__1", 32, "unk__5", "unk__6"]) == "batch×32×?×?"
    assert _dims_text(["batch", "sequence", 384]) == "batch×sequence×384"
    name = "/features/features.0/features.0.0/Conv_output_0_fusion_W_0.weight"
    short = _short(name)  # the repeated scopes go, the end is cut: the block (features.0.0) stays readable
    assert short.startswith("features.0.0/Conv") and short.endswith("…") and len(short) <= 34
    assert _short("/_blocks.10/_depthwise_conv/static_padding/Reshape").startswith("_blocks.10/_depthwise_conv/")
    # x -> Shape -> Gather -> Unsqueeze -> Concat -> Reshape(x, shape) -> Relu: the four glue nodes are one box
    i = helper.make_tensor("i", TensorProto.INT64, [1], [0])
    minus = helper.make_tensor("m", TensorProto.INT64, [1], [-1])
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i"], ["g"], name="gather", axis=0),
             helper.make_node("Concat", ["g", "m"], ["c"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "c"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "glue", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[i, minus])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    engine = EngineGraph("test", [EngineLayer("/6/Relu_output_0_nchwc", "FusedThing", "fp32", ["reshape", "relu"],
                                              ["x"], ["y"])], [n.name for n in nodes])
    view = fusion_graph(proto, engine)
    before = _node_fills(view.before_svg)
    assert not {"b0", "b1", "b2"} & set(before) and {"b3", "b4"} <= set(before)
    assert "shape arithmetic" in view.before_svg and "3 exported shape&#45;arithmetic nodes" in view.before_svg
    assert "Reshape+Relu" in view.after_svg  # what the layer computes, not only its internal name
    page = view._repr_html_()
    assert 'class="workbench-fusion-after"' in page and "max-width:none" in page


def test_fusion_pages_html_has_working_page_buttons():
    from workbench.views import fusion_pages_html

    model, engine = _chain(300)
    page = fusion_pages_html(model, engine, max_nodes=80)
    assert page.count('class="workbench-fusion-page"') == 4 and page.count("display:none") >= 3
    assert "workbench-page-next" in page and "workbench-page-previous" in page and "<script" not in page


def test_layer_group_labels_say_what_the_layer_computes():
    from workbench.views.figures import LayerMatch

    layer = EngineLayer("/_blocks.1/_swish/Clip_output_0_nchwc", "com.microsoft.nchwc.Conv", "fp32", ["conv"])
    label = LayerMatch(nodes=["conv"], layers_a=[layer]).label
    assert label.startswith("Conv · _blocks.1/_swish/") and len(label) <= 34  # the block and module kept
    pair = LayerMatch(nodes=["g"], layers_b=[EngineLayer("fused /12/Gemm", "FusedGemm", "fp32", ["g"]),
                                             EngineLayer("/12/Relu", "Relu", "fp32", ["r"])]).label
    assert pair.startswith("FusedGemm+Relu · ") and pair.endswith("(+1)")


def test_weight_qdq_layers_of_tensorrt_style_int8_are_one_box(tiny_cnn, tmp_path):
    pytest.importorskip("graphviz")
    from workbench import Workbench, views

    wb = Workbench(tiny_cnn, cache_dir=tmp_path, progress=False, eval_limit=8)
    result = wb.run("int8", qdq_style="tensorrt", runs=2, drift=False)
    standalone = [l for l in result.engine.layers if l.type == "DequantizeLinear"
                  and not any(t in {o for m in result.engine.layers for o in m.outputs} for t in l.inputs)]
    assert len(standalone) > 1  # ORT runs the weight DequantizeLinear of TensorRT-placed Q/DQ as layers
    page = views.fusion_graph(wb.variant_model(result), result.engine)._repr_html_()
    assert "weight Q/DQ" in page and f"{len(standalone)} layers" in page
