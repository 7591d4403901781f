"""Calibration sets: named, hashed collections of model inputs, validated before any work starts."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import CalibrationError
from .limits import array_bytes, check_memory
from .models.inputs import batch_axes, feeder, sample_shape
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
            raise CalibrationError(f"Calibration set {self.name!r}: input {scalars[0]!r} is a single value (shape []), "
                                   "with no sample axis: inputs hold samples on axis 0 (for a scalar model input, one "
                                   "value per sample).")
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
                # object arrays (strings) hold pointers: hash their text instead
                digest.update("\0".join(map(str, arr.reshape(-1))).encode() if arr.dtype == object else arr.tobytes())
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
            if array.dtype.kind in "US":  # strings as the engines take them
                array = array.astype(object)
            strings = array.dtype == object and all(isinstance(v, str) for v in array.reshape(-1))
            if array.ndim == 0 or (array.dtype == object and not strings):
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
                collected[n].append(as_numpy(value))
            count += len(collected[input_names[0]][-1])
            if limit and count >= limit:
                break
        if count == 0:
            raise CalibrationError(f"Calibration set {name!r}: the iterable gave no batches.")
        arrays = {n: np.concatenate(v)[:limit] if limit else np.concatenate(v) for n, v in collected.items()}
        return cls(name=name, arrays=arrays, description=description)

    @classmethod
    def synthetic_for(cls, inputs: list[TensorSpec], *, size: int = 32, seed: int = 0,
                      dim_overrides: dict[str, int] | None = None, plans: list | None = None) -> "CalibrationSet":
        """Random inputs from the model's specs, labelled synthetic: standard normal floats, integers and masks
        as `plans` say (`workbench.models.inputs.plan_inputs`: ids within a Gather's table, masks of ones, ...).
        Without plans, dynamic axes other than the batch take `dim_overrides` by name, else the stated defaults."""
        from .models.inputs import plan_inputs

        if plans is None:
            named = {spec.name: tuple(dim_overrides.get(d, d) if isinstance(d, str) else d for d in spec.shape)
                     for spec in inputs} if dim_overrides else {}
            specs = [replace(spec, shape=named.get(spec.name, spec.shape)) for spec in inputs]
            plans = plan_inputs(specs)
        rng = np.random.default_rng(seed)
        shapes = {plan.name: (size, *plan.sample_shape) for plan in plans}
        empty = [name for name, shape in shapes.items() if 0 in shape]
        if empty:
            raise CalibrationError(f"Input {empty[0]!r} has shape {list(shapes[empty[0]])} with a zero-size dim: "
                                   "its samples hold no values, so there is nothing to generate.")
        # random values are drawn as 8-byte numbers, then cast: both copies exist at once
        check_memory(sum(array_bytes(shapes[plan.name], np.dtype(plan.dtype).itemsize + 8) for plan in plans),
                     f"{size} synthetic samples of inputs {', '.join(f'{n} {list(s)}' for n, s in shapes.items())}",
                     "give the model smaller fixed dims, or override the input shapes (inputs=... / --input)")
        arrays = {plan.name: plan.synthetic(size, rng) for plan in plans}
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
        axes = batch_axes(inputs)
        for spec in inputs:
            arr = self.arrays[spec.name]
            declared = sample_shape(spec, axes[spec.name])
            if arr.dtype.name != spec.dtype:
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} has dtype {arr.dtype.name}, the model expects "
                    f"{spec.dtype}. Convert it, e.g. arr.astype(np.{spec.dtype}).")
            if arr.ndim != len(declared) + 1 or any(
                    isinstance(d, int) and d != s for d, s in zip(declared, arr.shape[1:])):
                where = ("one value shared by every sample" if axes[spec.name] is None
                         else f"samples on axis {axes[spec.name]}")
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} has sample shape {list(arr.shape[1:])} "
                    f"(array {list(arr.shape)}, samples on axis 0); the model's input is {list(spec.shape)} "
                    f"({where}), so each sample must be {list(declared)}. Reshape or preprocess the data.")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise CalibrationError(
                    f"Calibration set {self.name!r}: input {spec.name!r} holds {bad} NaN or Inf values. "
                    "Clean or drop those samples before calibrating.")

    def batches(self, batch_size: int, inputs: list[TensorSpec] | None = None) -> Iterable[dict[str, np.ndarray]]:
        """Slices of `batch_size` samples; with the model's `inputs`, as engine feeds (see `models.inputs`)."""
        to_feed = feeder(inputs) if inputs is not None else None
        for start in range(0, self.size, batch_size):
            part = {k: v[start:start + batch_size] for k, v in self.arrays.items()}
            yield to_feed(part) if to_feed else part

    def describe(self) -> dict:
        return {"name": self.name, "description": self.description, "size": self.size,
                "synthetic": self.synthetic, "sha256": self.content_hash}


def as_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)
