"""The explorer's loading panel, driven as a user would: a path, torchvision:NAME, an uploaded .onnx, an uploaded
.npz calibration set; errors show in the panel and the explorer keeps working."""
from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import onnx
import pytest

pytest.importorskip("ipywidgets")

from tests.conftest import make_tiny_cnn  # noqa: E402
from workbench.ui import Explorer  # noqa: E402


def _upload(widget, name: str, content: bytes) -> None:
    """What the browser sends when a file is picked (ipywidgets 8 FileUpload value)."""
    widget.value = ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
                     "last_modified": datetime.now(timezone.utc)},)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    ex = Explorer("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), runs=2, drift=False, background=False)
    return ex


def test_load_a_model_from_a_path(explorer, tmp_path):
    path = tmp_path / "my-cnn.onnx"
    onnx.save(make_tiny_cnn(), path)
    explorer.loader.path.value = str(path)
    explorer.loader.load.click()
    assert "my-cnn" in explorer.model.options and explorer.model.value == "my-cnn"
    assert explorer.wait().model == "my-cnn"
    assert "Loaded my-cnn" in explorer.loader.message.value and "input" in explorer.loader.message.value


def test_upload_an_onnx_file_and_a_calibration_npz(explorer):
    _upload(explorer.loader.model_upload, "uploaded.onnx", make_tiny_cnn(seed=3).SerializeToString())
    assert explorer.model.value == "uploaded" and explorer.wait().model == "uploaded"
    rng = np.random.default_rng(0)
    _upload(explorer.loader.data_upload, "cal.npz", _npz(input=rng.standard_normal((12, 1, 8, 8)).astype(np.float32)))
    assert "cal.npz" in explorer.calibration.options and explorer.calibration.value == "cal.npz"
    assert "12 samples" in explorer.loader.message.value
    explorer.precision.value = "int8"
    shown = explorer.wait()
    assert shown.precision == "int8" and shown.calibration == "cal.npz"


@pytest.mark.parametrize("action, match", [
    (lambda l: l.load_path("/no/such/model.onnx"), "does not exist"),
    (lambda l: l.load_path(""), "Type a path"),
    (lambda l: l.load_onnx("junk.onnx", b"not a model at all"), "junk.onnx"),
    (lambda l: l.load_calibration("bad.npz", _npz(input=np.zeros((4, 1, 8, 8)))), "dtype float64"),
    (lambda l: l.load_calibration("broken.npz", b"PK\x03\x04 nope"), "not a readable .npz"),
])
def test_errors_show_in_the_panel_and_the_explorer_keeps_working(explorer, action, match):
    before = explorer.model.value
    assert action(explorer.loader) is None
    assert "Could not load" in explorer.loader.message.value and match in explorer.loader.message.value
    assert explorer.model.value == before
    explorer.precision.value = "fp16" if explorer.precision.value != "fp16" else "fp32"
    assert explorer.wait() is not None and explorer.error is None


def test_input_overrides_apply_to_the_loaded_model(explorer, tmp_path):
    from tests.test_inputs import _dynamic_image_model

    path = tmp_path / "det.onnx"
    onnx.save(_dynamic_image_model(), path)
    explorer.loader.inputs.value = "images=1,4,64,96"
    assert explorer.loader.load_path(str(path)) is None  # a fixed axis changed: refused in the panel
    assert "fixes at 3" in explorer.loader.message.value
    explorer.loader.inputs.value = "images=1,3,64,96"
    assert explorer.loader.load_path(str(path)) == "det"
    explorer.precision.value = "fp32"
    assert explorer.wait().model == "det"
    assert explorer.session().eval.arrays["images"].shape[1:] == (3, 64, 96)
    explorer.loader.inputs.value = ""


def test_loading_says_so_at_once_and_clears_an_old_error(explorer, tmp_path):
    assert explorer.loader.load_path("/no/such/model.onnx") is None
    assert "Could not load" in explorer.loader.message.value
    path = tmp_path / "busy-cnn.onnx"
    onnx.save(make_tiny_cnn(seed=5), path)
    shown = []
    explorer.loader.message.observe(lambda change: shown.append(change["new"]), names="value")
    assert explorer.loader.load_path(str(path)) == "busy-cnn"
    assert "Loading" in shown[0] and "workbench-spinner" in shown[0] and "Could not load" not in shown[0]
    assert "Loaded busy-cnn" in shown[-1]
    assert explorer.wait().model == "busy-cnn"
