"""Accuracy of a variant's outputs against labels and against the FP32 reference outputs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputSpecError
from ..results import AccuracyStats, OutputAgreement

TASKS = ("classification", "embedding")


def measure_accuracy(outputs: Sequence[np.ndarray] | np.ndarray, reference: Sequence[np.ndarray] | np.ndarray,
                     labels: np.ndarray | None = None, *, task: str = "classification",
                     output_names: Sequence[str] | None = None) -> AccuracyStats:
    """Compare model outputs (samples on axis 0) with the FP32 reference outputs and optional labels.

    Classification uses the argmax of the first output (flattened per sample): `top1` against `labels` (None without
    labels) and `top1_agreement` with the reference. For embeddings `top1`/`top1_agreement` are None and the
    mean per-sample cosine of the first output is the key metric. `max_abs_diff` covers every output. `outputs`
    holds the agreement of every output (named by `output_names`), for models whose outputs are not class scores
    (detection maps, sequences, recurrent states, several heads).
    """
    if task not in TASKS:
        raise InputSpecError(f"Unknown task {task!r}: choose one of {', '.join(TASKS)}.")
    outs = _as_list(outputs)
    refs = _as_list(reference)
    if len(outs) != len(refs) or not outs:
        raise InputSpecError(f"measure_accuracy got {len(outs)} outputs and {len(refs)} reference outputs: "
                             "pass the same (non-empty) list of model outputs for both.")
    for i, (out, ref) in enumerate(zip(outs, refs)):
        if out.shape != ref.shape:
            raise InputSpecError(f"Output {i} has shape {list(out.shape)} but the reference has {list(ref.shape)}: "
                                 "run both engines on the same inputs.")
    samples = len(outs[0])
    first = outs[0].astype(np.float64).reshape(samples, -1)
    first_ref = refs[0].astype(np.float64).reshape(samples, -1)
    top1 = agreement = None
    if task == "classification":
        pred = np.argmax(first, axis=1)
        agreement = float(np.mean(pred == np.argmax(first_ref, axis=1)))
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            if len(labels) != samples:
                raise InputSpecError(f"Got {len(labels)} labels for {samples} samples: pass one label per sample.")
            top1 = float(np.mean(pred == labels))
    mean_cosine = float(np.mean(_cosine_rows(first, first_ref)))
    max_abs = max(float(np.max(np.abs(o.astype(np.float64) - r.astype(np.float64)), initial=0.0))
                  for o, r in zip(outs, refs))
    names = list(output_names) if output_names is not None else [f"output_{i}" for i in range(len(outs))]
    per_output = [_agreement(name, out, ref) for name, out, ref in zip(names, outs, refs)]
    return AccuracyStats(top1=top1, top1_agreement=agreement, cosine=mean_cosine, max_abs_diff=max_abs, samples=samples,
                         outputs=per_output)


def _agreement(name: str, out: np.ndarray, ref: np.ndarray) -> OutputAgreement:
    rows = max(len(out), 1) if out.ndim else 1
    a = out.astype(np.float64).reshape(rows, -1)
    b = ref.astype(np.float64).reshape(rows, -1)
    class_scores = out.ndim == 2 and out.shape[1] >= 2
    top1 = float(np.mean(np.argmax(a, axis=1) == np.argmax(b, axis=1))) if class_scores and rows else None
    return OutputAgreement(name=name, shape=list(out.shape), cosine=float(np.mean(_cosine_rows(a, b))),
                           max_abs_diff=float(np.max(np.abs(a - b), initial=0.0)), top1_agreement=top1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays; 1.0 when both are zero, 0.0 when only one is."""
    return float(_cosine_rows(a.reshape(1, -1), b.reshape(1, -1))[0])


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    cos = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, cos))
    return np.clip(cos, -1.0, 1.0)


def _as_list(value: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    return [np.asarray(v) for v in value]
