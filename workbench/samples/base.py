"""What a bundled sample provides: model, labelled evaluation split, calibration sets, class names."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..calibration import CalibrationSet
from ..models.spec import Model


@dataclass
class EvalData:
    """Preprocessed model inputs (name -> array, samples on axis 0) and optional integer labels."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    description: str = ""

    @property
    def size(self) -> int:
        return len(next(iter(self.arrays.values())))

    def head(self, n: int) -> "EvalData":
        return EvalData({k: v[:n] for k, v in self.arrays.items()},
                        None if self.labels is None else self.labels[:n], self.description)


@dataclass
class Sample:
    """A bundled model with its data. `calibration_sets` is ordered: the first one is the default."""

    name: str
    description: str
    model: Model
    eval: EvalData
    calibration_sets: dict[str, CalibrationSet]
    class_names: list[str] | None = None
    task: str = "classification"  # or "embedding"
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None  # raw images -> model input
    notes: list[str] = field(default_factory=list)
    extra_eval: dict[str, EvalData] = field(default_factory=dict)  # labelled alternative eval data, e.g. a shifted domain

    @property
    def default_calibration(self) -> str:
        return next(iter(self.calibration_sets))
