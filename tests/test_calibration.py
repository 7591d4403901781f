"""Calibration sets: constructors (arrays, iterables of batches, a torch DataLoader), hashing, validation."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.calibration import CalibrationSet
from workbench.errors import CalibrationError
from workbench.models.spec import TensorSpec

SPEC = [TensorSpec("input", "float32", ("batch", 1, 8, 8))]


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def test_from_torch_dataloader_collects_up_to_the_limit():
    torch = pytest.importorskip("torch")
    data = torch.utils.data.TensorDataset(torch.from_numpy(_images(100)), torch.zeros(100, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)
    cal = CalibrationSet.from_batches("loader", loader, input_names=["input"], limit=40)
    assert cal.size == 40 and cal.arrays["input"].dtype == np.float32
    np.testing.assert_array_equal(cal.arrays["input"], _images(100)[:40])
    cal.validate(SPEC)


def test_from_batches_accepts_dicts_and_bare_arrays():
    images = _images(50)
    from_dicts = CalibrationSet.from_batches("d", ({"input": images[i:i + 10]} for i in range(0, 50, 10)),
                                             input_names=["input"], limit=None)
    from_arrays = CalibrationSet.from_batches("a", (images[i:i + 10] for i in range(0, 50, 10)),
                                              input_names=["input"], limit=None)
    assert from_dicts.size == from_arrays.size == 50
    assert from_dicts.content_hash == from_arrays.content_hash  # same data, same hash, whatever the name


def test_hash_changes_with_the_data_and_empty_iterables_are_rejected():
    a = CalibrationSet.from_arrays("a", _images(8), input_name="input")
    b = CalibrationSet.from_arrays("a", _images(8, seed=1), input_name="input")
    assert a.content_hash != b.content_hash
    with pytest.raises(CalibrationError, match="no batches"):
        CalibrationSet.from_batches("empty", iter(()), input_names=["input"])


def test_synthetic_sets_follow_the_specs_and_say_so():
    cal = CalibrationSet.synthetic_for(SPEC, size=12)
    assert cal.synthetic and cal.arrays["input"].shape == (12, 1, 8, 8) and "not real data" in cal.description
    cal.validate(SPEC)


@pytest.mark.parametrize("arrays, match", [
    ({"input": np.zeros((4, 1, 8, 8), np.float64)}, "dtype float64"),
    ({"input": np.zeros((4, 1, 4, 4), np.float32)}, "sample shape"),
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "Rename the arrays"),
    ({"input": np.full((4, 1, 8, 8), np.inf, np.float32)}, "NaN or Inf"),
])
def test_validation_names_the_problem_and_the_fix(arrays, match):
    with pytest.raises(CalibrationError, match=match):
        CalibrationSet("bad", arrays).validate(SPEC)
