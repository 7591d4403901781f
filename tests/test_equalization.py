"""Cross-layer equalisation (workbench.precision.equalization): the FP32 function is kept (ReLU6 becomes ReLU, as
AIMET does), per-channel weight ranges of each pair meet, and per-tensor INT8 of a planted net gets better."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.calibration import CalibrationSet
from workbench.models.spec import Model
from workbench.precision import apply_plan, equalization, precision_notes
from workbench.precision.apply import STEPS_KEY
from workbench.precision.plan import PrecisionPlan

C = 8


def _separable(activation: str = "Relu", batch_norm: bool = False) -> onnx.ModelProto:
    """stem Conv 3x3 (1 -> C) -> act -> depthwise Conv 3x3 -> act -> pointwise Conv (C -> 6) -> GAP -> Flatten,
    the stem's output channels planted with ranges from 0.03 to 30 (as BatchNorm folding leaves them). With
    `batch_norm`, a BatchNormalization (not yet folded) follows the stem. `activation`: Relu or ReLU6 (Clip 0..6)."""
    rng = np.random.default_rng(0)
    spread = np.logspace(-1.5, 1.5, C)
    arrays = {"stem_w": rng.standard_normal((C, 1, 3, 3)) * spread[:, None, None, None],
              "stem_b": rng.standard_normal(C) * spread * 0.1,
              "dw_w": rng.standard_normal((C, 1, 3, 3)) / spread[:, None, None, None],
              "dw_b": rng.standard_normal(C) * 0.1,
              "pw_w": rng.standard_normal((6, C, 1, 1)) * 0.5, "pw_b": rng.standard_normal(6) * 0.1,
              "bn_s": 1 + 0.1 * rng.standard_normal(C), "bn_b": 0.1 * rng.standard_normal(C),
              "bn_m": 0.1 * rng.standard_normal(C), "bn_v": 1 + 0.1 * rng.random(C),
              "lo": np.array(0.0), "hi": np.array(6.0)}
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()]

    def act(name: str, source: str) -> onnx.NodeProto:
        inputs = [source, "lo", "hi"] if activation == "Clip" else [source]
        return helper.make_node(activation, inputs, [name], name=name)

    stem_out = "stem_raw" if batch_norm else "stem"
    nodes = [helper.make_node("Conv", ["x", "stem_w", "stem_b"], [stem_out], name="stem", pads=[1, 1, 1, 1])]
    if batch_norm:
        nodes.append(helper.make_node("BatchNormalization", ["stem_raw", "bn_s", "bn_b", "bn_m", "bn_v"], ["stem"],
                                      name="bn"))
    nodes += [act("a1", "stem"),
              helper.make_node("Conv", ["a1", "dw_w", "dw_b"], ["dw"], name="dw", pads=[1, 1, 1, 1], group=C),
              act("a2", "dw"),
              helper.make_node("Conv", ["a2", "pw_w", "pw_b"], ["pw"], name="pw"),
              helper.make_node("GlobalAveragePool", ["pw"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["y"], name="flat")]
    graph = helper.make_graph(nodes, "separable",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 6])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def _inputs(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _ranges(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Per-channel max |w| of each Conv: stem and dw by output channel, pw by input channel."""
    w = {i.name: np.abs(numpy_helper.to_array(i)) for i in proto.graph.initializer}
    return {"stem": w["stem_w"].reshape(C, -1).max(1), "dw": w["dw_w"].reshape(C, -1).max(1),
            "pw_in": w["pw_w"].swapaxes(0, 1).reshape(C, -1).max(1)}


def test_pairs_follow_conv_activation_conv_and_skip_an_unfolded_batch_norm():
    assert [(a.name, b.name if b else None, c.name) for a, b, c in equalization.pairs(_separable())] == [
        ("stem", "a1", "dw"), ("dw", "a2", "pw")]
    assert [a.name for a, _, _ in equalization.pairs(_separable(batch_norm=True))] == ["dw"]  # BN between stem, dw


def test_equalising_keeps_the_fp32_function_and_meets_the_ranges_of_each_pair():
    proto = _separable()
    equalized, count, bounded, held = equalization.equalize(proto)
    onnx.checker.check_model(equalized)
    assert (count, bounded, held) == (2, 0, 0)
    x = _inputs()
    before, after = _run(proto, x), _run(equalized, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    old, new = _ranges(proto), _ranges(equalized)
    # each pair's ranges meet: the stem's output channel c and the depthwise channel c; the depthwise output
    # channel c and the pointwise input channel c
    np.testing.assert_allclose(new["stem"], new["dw"], rtol=1e-2)
    np.testing.assert_allclose(new["dw"], new["pw_in"], rtol=1e-2)
    spread = lambda r: r.max() / r.min()  # noqa: E731
    assert spread(old["stem"]) > 500 and spread(new["stem"]) < spread(old["stem"]) / 50


def test_relu6_keeps_its_bound_per_channel_or_becomes_relu_as_aimet_does():
    proto, x = _separable("Clip"), _inputs()
    original, with_relu = _run(proto, x), _run(_separable("Relu"), x)
    assert not np.allclose(original, with_relu, rtol=1e-3)  # the planted net does exceed 6: ReLU6 != ReLU

    bounded, count, clips, _ = equalization.equalize(proto)  # default: the bound moves with the scale
    assert (count, clips) == (2, 2)
    assert [n.op_type for n in bounded.graph.node][:5] == ["Conv", "Relu", "Min", "Conv", "Relu"]
    np.testing.assert_allclose(_run(bounded, x), original, rtol=1e-4, atol=1e-4 * np.abs(original).max())
    limits = {i.name: numpy_helper.to_array(i) for i in bounded.graph.initializer if i.name.endswith("_bound")}
    assert sorted(limits) == ["a1_bound", "a2_bound"] and all(v.shape == (C, 1, 1) for v in limits.values())
    assert limits["a1_bound"].min() < 6 < limits["a1_bound"].max()  # 6 / s: the stem's wide channels shrank

    aimet, *_ = equalization.equalize(proto, relu6="relu")
    assert [n.op_type for n in aimet.graph.node if n.name in ("a1", "a2")] == ["Relu", "Relu"]
    np.testing.assert_allclose(_run(aimet, x), with_relu, rtol=1e-4, atol=1e-4 * np.abs(with_relu).max())


def test_calibrated_relu6_keeps_the_clip_and_holds_the_channels_that_reach_it():
    proto, x = _separable("Clip"), _inputs()
    maxima = equalization.peaks(proto, [{"x": x[:16]}, {"x": x[16:]}])
    assert sorted(maxima) == ["dw", "stem"] and maxima["stem"].shape == (C,)
    reaching = maxima["stem"] >= 6
    assert 0 < reaching.sum() < C  # the planted wide channels reach the bound, the narrow ones do not
    equalized, count, clips, held = equalization.equalize(proto, relu6="calibrated", maxima=maxima)
    assert (count, clips) == (2, 2) and held == int(reaching.sum() + (maxima["dw"] >= 6).sum())
    assert [n.op_type for n in equalized.graph.node] == [n.op_type for n in proto.graph.node]  # Clip stays
    original = _run(proto, x)  # the calibration inputs: nothing among them is clipped differently
    np.testing.assert_allclose(_run(equalized, x), original, rtol=1e-4, atol=1e-4 * np.abs(original).max())
    old, new = _ranges(proto), _ranges(equalized)
    np.testing.assert_allclose(new["stem"][reaching], old["stem"][reaching], rtol=1e-6)  # held at scale 1
    assert not np.allclose(new["stem"][~reaching], old["stem"][~reaching], rtol=1e-2)  # the others equalised
    with pytest.raises(ValueError, match="maxima"):
        equalization.equalize(proto, relu6="calibrated")


def test_cle_in_a_plan_folds_batch_norm_first_and_helps_per_tensor_int8(tmp_path):
    model = Model.from_proto(_separable(batch_norm=True), name="separable", source="test")
    calibration = CalibrationSet.from_arrays("noise", _inputs(64), input_name="x")
    fresh = _inputs(32, seed=9)
    reference = _run(model.proto, fresh)

    def error(result: Model) -> float:
        return float(np.abs(_run(result.proto, fresh) - reference).mean() / np.abs(reference).mean())

    plain = apply_plan(model, PrecisionPlan("int8", per_channel=False), calibration, progress=False,
                       cache_dir=tmp_path)
    equalized = apply_plan(model, PrecisionPlan("int8", per_channel=False, algorithms=("cle",)), calibration,
                           progress=False, cache_dir=tmp_path)
    steps = {p.key: p.value for p in equalized.proto.metadata_props}[STEPS_KEY].split("|")
    assert steps[:3] == ["prepare", f"cle/sweeps={equalization.SWEEPS}/relu6=calibrated", "ranges/minmax"]
    assert any(n.startswith("cross-layer equalisation: weight ranges of 2 Conv pair(s)") for n in
               precision_notes(equalized))  # BatchNormalization folded by pre-processing: both pairs found
    assert error(equalized) < 0.5 * error(plain)


@pytest.mark.parametrize("plan", [PrecisionPlan("int8", algorithms=("cle", "smoothquant")),
                                  PrecisionPlan("int8", algorithms=("smoothquant", "cle"))])
def test_plans_name_their_algorithms_in_registration_order(plan):
    assert plan.algorithms == ("smoothquant", "cle") and plan.to_json()["algorithms"] == ["smoothquant", "cle"]
