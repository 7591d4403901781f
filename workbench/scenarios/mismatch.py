"""Calibration mismatch: INT8 accuracy when calibrating on one data set and evaluating on another."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from ..errors import CalibrationError
from ..measure import measure_accuracy
from ..results import RunResult
from ..samples.base import EvalData
from .policy import headline_metric


@dataclass
class MismatchMatrix:
    """Accuracy (fraction) per calibration set (rows) and evaluation set (columns), plus the FP32 reference.

    `metric[j]` is "top1" when evaluation set j has labels, else "top1_agreement" with FP32 outputs ("cosine"
    for embedding models): see `workbench.scenarios.policy.headline_metric`.
    """

    model: str
    backend: str
    method: str
    qdq_style: str
    calibration_sets: list[str]
    eval_sets: list[str]
    metric: list[str]
    accuracy: list[list[float | None]]  # [calibration][eval]
    fp32: list[float | None]  # per eval set
    results: list[RunResult] = field(default_factory=list, repr=False)  # INT8 runs on the primary eval split

    def drop_points(self) -> list[list[float | None]]:
        """Accuracy drop vs FP32 in percentage points, same layout as `accuracy`."""
        return [[None if a is None or ref is None else 100.0 * (ref - a) for a, ref in zip(row, self.fp32)]
                for row in self.accuracy]

    def cell(self, calibration: str, eval_set: str) -> float | None:
        return self.accuracy[self.calibration_sets.index(calibration)][self.eval_sets.index(eval_set)]

    def to_json(self) -> dict:
        return {"model": self.model, "backend": self.backend, "method": self.method, "qdq_style": self.qdq_style,
                "calibration_sets": list(self.calibration_sets), "eval_sets": list(self.eval_sets),
                "metric": list(self.metric), "accuracy": [list(r) for r in self.accuracy], "fp32": list(self.fp32),
                "drop_points": self.drop_points(),
                "cache_keys": [r.cache_key for r in self.results]}


def calibration_mismatch(workbench, method: str = "minmax", qdq_style: str = "onnxruntime",
                         eval_sets: Mapping[str, EvalData] | None = None, *, batch: int = 8, runs: int = 10,
                         progress: bool = True) -> MismatchMatrix:
    """INT8-calibrate on each of the session's calibration sets and evaluate on its eval split plus `eval_sets`
    (default: the sample's labelled `extra_eval` data). Runs go through `Workbench.run`, so they are cached.

    Columns other than the session's own eval split are scored by running the cached engines on that data: top-1
    when it has labels, else top-1 agreement with FP32 on the same data (cosine for embedding models).
    """
    if eval_sets is None:
        eval_sets = workbench.sample.extra_eval if workbench.sample is not None else {}
    if "eval" in eval_sets:
        raise CalibrationError("eval_sets may not use the name 'eval': it is the session's own evaluation split. "
                               "Rename that entry.")
    names = list(workbench.calibration_sets)
    settings = dict(batch=batch, runs=runs, profile=False, drift=False)
    bar = tqdm(total=len(names) + 1, desc="calibration mismatch", unit="run", disable=not progress)
    with bar:
        fp32 = workbench.run("fp32", **settings)
        bar.update()
        int8 = []
        for name in names:
            int8.append(workbench.run("int8", calibration=name, method=method, qdq_style=qdq_style, **settings))
            bar.update()

    fp32_score, metric = headline_metric(fp32.accuracy)
    columns, metrics, fp32_row = ["eval"], [metric], [fp32_score]
    table = [[headline_metric(r.accuracy)[0]] for r in int8]
    for eval_name, data in eval_sets.items():
        reference = workbench.predict(fp32, data.arrays, batch)
        stats = measure_accuracy(reference, reference, data.labels, task=workbench.task,
                                 tasks=workbench.tasks)
        score, metric = headline_metric(stats)
        columns.append(eval_name)
        metrics.append(metric)
        fp32_row.append(score)
        for row, result in zip(table, int8):
            outputs = workbench.predict(result, data.arrays, batch)
            row.append(headline_metric(measure_accuracy(outputs, reference, data.labels, task=workbench.task,
                                                        tasks=workbench.tasks))[0])
    return MismatchMatrix(model=fp32.model, backend=fp32.backend, method=int8[0].method, qdq_style=int8[0].qdq_style,
                          calibration_sets=names, eval_sets=columns, metric=metrics, accuracy=table, fp32=fp32_row,
                          results=int8)
