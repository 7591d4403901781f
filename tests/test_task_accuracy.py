"""Task-aware accuracy: each metric checked against an independent computation, and planted errors that each metric
must see (a shifted box, a flipped pixel block, a swapped label, a rotated embedding, a changed token)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from workbench.errors import InputSpecError
from workbench.measure import measure_accuracy
from workbench.measure.accuracy import infer_task
from workbench.results import AccuracyStats, RunResult
from workbench.schema import check_run_json


# ---- independent references -----------------------------------------------------------------------------------
def _iou(a, b) -> float:
    """IoU of two boxes (x1, y1, x2, y2), written out."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matched_rate_loop(variant, reference):
    """Matched-box rate by plain loops: per sample, boxes in score order each take the free reference box of their
    class with the highest IoU >= 0.5; matched pairs / the larger box count, summed over samples."""
    matched = larger = 0
    for (boxes, scores, classes), (ref_boxes, _, ref_classes) in zip(variant, reference):
        free = [True] * len(ref_boxes)
        for i in sorted(range(len(boxes)), key=lambda k: -scores[k]):
            best, best_iou = None, 0.5
            for j in range(len(ref_boxes)):
                if free[j] and classes[i] == ref_classes[j]:
                    iou = _iou(boxes[i], ref_boxes[j])
                    if iou >= best_iou and (best is None or iou > best_iou):
                        best, best_iou = j, iou
            if best is not None:
                free[best] = False
                matched += 1
        larger += max(len(boxes), len(ref_boxes))
    return matched / larger


def _mean_iou_numpy(pred, truth):
    ious = []
    for c in np.union1d(np.unique(pred), np.unique(truth)):
        inter = np.sum((pred == c) & (truth == c))
        union = np.sum((pred == c) | (truth == c))
        ious.append(inter / union)
    return float(np.mean(ious))


def _detections(seed: int, samples: int = 6):
    """Per sample: boxes [N, 4] (N varies, 0 included), scores [N], classes [N]."""
    rng = np.random.default_rng(seed)
    found = []
    for i in range(samples):
        n = int(rng.integers(0, 7)) if i else 5
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(10, 60, (n, 2))
        found.append((np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(0.3, 1, n).astype(np.float32),
                      rng.integers(0, 3, n).astype(np.int64)))
    return found


# ---- detection ----------------------------------------------------------------------------------------------------
def test_detection_batch1_layout_compares_every_box_and_a_shifted_box_fails():
    reference = _detections(0)
    variant = [(b.copy(), s.copy(), c.copy()) for b, s, c in reference]
    variant[0][0][2] += 40.0  # a shifted box: IoU with its twin far below 0.5
    variant[0][0][4, 0] += 3.0  # a slightly moved box: still matched
    variant[1] = (variant[1][0][:-1], variant[1][1][:-1], variant[1][2][:-1]) if len(variant[1][0]) else variant[1]
    names = ["boxes", "scores", "labels"]

    def as_outputs(dets):  # NMS outputs of a fixed-batch-1 model: one whole array per sample
        return [[d[k] for d in dets] for k in range(3)]

    stats = measure_accuracy(as_outputs(variant), as_outputs(reference), output_names=names, samples=6)
    boxes = stats.outputs[0]
    assert [o.task for o in stats.outputs] == ["detection"] * 3
    expected = _matched_rate_loop(variant, reference)
    assert expected < 1.0
    assert boxes.metrics["matched_box_rate"] == pytest.approx(expected)
    total = sum(len(b) for b, _, _ in reference)
    assert boxes.metrics["matched_box_rate"] < (total - 0.5) / total  # the shifted box counts, not the first row only
    assert boxes.metrics["map50"] < 1.0
    assert stats.headline_metric == {"name": "matched_box_rate", "output": "boxes", "value": pytest.approx(expected)}
    assert stats.top1 is None and stats.top1_agreement is None  # nothing here is class scores
    same = measure_accuracy(as_outputs(reference), as_outputs(reference), output_names=names, samples=6)
    assert same.outputs[0].metrics["matched_box_rate"] == 1.0 and same.outputs[0].metrics["map50"] == 1.0


def test_detection_a_changed_class_unmatches_and_padded_batch_layout_is_read_per_sample():
    reference = _detections(1)
    variant = [(b.copy(), s.copy(), c.copy()) for b, s, c in reference]
    variant[0][2][1] = (variant[0][2][1] + 1) % 3  # same box, other class

    def padded(dets, width=8):  # TF-style [samples, max boxes, 4] with zero rows as padding
        boxes = np.zeros((len(dets), width, 4), np.float32)
        scores = np.zeros((len(dets), width), np.float32)
        classes = np.zeros((len(dets), width), np.int64)
        for i, (b, s, c) in enumerate(dets):
            boxes[i, :len(b)], scores[i, :len(b)], classes[i, :len(b)] = b, s, c
        return [boxes, scores, classes]

    stats = measure_accuracy(padded(variant), padded(reference), output_names=["detection_boxes",
                                                                               "detection_scores",
                                                                               "detection_classes"])
    assert stats.outputs[0].metrics["matched_box_rate"] == pytest.approx(_matched_rate_loop(variant, reference))
    assert stats.outputs[0].metrics["matched_box_rate"] < 1.0
    assert stats.outputs[0].metrics["box_iou"] == pytest.approx(1.0)  # the matched ones are identical


def test_detection_against_labelled_boxes():
    reference = _detections(2, samples=3)
    labels = [{"boxes": b, "classes": c} for b, _, c in reference]
    outputs = [[d[k] for d in reference] for k in range(3)]
    stats = measure_accuracy(outputs, outputs, labels, output_names=["boxes", "scores", "labels"], samples=3)
    assert stats.outputs[0].metrics["map50_labels"] == pytest.approx(1.0)
    assert stats.headline_metric["name"] == "map50_labels"


# ---- segmentation -------------------------------------------------------------------------------------------------
def test_segmentation_flipped_block_matches_numpy_mean_iou():
    rng = np.random.default_rng(3)
    reference = rng.standard_normal((4, 5, 16, 16)).astype(np.float32)
    variant = reference.copy()
    block = variant[1, :, 2:10, 3:9]
    variant[1, :, 2:10, 3:9] = np.roll(block, 1, axis=0)  # flip the winning class of a pixel block
    stats = measure_accuracy([variant], [reference], output_names=["out"], image_sizes=[(16, 16)])
    out = stats.outputs[0]
    assert out.task == "segmentation"
    pred, truth = variant.argmax(1), reference.argmax(1)
    assert out.metrics["pixel_agreement"] == pytest.approx(np.mean(pred == truth))
    assert out.metrics["pixel_agreement"] == pytest.approx(1 - 48 / (4 * 256))
    assert out.metrics["mean_iou"] == pytest.approx(_mean_iou_numpy(pred, truth))
    assert out.metrics["mean_iou"] < 0.95
    assert stats.top1_agreement is None  # the old argmax over a flattened map: meaningless, not reported
    labels = truth.copy()
    labels[0, 0, :4] = 255  # ignored
    labelled = measure_accuracy([variant], [reference], labels, output_names=["out"], image_sizes=[(16, 16)])
    keep = labels != 255
    assert labelled.outputs[0].metrics["pixel_accuracy"] == pytest.approx(np.mean(pred[keep] == labels[keep]))
    assert labelled.outputs[0].metrics["mean_iou_labels"] == pytest.approx(_mean_iou_numpy(pred[keep], labels[keep]))
    assert labelled.headline_metric["name"] == "mean_iou_labels"


def test_segmentation_that_matches_fp32_to_1e5_is_not_zero_agreement():
    """The issue's model: FP16 matches FP32 to 1e-5, yet the flattened argmax gave 0 % agreement."""
    rng = np.random.default_rng(4)
    reference = rng.standard_normal((3, 21, 32, 32)).astype(np.float32)
    variant = reference + rng.uniform(-1e-5, 1e-5, reference.shape).astype(np.float32)
    stats = measure_accuracy([variant], [reference], output_names=["out"], image_sizes=[(32, 32)])
    assert stats.outputs[0].metrics["pixel_agreement"] > 0.999
    assert stats.headline_metric["name"] == "mean_iou" and stats.headline_metric["value"] > 0.99


# ---- labels, classification ---------------------------------------------------------------------------------------
def test_int_label_output_is_compared_as_labels_and_a_swapped_label_fails():
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    reference_label = labels.copy()
    variant_label = labels.copy()
    variant_label[[0, 1]] = variant_label[[1, 0]]  # a swapped label
    probabilities = np.eye(10, dtype=np.float32)[labels]
    stats = measure_accuracy([variant_label, probabilities], [reference_label, probabilities], labels,
                             output_names=["label", "probabilities"])
    label = stats.outputs[0]
    assert label.task == "label" and stats.outputs[1].task == "classification"
    assert label.metrics == {"top1": pytest.approx(6 / 8), "agreement": pytest.approx(6 / 8)}
    assert label.cosine is None  # a cosine of labels means nothing
    assert stats.top1 == pytest.approx(6 / 8)  # the label output's, not the share of class 0
    assert stats.headline_metric == {"name": "top1", "output": "label", "value": pytest.approx(0.75)}


def test_class_scores_of_a_fixed_batch_model_kept_per_sample_still_score():
    """[1, classes] per run (a fixed-batch-1 model whose output axis is named): joined, not n/a."""
    reference = [np.array([[0.9, 0.1]]), np.array([[0.2, 0.8]])]
    variant = [np.array([[0.9, 0.1]]), np.array([[0.6, 0.4]])]
    stats = measure_accuracy([variant], [reference], np.array([0, 1]), output_names=["logits"], samples=2)
    assert stats.top1 == pytest.approx(0.5) and stats.top1_agreement == pytest.approx(0.5)


def test_non_tensor_outputs_become_arrays():
    from workbench.models.spec import TensorSpec

    zipmap = TensorSpec("p", "float32", (None, 3), "sequence_of_maps", ("b", "a", "c"))
    matrix = zipmap.as_array([{"a": 0.1, "b": 0.7, "c": 0.2}, {"a": 0.5, "b": 0.2, "c": 0.3}])
    np.testing.assert_allclose(matrix, [[0.7, 0.1, 0.2], [0.2, 0.5, 0.3]])  # the ZipMap's class order
    sequence = TensorSpec("s", "float32", (), "sequence")
    assert sequence.as_array([np.ones(2), np.zeros(2)]).shape == (2, 2)
    assert isinstance(sequence.as_array([np.ones(2), np.zeros(3)]), list)  # kept per item when shapes differ
    strings = TensorSpec("label", "object", (None,)).as_array(np.array(["cat", "dog"], dtype=object))
    assert strings.dtype.kind == "U"  # stored without pickles, compared as labels
    seq_type = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    spec = TensorSpec.from_value_info(helper.make_value_info("s", seq_type))
    assert (spec.kind, spec.dtype) == ("sequence", "float32")


def test_classification_top1_and_agreement():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    variant = np.array([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4]], np.float32)
    stats = measure_accuracy([variant], [reference], np.array([0, 1, 1]), output_names=["logits"])
    assert stats.outputs[0].metrics["top1"] == pytest.approx(1 / 3)
    assert stats.outputs[0].metrics["agreement"] == pytest.approx(2 / 3)


# ---- embeddings, sequences ----------------------------------------------------------------------------------------
def test_rotated_embedding_lowers_cosine_by_the_angle():
    rng = np.random.default_rng(5)
    reference = rng.standard_normal((4, 8))
    variant = reference.copy()
    theta = 0.5
    x, y = reference[2, 0], reference[2, 1]
    variant[2, 0], variant[2, 1] = x * math.cos(theta) - y * math.sin(theta), x * math.sin(theta) + y * math.cos(theta)
    stats = measure_accuracy([variant], [reference], output_names=["sentence_embedding"])
    out = stats.outputs[0]
    assert out.task == "embedding" and stats.top1_agreement is None
    rotated = reference[2] @ variant[2] / np.linalg.norm(reference[2]) ** 2
    assert out.metrics["cosine"] == pytest.approx((3 + rotated) / 4)
    assert out.metrics["cosine"] < 1.0
    assert out.metrics["relative_l2"] == pytest.approx(np.linalg.norm(variant - reference) / np.linalg.norm(reference))
    assert out.metrics["max_abs_diff"] == pytest.approx(np.abs(variant - reference).max())
    assert stats.headline_metric["name"] == "cosine"


def test_sequence_token_agreement_sees_one_changed_token():
    rng = np.random.default_rng(6)
    reference = rng.standard_normal((2, 5, 50)).astype(np.float32)
    variant = reference.copy()
    variant[1, 3, reference[1, 3].argmax()] -= 100.0  # another token wins at one position
    stats = measure_accuracy([variant], [reference], output_names=["logits"])
    assert stats.outputs[0].task == "sequence"
    assert stats.outputs[0].metrics["token_agreement"] == pytest.approx(9 / 10)
    assert stats.headline_metric["name"] == "token_agreement"


# ---- inference, declaration, n/a, custom metrics ------------------------------------------------------------------
@pytest.mark.parametrize(("name", "value", "task"), [
    ("output_label", np.zeros(4, np.int64), "label"),
    ("probabilities", np.zeros((4, 10), np.float32), "classification"),
    ("last_hidden_state", np.zeros((4, 7, 32), np.float32), "embedding"),
    ("present.0.key", np.zeros((4, 2, 7, 8), np.float32), "regression"),
    ("logits", np.zeros((4, 7, 100), np.float32), "sequence"),
    ("boxes", [np.zeros((3, 4), np.float32)], "detection"),
    ("out", np.zeros((4, 21, 64, 64), np.float32), "segmentation"),
    ("feature_map", np.zeros((4, 84, 8400), np.float32), "regression"),
])
def test_tasks_inferred_from_names_dtypes_and_shapes(name, value, task):
    assert infer_task(name, value, image_sizes=[(64, 64)]) == task


def test_declared_tasks_win_and_bad_declarations_are_clear_errors():
    values = np.random.default_rng(7).standard_normal((4, 6)).astype(np.float32)
    declared = measure_accuracy([values], [values], output_names=["output"], tasks={"output": "embedding"})
    assert declared.outputs[0].task == "embedding" and declared.top1_agreement is None
    assert measure_accuracy([values], [values], output_names=["output"], tasks="regression").outputs[0].task \
        == "regression"
    with pytest.raises(InputSpecError, match="choose one of"):
        measure_accuracy([values], [values], output_names=["output"], tasks={"output": "boxes"})
    with pytest.raises(InputSpecError, match="model's outputs are"):
        measure_accuracy([values], [values], output_names=["output"], tasks={"nope": "label"})


def test_a_metric_that_cannot_apply_is_none_and_never_decides_the_headline():
    boxes = np.random.default_rng(8).standard_normal((4, 5)).astype(np.float32)  # declared detection, no box layout
    stats = measure_accuracy([boxes], [boxes], output_names=["x"], tasks={"x": "detection"})
    assert stats.outputs[0].metrics == {} and stats.outputs[0].note and stats.headline_metric is None


def test_custom_metric_is_named_and_decides_the_headline():
    reference = np.array([[1.0, 2.0], [3.0, 4.0]])
    variant = reference + 0.5

    def mean_shift(fp32_outputs, variant_outputs, labels):
        return 1.0 - float(np.mean(np.abs(variant_outputs[0] - fp32_outputs[0])))

    stats = measure_accuracy([variant], [reference], output_names=["y"], metric=mean_shift)
    assert stats.headline_metric == {"name": "mean_shift", "output": None, "value": pytest.approx(0.5)}
    assert stats.custom_metric["name"] == "mean_shift"
    with pytest.raises(InputSpecError, match="raised ZeroDivisionError"):
        measure_accuracy([variant], [reference], metric=lambda f, v, l: 1 / 0)


def test_old_result_json_still_loads_and_new_keys_round_trip():
    old = {"top1": 0.5, "top1_agreement": 0.75, "cosine": 0.99, "max_abs_diff": 0.1, "samples": 4,
           "outputs": [{"name": "y", "shape": [4, 3], "cosine": 0.99, "max_abs_diff": 0.1, "top1_agreement": 0.75}]}
    stats = AccuracyStats.from_json(old)
    assert stats.outputs[0].task is None and stats.headline == ("top1", 0.5, None)
    values = np.eye(3, dtype=np.float32)
    new = measure_accuracy([values], [values], np.arange(3), output_names=["probabilities"])
    again = AccuracyStats.from_json(json.loads(json.dumps(new.to_json())))
    assert again == new and again.headline == ("top1", 1.0, "probabilities")


# ---- end to end: exported scikit-learn models, ZipMap, a fixed-batch-1 NMS-like model -----------------------------
@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x[:1000], y[:1000])
    folder = tmp_path_factory.mktemp("digits")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zipmap = to_onnx(pipe, x[:1])
        plain = to_onnx(pipe, x[:1], options={id(pipe.steps[-1][1]): {"zipmap": False}})
    onnx.save(zipmap, folder / "zipmap.onnx")
    onnx.save(plain, folder / "plain.onnx")
    np.savez(folder / "eval.npz", X=x[1000:], labels=y[1000:])
    return folder, float(pipe.score(x[1000:], y[1000:]))


@pytest.mark.parametrize("model", ["zipmap", "plain"])
def test_scikit_learn_top1_equals_real_accuracy(digits_models, model, tmp_path):
    from workbench import Workbench, load_model

    folder, sklearn_accuracy = digits_models
    spec = load_model(folder / f"{model}.onnx").outputs
    assert spec[0].dtype == "int64"
    if model == "zipmap":
        assert spec[1].kind == "sequence_of_maps" and spec[1].classes == tuple(range(10))
    wb = Workbench(folder / f"{model}.onnx", eval_data=folder / "eval.npz", cache_dir=tmp_path, progress=False)
    result = wb.run("fp32", runs=3, profile=False, drift=False)
    accuracy = result.accuracy
    assert abs(accuracy.top1 - sklearn_accuracy) * 100 < 0.1
    assert [o.task for o in accuracy.outputs] == ["label", "classification"]
    assert accuracy.outputs[1].metrics["top1"] == pytest.approx(accuracy.top1, abs=1e-3)  # probabilities agree
    assert accuracy.headline_metric["name"] == "top1" and accuracy.headline_metric["output"] == spec[0].name


def test_cli_report_writes_tasks_metrics_and_headline_metric(digits_models, tmp_path):
    from workbench.cli import main

    folder, sklearn_accuracy = digits_models
    out = tmp_path / "r.json"
    code = main(["report", str(folder / "plain.onnx"), "--precision", "fp32", "--precision", "fp16", "--runs", "3",
                 "--no-drift", "--quiet", "--eval-data", str(folder / "eval.npz"), "--json", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--task", "probabilities=classification"])
    assert code == 0
    payload = json.loads(out.read_text())
    for result in payload["results"]:
        check_run_json(result)
        accuracy = result["accuracy"]
        assert [o["task"] for o in accuracy["outputs"]] == ["label", "classification"]
        assert set(accuracy["outputs"][1]["metrics"]) >= {"top1", "agreement", "cosine", "relative_l2"}
        assert accuracy["headline_metric"]["output"] == "label"
        assert abs(accuracy["headline_metric"]["value"] - sklearn_accuracy) * 100 < 0.2  # fp16 may move a sample
    assert "top-1 accuracy" in payload["headline"] and "(label)" in payload["headline"]
    assert payload["summary"][0]["headline_metric"] == "top1"


def _nms_like_model(path):
    """Fixed batch 1: every pixel of x above 0.5 gives a box [N, 4] (N varies), its score and a class."""
    nodes = [
        helper.make_node("Greater", ["x", "half"], ["mask"]),
        helper.make_node("NonZero", ["mask"], ["where"]),  # [4, N]
        helper.make_node("Transpose", ["where"], ["where_t"], perm=[1, 0]),  # [N, 4]
        helper.make_node("GatherND", ["x", "where_t"], ["scores"]),
        helper.make_node("Gather", ["where", "yx"], ["yx_idx"], axis=0),  # [2, N]
        helper.make_node("Transpose", ["yx_idx"], ["yx_t"], perm=[1, 0]),
        helper.make_node("Cast", ["yx_t"], ["yx_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["yx_f", "eight"], ["corner"]),
        helper.make_node("Add", ["corner", "eight"], ["far"]),
        helper.make_node("Concat", ["corner", "far"], ["boxes"], axis=1),
        helper.make_node("Greater", ["scores", "high"], ["strong"]),
        helper.make_node("Cast", ["strong"], ["labels"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes, "nms_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["num_boxes", 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["num_boxes"]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["num_boxes"])],
        [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("high", TensorProto.FLOAT, [],
                                                                                       [0.8]),
         helper.make_tensor("eight", TensorProto.FLOAT, [], [8.0]), helper.make_tensor("yx", TensorProto.INT64, [2],
                                                                                        [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_fixed_batch1_detection_compares_every_row_of_every_sample(tmp_path):
    from workbench import Workbench

    _nms_like_model(tmp_path / "nms.onnx")
    x = np.random.default_rng(9).uniform(0, 1, (12, 1, 6, 6)).astype(np.float32)
    wb = Workbench(tmp_path / "nms.onnx", eval_data={"x": x}, cache_dir=tmp_path / "cache", progress=False)
    fp32 = wb.run("fp32", batch=4, runs=3, profile=False, drift=False)
    fp16 = wb.run("fp16", batch=4, runs=3, profile=False, drift=False, keep_fp32=["Greater"])
    boxes = wb.predict(fp32, {"x": x})[0]
    assert isinstance(boxes, list) and len(boxes) == 12
    assert [len(b) for b in boxes] == [int(np.sum(s > 0.5)) for s in x]  # every row, not the first one only
    assert fp32.accuracy.outputs[0].task == "detection"
    assert fp32.accuracy.outputs[0].metrics["matched_box_rate"] == 1.0
    variant = wb.predict(fp16, {"x": x})
    reference = wb.predict(fp32, {"x": x})
    per_sample = [[(variant[0][i], variant[1][i], variant[2][i]) for i in range(12)],
                  [(reference[0][i], reference[1][i], reference[2][i]) for i in range(12)]]
    assert fp16.accuracy.outputs[0].metrics["matched_box_rate"] == pytest.approx(_matched_rate_loop(*per_sample))
    assert fp16.accuracy.headline_metric["name"] == "matched_box_rate"


def test_synthetic_strings_for_a_string_input(tmp_path):
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from workbench import Workbench

    words = np.array(["red", "green", "blue", "cyan"])
    x = words[np.random.default_rng(10).integers(0, 4, (120, 1))]
    y = (x[:, 0] == "red").astype(int) + 2 * (x[:, 0] == "blue")
    pipe = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(to_onnx(pipe, initial_types=[("text", StringTensorType([None, 1]))]), tmp_path / "words.onnx")
    wb = Workbench(tmp_path / "words.onnx", cache_dir=tmp_path / "cache", progress=False)
    drawn = wb.eval.arrays["text"]
    assert drawn.dtype == object and set(drawn.ravel()) <= set(words)  # the encoder's categories, not "Unknown"
    assert wb.run("fp32", runs=3, profile=False, drift=False).accuracy.top1_agreement == 1.0
    mine = Workbench(tmp_path / "words.onnx", eval_data={"text": x, "labels": y}, cache_dir=tmp_path / "cache",
                     progress=False)
    assert mine.run("fp32", runs=3, profile=False, drift=False).accuracy.top1 == pytest.approx(pipe.score(x, y))


def test_run_result_json_with_tasks_passes_the_schema(digits_models, tmp_path):
    from workbench import Workbench

    folder, _ = digits_models
    wb = Workbench(folder / "zipmap.onnx", eval_data=folder / "eval.npz", cache_dir=tmp_path, progress=False)
    result = wb.run("fp32", runs=3, profile=False, drift=False)
    data = json.loads(json.dumps(result.to_json()))
    check_run_json(data)
    assert RunResult.from_json(data).accuracy == result.accuracy


def test_lightgbm_via_onnxmltools_zipmap_top1_equals_real_accuracy(tmp_path):
    lightgbm = pytest.importorskip("lightgbm")
    onnxmltools = pytest.importorskip("onnxmltools")
    from onnxmltools.convert.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits

    from workbench import Workbench, load_model

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    model = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=8, verbose=-1).fit(x[:1000], y[:1000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, 64]))],
                                               target_opset=15), tmp_path / "lgbm.onnx")
    assert load_model(tmp_path / "lgbm.onnx").outputs[1].kind == "sequence_of_maps"
    wb = Workbench(tmp_path / "lgbm.onnx", eval_data={"input": x[1000:], "labels": y[1000:]},
                   cache_dir=tmp_path / "cache", progress=False)
    accuracy = wb.run("fp32", runs=3, profile=False, drift=False).accuracy
    assert abs(accuracy.top1 - model.score(x[1000:], y[1000:])) * 100 < 0.1
    assert accuracy.outputs[1].task == "classification"


def test_session_metric_callable_is_named_in_results_and_decides_the_headline(digits_models, tmp_path):
    from workbench import Workbench
    from workbench.report import headline

    folder, _ = digits_models

    def share_of_confident(fp32_outputs, variant_outputs, labels):
        return float(np.mean(np.max(variant_outputs[1], axis=1) > 0.5))

    wb = Workbench(folder / "plain.onnx", eval_data=folder / "eval.npz", cache_dir=tmp_path, progress=False,
                   metric=share_of_confident)
    result = wb.run("fp32", runs=3, profile=False, drift=False)
    assert result.to_json()["accuracy"]["headline_metric"]["name"] == "share_of_confident"
    assert 0.5 < result.accuracy.headline_metric["value"] <= 1.0
    assert "share_of_confident" in headline([result])
    plain = Workbench(folder / "plain.onnx", eval_data=folder / "eval.npz", cache_dir=tmp_path, progress=False)
    assert plain.run("fp32", runs=3, profile=False, drift=False).accuracy.custom_metric is None  # not the cached one
    with pytest.raises(InputSpecError, match="not callable"):
        Workbench(folder / "plain.onnx", eval_data=folder / "eval.npz", cache_dir=tmp_path, metric="top1")
