"""Your own data: .npz by input name (with labels), image folders (labels from sub-folders), iterables of batches;
validated before any work, split with a fixed seed, provenance in the results; the CLI's --data."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.conftest import make_tiny_cnn
from workbench.cache import file_sha256
from workbench.cli import main
from workbench.errors import InputSpecError
from workbench.models.spec import TensorSpec
from workbench.session import Workbench
from workbench.userdata import ImagePreprocessing, load_data, split

SPEC = [TensorSpec("input", "float32", ("batch", 1, 8, 8))]


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(make_tiny_cnn(), path)
    return path


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "my.npz"
    np.savez(path, input=rng.standard_normal((20, 1, 8, 8)).astype(np.float32), labels=rng.integers(0, 4, 20))
    return path


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((12, 10, 3)) * 255).astype("uint8")).save(root / cls / f"{i}.png")
    return root


def test_npz_loads_with_labels_and_its_hash(npz):
    data = load_data(npz, SPEC)
    assert data.arrays["input"].shape == (20, 1, 8, 8) and data.labels.shape == (20,)
    assert data.source == {"kind": "user", "format": "npz", "path": str(npz), "sha256": file_sha256(npz),
                           "name": "my.npz"}


def test_split_is_deterministic_and_disjoint(npz):
    data = load_data(npz, SPEC)
    cal, ev = split(data)
    cal2, ev2 = split(load_data(npz, SPEC))
    assert cal.size + ev.size == 20 and ev.size == 10
    np.testing.assert_array_equal(ev.arrays["input"], ev2.arrays["input"])
    rows = {arr.tobytes() for arr in data.arrays["input"]}
    assert {a.tobytes() for a in cal.arrays["input"]} | {a.tobytes() for a in ev.arrays["input"]} == rows
    assert not {a.tobytes() for a in cal.arrays["input"]} & {a.tobytes() for a in ev.arrays["input"]}


def test_image_folder_labels_from_subfolders_and_stated_preprocessing(images):
    data = load_data(images, SPEC, preprocessing=ImagePreprocessing.parse("mean=0.5,std=0.25"))
    assert data.arrays["input"].shape == (6, 1, 8, 8) and data.arrays["input"].dtype == np.float32
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.class_names == ["cat", "dog"]
    assert data.source["preprocessing"] == "RGB, bilinear resize to 8x8, /255, mean [0.5], std [0.25]"
    pixel = np.asarray(Image.open(images / "cat" / "0.png").convert("L").resize((8, 8), Image.Resampling.BILINEAR),
                       np.float32)
    np.testing.assert_allclose(data.arrays["input"][0, 0], (pixel / 255 - 0.5) / 0.25, rtol=1e-6)


def test_nhwc_rgb_images_keep_the_model_layout_and_bgr_order(images):
    spec = [TensorSpec("x", "float32", ("N", "H", "W", 3))]
    rgb = load_data(images, spec, preprocessing=ImagePreprocessing.parse("size=16x20"))
    bgr = load_data(images, spec, preprocessing=ImagePreprocessing.parse("size=16x20,order=bgr"))
    assert rgb.arrays["x"].shape == (6, 16, 20, 3)
    np.testing.assert_array_equal(rgb.arrays["x"][..., ::-1], bgr.arrays["x"])


def test_iterable_of_batches_such_as_a_dataloader():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    x = torch.randn(10, 1, 8, 8)
    y = torch.arange(10) % 4
    data = load_data(DataLoader(TensorDataset(x, y), batch_size=4), SPEC)
    assert data.arrays["input"].shape == (10, 1, 8, 8) and data.labels.tolist() == (y.numpy()).tolist()
    assert data.source["format"] == "iterable"


@pytest.mark.parametrize("arrays, match", [
    ({"input": np.zeros((4, 1, 8, 8), np.float64)}, "input 'input' has dtype float64, the model expects float32"),
    ({"input": np.zeros((4, 1, 4, 4), np.float32)}, r"each sample must be \[1, 8, 8\]"),
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "the model expects \\['input'\\]"),
    ({"input": np.full((4, 1, 8, 8), np.nan, np.float32)}, "input 'input' holds 256 NaN or Inf"),
    ({"input": np.zeros((0, 1, 8, 8), np.float32)}, "hold no samples"),
    ({"input": np.zeros((4, 1, 8, 8), np.float32), "labels": np.zeros(3, np.int64)}, "one integer per sample"),
])
def test_bad_data_is_rejected_naming_the_input_and_what_was_expected(arrays, match):
    with pytest.raises(InputSpecError, match=match):
        load_data(arrays, SPEC)


def test_bad_files_are_rejected(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    (tmp_path / "empty").mkdir()
    for path, match in [(tmp_path / "missing.npz", "does not exist"), (tmp_path / "notes.txt", "neither an .npz"),
                        (tmp_path / "broken.npz", "not a readable .npz"), (tmp_path / "empty", "holds no images")]:
        with pytest.raises(InputSpecError, match=match):
            load_data(path, SPEC)


def test_session_uses_the_data_and_results_say_where_it_came_from(model_path, npz, tmp_path):
    wb = Workbench(str(model_path), cache_dir=tmp_path / "cache", progress=False, data=npz)
    assert not wb.synthetic and wb.eval.size == 10 and wb.eval.labels is not None
    result = wb.run("int8", batch=4, runs=1, drift=False, profile=False)
    assert result.accuracy.top1 is not None and not result.synthetic_data
    assert result.data_source["eval"]["sha256"] == file_sha256(npz)
    assert result.data_source["eval"]["part"] == "evaluation"
    assert result.data_source["calibration"]["part"] == "calibration"
    assert result.calibration == "my.npz (calibration)"


def test_separate_calibration_and_eval_data(model_path, npz, images, tmp_path):
    wb = Workbench(str(model_path), cache_dir=tmp_path / "cache", progress=False, calibration_data=images,
                   eval_data=npz)
    assert wb.eval.size == 20 and wb.calibration_sets[next(iter(wb.calibration_sets))].size == 6
    result = wb.run("int8", batch=4, runs=1, drift=False, profile=False)
    assert result.data_source["calibration"]["format"] == "images"
    assert result.data_source["eval"]["format"] == "npz"


@pytest.mark.parametrize("kind", ["npz", "images"])
def test_cli_report_with_data(kind, model_path, npz, images, tmp_path, capsys):
    source = npz if kind == "npz" else images
    out = tmp_path / "r.json"
    code = main(["report", str(model_path), "--data", str(source), "--quiet", "--runs", "2", "--no-drift",
                 "--json", str(out), "--out", str(tmp_path / "r.html"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    payload = json.loads(out.read_text())
    assert [r["precision"] for r in payload["results"]] == ["fp32", "fp16", "int8"]
    for result in payload["results"]:
        assert result["synthetic_data"] is False and result["data_source"]["eval"]["kind"] == "user"
        assert result["accuracy"]["top1"] is not None and result["accuracy"]["outputs"][0]["name"] == "probs"
    assert "synthetic" not in capsys.readouterr().out


def test_cli_bad_data_is_one_clear_error(model_path, tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 1, 8, 8)))
    code = main(["report", str(model_path), "--data", str(bad), "--quiet", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "input 'input' has dtype float64, the model expects float32" in err
    assert "Traceback" not in err


def test_cli_input_override(model_path, tmp_path, capsys):
    code = main(["report", str(model_path), "--input", "input=1,1,9,8", "--quiet", "--precision", "fp32",
                 "--cache-dir", str(tmp_path / "c"), "--json", str(tmp_path / "r.json")])
    assert code == 2 and "changes axis 2, which the model fixes at 8" in capsys.readouterr().err
