"""Bundled samples: registry, real accuracy of each model (ONNX Runtime, CPU), calibration sets that fit the model."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from workbench import samples
from workbench.errors import ModelLoadError
from workbench.samples._data import DATA_DIR

BUILTIN = ["digits-cnn", "fashion-cnn", "efficientnet-lite0", "efficientnet-lite0-fashion"]


def predictions(sample, batch: int = 250) -> np.ndarray:
    session = ort.InferenceSession(sample.model.serialized(), providers=["CPUExecutionProvider"])
    x = sample.eval.arrays["input"]
    return np.concatenate([session.run(None, {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def top1(sample) -> float:
    return float((predictions(sample).argmax(1) == sample.eval.labels).mean())


def check_calibration_sets(sample) -> None:
    sets = list(sample.calibration_sets.values())
    assert len(sets) >= 2
    assert "train" in sets[0].name or "photos" in sets[0].name  # the first set is the model's own kind of data
    for cal in sets:
        cal.validate(sample.model.inputs)  # raises CalibrationError on any mismatch
        assert cal.description and cal.size >= 32
    assert len({cal.content_hash for cal in sets}) == len(sets)


def test_registry_names_and_describe_match():
    assert set(BUILTIN) <= set(samples.names())
    assert samples.DEFAULT_SAMPLE in samples.names()
    described = {d["name"]: d for d in samples.describe()}
    assert list(described) == samples.names()
    for name in BUILTIN:
        entry = described[name]
        assert entry["description"] and entry["task"] == "classification"
        assert len(entry["calibration_sets"]) >= 2
        assert entry["inputs"][0]["name"] == "input"


def test_unknown_sample_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="Unknown sample 'digitz'.*digits-cnn"):
        samples.load("digitz")


@pytest.mark.parametrize("name", ["digits-cnn", "fashion-cnn"])
def test_describe_agrees_with_the_loaded_sample(name):
    sample = samples.load(name)
    entry = next(d for d in samples.describe() if d["name"] == name)
    assert [spec.to_json() for spec in sample.model.inputs] == entry["inputs"]
    assert list(sample.calibration_sets) == entry["calibration_sets"]
    assert (sample.eval.labels is not None) == entry["has_labels"]
    assert samples.load(name) is sample  # cached in-process


def test_digits_cnn_accuracy_and_data():
    sample = samples.load("digits-cnn")
    assert sample.eval.size >= 400
    assert top1(sample) >= 0.97
    assert len(sample.class_names) == 10
    check_calibration_sets(sample)
    from sklearn.datasets import load_digits
    raw = load_digits().images[:3]
    x = sample.preprocess(raw)
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def test_fashion_cnn_accuracy_batchnorm_and_data():
    sample = samples.load("fashion-cnn")
    assert sample.eval.size >= 2000
    assert top1(sample) >= 0.88
    assert "BatchNormalization" in {n.op_type for n in sample.model.proto.graph.node}
    assert sample.model.inputs[0].shape == ("batch", 1, 28, 28)
    assert sample.default_calibration == "fashion-train"
    assert {"mnist-digits", "noise"} <= set(sample.calibration_sets)
    check_calibration_sets(sample)
    assert (DATA_DIR / "fashion-mnist-subset.npz").stat().st_size < 5e6


def test_default_sample_loads_through_load_model():
    from workbench import load_model
    assert load_model(samples.DEFAULT_SAMPLE).content_hash == samples.load(samples.DEFAULT_SAMPLE).model.content_hash


# ---- EfficientNet-Lite0: exported once into a temporary cache ----------------------------------------------------
@pytest.fixture(scope="module")
def lite_cache(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    directory = tmp_path_factory.mktemp("workbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(directory))
        from workbench.samples import efficientnet
        yield directory, efficientnet.build_imagenet(), efficientnet.build_fashion()


@pytest.mark.slow
def test_efficientnet_lite0_predicts_the_photos_and_is_cached(lite_cache, monkeypatch):
    directory, sample, _ = lite_cache
    assert sample.model.inputs[0].shape == ("batch", 3, 224, 224)
    assert sample.eval.labels is None and len(sample.class_names) == 1000
    names = list(samples.efficientnet.PHOTOS)
    top = predictions(sample)[::2].argmax(1)  # the centre crops (every second image is its mirror)
    assert top[names.index("chelsea")] in {281, 282, 283, 284, 285}  # a domestic cat class
    assert top[names.index("coffee")] in {504, 967, 968}  # coffee mug / espresso / cup
    check_calibration_sets(sample)
    cached = list(directory.glob("efficientnet-lite0-*.onnx"))
    assert len(cached) == 2  # the ImageNet model and the fashion model
    before = {p: p.stat().st_mtime_ns for p in cached}
    monkeypatch.setenv("WORKBENCH_CACHE", str(directory))
    again = samples.efficientnet.build_imagenet()  # loads from the cache, no re-export
    assert again.model.content_hash == sample.model.content_hash
    assert {p: p.stat().st_mtime_ns for p in directory.glob("efficientnet-lite0-*.onnx")} == before


@pytest.mark.slow
def test_efficientnet_lite0_fashion_accuracy(lite_cache):
    _, _, sample = lite_cache
    assert sample.model.inputs[0].shape == ("batch", 1, 28, 28)
    assert "Resize" in {n.op_type for n in sample.model.proto.graph.node}
    assert sample.eval.size >= 2000
    assert top1(sample) >= 0.80
    check_calibration_sets(sample)


def test_digits_cnn_has_labelled_shifted_eval_data():
    sample = samples.load("digits-cnn")
    shifted = sample.extra_eval["mnist-downscaled"]
    assert shifted.arrays["input"].shape[1:] == (1, 8, 8) and shifted.labels is not None
    session = ort.InferenceSession(sample.model.serialized(), providers=["CPUExecutionProvider"])
    accuracy = float((session.run(None, shifted.arrays)[0].argmax(1) == shifted.labels).mean())
    assert 0.2 < accuracy < top1(sample)  # same task, other handwriting: harder than the model's own test split
