"""Calibration sets: named, hashed collections of model inputs, validated before any work starts."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import CalibrationError
from .limits import array_bytes, check_memory
from .models.spec import TensorSpec

DEFAULT_SIZE = 256


@dataclass
class CalibrationSet:
    """Model inputs (name -> array with samples on axis 0), a description and a content hash.

    `synthetic` marks inputs generated from the input specs rather than real data.
    """

    name: str
    arrays: dict[str, np.ndarray]
    description: str = ""
    synthetic: bool = False
    _hash: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.arrays:
            raise CalibrationError(f"Calibration set {self.name!r} has no inputs: give at least one named array.")
        scalars = [name for name, arr in self.arrays.items() if np.ndim(arr) == 0]
        if scalars:
            raise CalibrationError(f"Calibration set {self.name!r}: input {scalars[0]!r} is a scalar (shape []), with "
                                   "no sample axis: inputs hold samples on axis 0 (models with scalar inputs cannot be "
                                   "measured in batches).")
        sizes = {name: len(arr) for name, arr in self.arrays.items()}
        if len(set(sizes.values())) != 1:
            raise CalibrationError(f"Calibration set {self.name!r} has inputs of different lengths {sizes}: "
                                   "every input needs the same number of samples.")
        if self.size == 0:
            raise CalibrationError(f"Calibration set {self.name!r} is empty: give at least one sample.")

    @property
    def size(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def content_hash(self) -> str:
        if self._hash is None:
            digest = hashlib.sha256()
            for name in sorted(self.arrays):
                arr = np.ascontiguousarray(self.arrays[name])
                digest.update(name.encode())
                digest.update(str(arr.dtype).encode())
                digest.update(str(arr.shape).encode())
                digest.update(arr.tobytes())
            self._hash = digest.hexdigest()
        return self._hash

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, name: str, arrays: Mapping[str, np.ndarray] | np.ndarray, *, input_name: str | None = None,
                    description: str = "", limit: int | None = DEFAULT_SIZE, synthetic: bool = False) -> "CalibrationSet":
        """From one array (needs `input_name`) or a mapping of input name -> array; keeps the first `limit`."""
        if not isinstance(arrays, Mapping):
            if input_name is None:
                raise CalibrationError(f"Calibration set {name!r}: a bare {type(arrays).__name__} needs input_name= "
                                       "(the model input it feeds), or pass a mapping of input name -> array.")
            arrays = {input_name: arrays}
        picked = {}
        for key, value in arrays.items():
            try:
                array = np.asarray(value)
            except ValueError as exc:  # ragged nested lists
                raise CalibrationError(f"Calibration set {name!r}: input {key!r} is not a rectangular array ({exc}). "
                                       "Give every sample the same shape.") from exc
            if array.ndim == 0 or array.dtype == object:
                raise CalibrationError(f"Calibration set {name!r}: input {key!r} is a {array.dtype} value of shape "
                                       f"{list(array.shape)}, not an array of samples: stack the samples on axis 0.")
            picked[key] = array[:limit] if limit else array
        return cls(name=name, arrays=picked, description=description, synthetic=synthetic)

    @classmethod
    def from_batches(cls, name: str, batches: Iterable, *, input_names: list[str], description: str = "",
                     limit: int | None = DEFAULT_SIZE) -> "CalibrationSet":
        """From any iterable of batches: dicts name -> array, tuples (inputs[, labels]), arrays or torch tensors.

        Works with a torch DataLoader; stops once `limit` samples are collected.
        """
        collected: dict[str, list[np.ndarray]] = {n: [] for n in input_names}
        count = 0
        for batch in batches:
            if isinstance(batch, Mapping):
                parts = {n: batch[n] for n in input_names}
            else:
                if isinstance(batch, (tuple, list)):
                    batch = batch[: len(input_names)] if len(input_names) > 1 else batch[0]
                values = batch if isinstance(batch, (tuple, list)) else [batch]
                parts = dict(zip(input_names, values))
            for n, value in parts.items():
                collected[n].append(_to_numpy(value))
            count += len(collected[input_names[0]][-1])
            if limit and count >= limit:
                break
        if count == 0:
            raise CalibrationError(f"Calibration set {name!r}: the iterable gave no batches.")
        arrays = {n: np.concatenate(v)[:limit] if limit else np.concatenate(v) for n, v in collected.items()}
        return cls(name=name, arrays=arrays, description=description)

    @classmethod
    def synthetic_for(cls, inputs: list[TensorSpec], *, size: int = 32, seed: int = 0,
                      dim_overrides: dict[str, int] | None = None) -> "CalibrationSet":
        """Random inputs from the model's specs (standard normal floats, small ints): labelled synthetic."""
        rng = np.random.default_rng(seed)
        shapes = {spec.name: spec.concrete_shape(batch=size, overrides=dim_overrides) for spec in inputs}
        empty = [name for name, shape in shapes.items() if 0 in shape]
        if empty:
            raise CalibrationError(f"Input {empty[0]!r} has shape {list(shapes[empty[0]])} with a zero-size dim: "
                                   "its samples hold no values, so there is nothing to generate.")
        # random values are drawn as 8-byte numbers, then cast: both copies exist at once
        check_memory(sum(array_bytes(shapes[spec.name], np.dtype(spec.dtype).itemsize + 8) for spec in inputs),
                     f"{size} synthetic samples of inputs {', '.join(f'{n} {list(s)}' for n, s in shapes.items())}",
                     "give the model smaller fixed dims, or symbolic ones (set to 1 here)")
        arrays = {}
        for spec in inputs:
            shape = shapes[spec.name]
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                arrays[spec.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                arrays[spec.name] = rng.integers(0, 2, shape).astype(dtype)
            else:
                arrays[spec.name] = np.zeros(shape, dtype=dtype)
        return cls(name="synthetic", arrays=arrays, synthetic=True,
                   description=f"{size} random samples drawn from the input specs (seed {seed}); not real data")

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, inputs: list[TensorSpec]) -> None:
        """Check names, dtypes, shapes and values against the model's inputs; raise CalibrationError."""
        expected = {spec.name for spec in inputs}
        missing = expected - set(self.arrays)
        extra = set(self.arrays) - expected
        if missing or extra:
            raise CalibrationError(
                f"Calibration set {self.name!r} does not fit the model: it has inputs {sorted(self.arrays)}, the model "
                f"expects {sorted(expected)}. Rename the arrays to the model's input names.")
        for spec in inputs:
            arr = self.arrays[spec.name]
            if arr.dtype.name != spec.dtype:
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} has dtype {arr.dtype.name}, the model expects "
                    f"{spec.dtype}. Convert it, e.g. arr.astype(np.{spec.dtype}).")
            if arr.ndim != len(spec.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(spec.shape[1:], arr.shape[1:])):
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} has sample shape {list(arr.shape)}, the model "
                    f"expects {list(spec.shape)} (axis 0 is the sample axis). Reshape or preprocess the data.")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} holds {bad} NaN or Inf values. "
                    "Clean or drop those samples before calibrating.")

    def batches(self, batch_size: int) -> Iterable[dict[str, np.ndarray]]:
        for start in range(0, self.size, batch_size):
            yield {k: v[start:start + batch_size] for k, v in self.arrays.items()}

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "size": self.size,
                "synthetic": self.synthetic, "sha256": self.content_hash}


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)
