"""Accuracy of a variant's outputs against the FP32 reference outputs and labels: per output, with metrics that fit
what the output is (its task, `workbench.vocabulary.OUTPUT_TASKS`). See docs/accuracy.md.

An output is either an array with samples on axis 0, or a list with one array per run (outputs whose first axis is
not the sample count, e.g. boxes after NMS: [N, 4] per image); such outputs are compared whole, run by run.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..errors import InputSpecError
from ..results import AccuracyStats, OutputAgreement
from ..vocabulary import HEADLINE_METRICS, OUTPUT_TASKS

Output = np.ndarray | list  # samples on axis 0, or one array per run
Metric = Callable[[list, list, object], float]  # metric(fp32_outputs, variant_outputs, labels) -> float
IOU_MATCH = 0.5  # a box matches when IoU >= this (and the class agrees): mAP@0.5's threshold
_TASK_FIRST = ("classification", "label", "detection", "segmentation", "sequence")  # before embedding/regression

_BOXES = re.compile(r"box|bbox", re.I)
_SCORES = re.compile(r"score|conf", re.I)
_CLASSES = re.compile(r"label|class", re.I)
_COUNT = re.compile(r"num_det|count|num_box", re.I)
_PROBABILITIES = re.compile(r"prob|logit|softmax|class|score|pred", re.I)
_EMBEDDING = re.compile(r"hidden|embed|pool|encoder_out|vector", re.I)
_CACHE = re.compile(r"present|past|cache|state", re.I)
_SEGMENTATION = re.compile(r"seg|mask", re.I)


def measure_accuracy(outputs: Sequence[Output] | np.ndarray, reference: Sequence[Output] | np.ndarray,
                     labels=None, *, task: str | None = None, output_names: Sequence[str] | None = None,
                     tasks: Mapping[str, str] | str | None = None, metric: Metric | None = None,
                     samples: int | None = None, image_sizes: Sequence[tuple[int, int]] = ()) -> AccuracyStats:
    """Compare a variant's outputs with the FP32 reference outputs (same order) and optional labels.

    Each output gets a task: from `tasks` (output name -> task, or one task for the first output), else `task` for
    the first output (a sample's declared task), else inferred from its name, dtype and shape (`infer_task`), and
    the metrics of that task (`OutputAgreement.metrics`; None where a metric cannot apply).
    `metric(fp32_outputs, variant_outputs, labels)` is a metric of your own (higher is better); when given it
    decides the headline. `image_sizes`: (height, width)
    of the image inputs, so an output of that size is read as a segmentation map. Top-level `top1` /
    `top1_agreement` are those of the first class-score or label output (None without one), `cosine` that of the
    first float output, `max_abs_diff` the largest over float outputs.
    """
    outs, refs = _as_list(outputs), _as_list(reference)
    if len(outs) != len(refs) or not outs:
        raise InputSpecError(f"measure_accuracy got {len(outs)} outputs and {len(refs)} reference outputs: "
                             "pass the same (non-empty) list of model outputs for both.")
    for i, (out, ref) in enumerate(zip(outs, refs)):
        if isinstance(out, np.ndarray) and isinstance(ref, np.ndarray) and out.shape != ref.shape:
            raise InputSpecError(f"Output {i} has shape {list(out.shape)} but the reference has {list(ref.shape)}: "
                                 "run both engines on the same inputs.")
    names = list(output_names) if output_names is not None else [f"output_{i}" for i in range(len(outs))]
    samples = samples if samples is not None else len(refs[0])
    if labels is not None and not _is_box_labels(labels):
        labels = np.asarray(labels)
    if labels is not None and len(labels) != samples:
        raise InputSpecError(f"Got {len(labels)} labels for {samples} samples: pass one label per sample.")
    declared = resolve_tasks(names, tasks, task)
    kinds = {name: declared.get(name) or infer_task(name, ref, image_sizes=image_sizes)
             for name, ref in zip(names, refs)}
    detection = _detection_group(names, refs, kinds)
    per_output = []
    for name, out, ref in zip(names, outs, refs):
        if name in detection.get("partners", ()):
            per_output.append(OutputAgreement(name=name, shape=_shape(ref), cosine=None, max_abs_diff=None,
                                              task="detection", metrics={},
                                              note=f"scored with {detection['boxes']!r} (detection)"))
            continue
        if name == detection.get("boxes"):
            parts = {role: (outs[names.index(n)], refs[names.index(n)]) for role, n in detection.items()
                     if role != "partners"}
            metrics = detection_metrics(parts, labels if _is_box_labels(labels) else None)
            per_output.append(OutputAgreement(name=name, shape=_shape(ref), cosine=None, max_abs_diff=None,
                                              task="detection", metrics=metrics))
            continue
        per_output.append(_output_agreement(name, kinds[name], out, ref, labels))
    return _summary(per_output, samples, metric and _custom(metric, refs, outs, labels))


def resolve_tasks(names: Sequence[str], tasks: Mapping[str, str] | str | None, first: str | None = None) -> dict:
    """Declared tasks by output name: `tasks` (a name -> task mapping, or one task for the first output), then
    `first` for the first output; checked against the vocabulary and the output names."""
    declared = {names[0]: first} if first and names else {}
    if isinstance(tasks, str):
        tasks = {names[0]: tasks} if names else {}
    for name, kind in (tasks or {}).items():
        if name not in names:
            raise InputSpecError(f"tasks names output {name!r}, but the model's outputs are {list(names)}: use one "
                                 "of those names.")
        declared[name] = kind
    for name, kind in declared.items():
        if kind not in OUTPUT_TASKS:
            raise InputSpecError(f"Unknown task {kind!r} for output {name!r}: choose one of {', '.join(OUTPUT_TASKS)}.")
    return declared


def infer_task(name: str, value: Output, *, image_sizes: Sequence[tuple[int, int]] = ()) -> str:
    """The task of an output from its name, dtype and (per-sample) shape where that is unambiguous: boxes
    ([..., N, 4], named *box*) are detection; integer or string outputs of one value per sample are labels, longer
    integer outputs sequences (or segmentation when the size of an image input); float maps of an image input's
    size are segmentation; [samples, classes] floats classification unless named like an embedding; [samples, tokens,
    vocabulary] logits are a sequence; everything else (hidden states, caches, feature maps) regression."""
    first = value[0] if isinstance(value, list) and value else value
    array = np.asarray(first)
    per_sample = array.shape[1:] if isinstance(value, np.ndarray) else array.shape
    if isinstance(value, list) and array.ndim and all(np.shape(v) == array.shape for v in value) \
            and array.shape[0] == 1:  # one sample per run: a fixed-batch model whose output axis is named
        per_sample = array.shape[1:]
    if _BOXES.search(name) and array.ndim and array.shape[-1] == 4:
        return "detection"
    spatial = {tuple(s) for s in image_sizes}
    if array.dtype.kind in "iubUSO":
        if int(np.prod(per_sample, dtype=np.int64)) <= 1:
            return "label"
        if tuple(per_sample[-2:]) in spatial:
            return "segmentation"
        return "sequence"
    if len(per_sample) >= 2 and tuple(per_sample[-2:]) in spatial:
        return "segmentation"
    if _SEGMENTATION.search(name) and len(per_sample) == 3:
        return "segmentation"
    if _EMBEDDING.search(name):
        return "embedding"
    if _CACHE.search(name):
        return "regression"
    if len(per_sample) == 1 and per_sample[0] >= 2:
        return "classification"
    if len(per_sample) == 2 and "logit" in name.lower():
        return "sequence"
    if len(per_sample) == 2 and per_sample[0] == 1 and per_sample[1] >= 2 and _PROBABILITIES.search(name):
        return "classification"
    return "regression"


# ---- per task -----------------------------------------------------------------------------------------------------
def _output_agreement(name: str, kind: str, out: Output, ref: Output, labels) -> OutputAgreement:
    if kind == "detection":  # declared, but no box layout found: say so instead of guessing
        return OutputAgreement(name=name, shape=_shape(ref), cosine=None, max_abs_diff=None, task=kind, metrics={},
                               note="detection needs boxes [..., N, 4] (or [..., N, 6]: box, score, class)")
    numeric = _numeric(out) and _numeric(ref)
    values = _value_metrics(out, ref) if numeric else {"cosine": None, "relative_l2": None, "max_abs_diff": None}
    if kind == "classification":
        metrics = {**classification_metrics(out, ref, labels), **values}
    elif kind == "label":
        metrics = label_metrics(out, ref, labels)
    elif kind == "segmentation":
        metrics = segmentation_metrics(out, ref, labels)
    elif kind == "sequence":
        metrics = {**sequence_metrics(out, ref, labels), **(values if _floating(ref) else {})}
    else:  # embedding, regression
        metrics = values
    floating = _floating(ref) and kind != "label"
    return OutputAgreement(name=name, shape=_shape(ref), cosine=values["cosine"] if floating else None,
                           max_abs_diff=values["max_abs_diff"] if floating else None,
                           top1_agreement=metrics.get("agreement") if kind in ("classification", "label") else None,
                           task=kind, metrics=metrics)


def classification_metrics(out: Output, ref: Output, labels=None) -> dict:
    """top1 (argmax vs labels; None without labels) and agreement (argmax vs FP32's argmax), over samples."""
    out, ref = _rows(out), _rows(ref)
    if out is None or ref is None or out.shape != ref.shape or out.ndim < 2:
        return {"top1": None, "agreement": None}
    pred = np.argmax(out.reshape(len(out), -1), axis=1)
    agreement = float(np.mean(pred == np.argmax(ref.reshape(len(ref), -1), axis=1))) if len(out) else None
    return {"top1": _top1(pred, labels), "agreement": agreement}


def label_metrics(out: Output, ref: Output, labels=None) -> dict:
    """Labels compared as labels (never argmax'ed): agreement is the share of equal values, top1 the share equal
    to `labels` (one label per sample only)."""
    if isinstance(out, np.ndarray) and isinstance(ref, np.ndarray) and out.shape == ref.shape:
        equal = [out == ref]
    else:
        equal = [np.asarray(a) == np.asarray(b) if np.shape(a) == np.shape(b)
                 else np.zeros(max(np.size(a), np.size(b)), bool) for a, b in _pairs(out, ref)]
    total = sum(e.size for e in equal)
    agreement = float(sum(e.sum() for e in equal) / total) if total else None
    top1 = None
    rows = _rows(out)
    if rows is not None and rows.size == len(rows):
        top1 = _top1(rows.reshape(-1), labels)
    return {"top1": top1, "agreement": agreement}


def segmentation_metrics(out: Output, ref: Output, labels=None) -> dict:
    """Per-pixel class maps (argmax over the channel axis of [C, H, W] scores; a threshold for one channel; class
    ids as they are): pixel_agreement and mean_iou against FP32's map, pixel_accuracy and mean_iou_labels against
    per-pixel labels [samples, H, W] (values outside the output's classes, e.g. 255, are ignored)."""
    pairs = [(_class_map(a), _class_map(b)) for a, b in _pairs(out, ref)]
    if not pairs or any(a.shape != b.shape for a, b in pairs):
        return {"pixel_agreement": None, "mean_iou": None, "pixel_accuracy": None, "mean_iou_labels": None}
    pred = np.stack([a for a, _ in pairs]) if len({a.shape for a, _ in pairs}) == 1 else None
    if pred is None:
        pred_flat, ref_flat = (np.concatenate([a.reshape(-1) for a, _ in pairs]),
                               np.concatenate([b.reshape(-1) for _, b in pairs]))
    else:
        pred_flat, ref_flat = pred.reshape(-1), np.stack([b for _, b in pairs]).reshape(-1)
    metrics = {"pixel_agreement": float(np.mean(pred_flat == ref_flat)), "mean_iou": mean_iou(pred_flat, ref_flat),
               "pixel_accuracy": None, "mean_iou_labels": None}
    if isinstance(labels, np.ndarray) and pred is not None and labels.shape == pred.shape:
        classes = _classes_of(out)
        truth = labels.reshape(-1).astype(np.int64)
        keep = (truth >= 0) & ((truth < classes) if classes else (truth != 255))
        if keep.any():
            metrics["pixel_accuracy"] = float(np.mean(pred_flat[keep] == truth[keep]))
            metrics["mean_iou_labels"] = mean_iou(pred_flat[keep], truth[keep])
    return metrics


def mean_iou(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean over classes present in either map of |pred ∩ truth| / |pred ∪ truth| (class ids >= 0)."""
    pred, truth = pred.astype(np.int64).reshape(-1), truth.astype(np.int64).reshape(-1)
    if not pred.size:
        return None
    low = min(int(pred.min()), int(truth.min()))
    pred, truth = pred - low, truth - low
    size = int(max(pred.max(), truth.max())) + 1
    confusion = np.bincount(truth * size + pred, minlength=size * size).reshape(size, size)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return float(np.mean(inter[present] / union[present])) if present.any() else None


def sequence_metrics(out: Output, ref: Output, labels=None) -> dict:
    """Tokens (argmax over the last axis of per-token float scores; ids as they are) compared position by
    position: token_agreement with FP32, token_accuracy with labels of the same shape. Sequences of different
    lengths count every missing position as a disagreement."""
    pairs = [(_tokens(a), _tokens(b)) for a, b in _pairs(out, ref)]
    agree = total = 0
    for a, b in pairs:
        length = min(a.size, b.size)
        agree += int(np.sum(a.reshape(-1)[:length] == b.reshape(-1)[:length]))
        total += max(a.size, b.size)
    metrics = {"token_agreement": agree / total if total else None, "token_accuracy": None}
    if isinstance(out, np.ndarray) and isinstance(labels, np.ndarray):
        tokens = np.stack([a for a, _ in pairs]) if len({a.shape for a, _ in pairs}) == 1 else None
        if tokens is not None and tokens.shape == labels.shape:
            metrics["token_accuracy"] = float(np.mean(tokens == labels))
    return metrics


def detection_metrics(parts: Mapping[str, tuple[Output, Output]], labels=None) -> dict:
    """Boxes matched by IoU >= IOU_MATCH and class, sample by sample, over every box: `matched_box_rate` = matched
    pairs / the larger of the two box counts (summed over samples; missing and extra boxes both count against it),
    `box_iou` the mean IoU of matched pairs, `map50` the variant's mAP@0.5 taking FP32's boxes as ground truth, and
    `map50_labels` against labelled boxes (a list of {"boxes", "classes"} per sample). None where no box exists.

    `parts`: role -> (variant, reference) for "boxes" (required), "scores", "classes" and "count" (valid rows per
    sample). Rows of all-zero boxes are padding and dropped.
    """
    variant = _detections({role: pair[0] for role, pair in parts.items()})
    truth = _detections({role: pair[1] for role, pair in parts.items()})
    matched = larger = 0
    ious: list[float] = []
    for (vb, vs, vc), (rb, _, rc) in zip(variant, truth):
        pairs = match_boxes(vb, vs, vc, rb, rc)
        matched += len(pairs)
        larger += max(len(vb), len(rb))
        ious += [iou for _, _, iou in pairs]
    metrics = {"matched_box_rate": matched / larger if larger else None,
               "box_iou": float(np.mean(ious)) if ious else None,
               "map50": average_precision(variant, [(b, c) for b, _, c in truth]), "map50_labels": None}
    if labels is not None:
        labelled = [(np.asarray(item["boxes"], np.float64).reshape(-1, 4),
                     np.asarray(item.get("classes", item.get("labels", np.zeros(len(item["boxes"]))))).reshape(-1))
                    for item in labels]
        metrics["map50_labels"] = average_precision(variant[:len(labelled)], labelled)
    return metrics


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (x1, y1, x2, y2): [N, M]."""
    a, b = a.astype(np.float64).reshape(-1, 4), b.astype(np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, truth: np.ndarray,
                truth_classes: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, highest score first: each box takes the unmatched box of `truth` of its class
    with the highest IoU, if that IoU >= IOU_MATCH. (box index, truth index, IoU) per matched pair."""
    if not len(boxes) or not len(truth):
        return []
    ious = box_iou(boxes, truth)
    ious[classes[:, None] != truth_classes[None, :]] = -1.0
    taken = np.zeros(len(truth), bool)
    pairs = []
    for i in np.argsort(-scores, kind="stable"):
        row = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(row))
        if row[j] >= IOU_MATCH:
            taken[j] = True
            pairs.append((int(i), j, float(row[j])))
    return pairs


def average_precision(predictions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      truth: Sequence[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """mAP@0.5: per class, predictions (boxes, scores, classes per sample) ranked by score over all samples, each a
    true positive when it matches an unmatched true box of its sample (IoU >= IOU_MATCH); the area under the
    interpolated precision-recall curve (all points), averaged over classes that have true boxes."""
    classes = sorted({int(c) for _, c in truth for c in c.reshape(-1)})
    if not classes:
        return None
    aps = []
    for cls in classes:
        ranked = [(float(s), i, k) for i, (b, sc, c) in enumerate(predictions) for k, s in enumerate(sc) if c[k] == cls]
        ranked.sort(key=lambda t: -t[0])
        wanted = [tb[tc == cls] for tb, tc in truth]
        total = sum(len(w) for w in wanted)
        used = [np.zeros(len(w), bool) for w in wanted]
        hits = []
        for _, i, k in ranked:
            row = box_iou(predictions[i][0][k:k + 1], wanted[i])[0] if len(wanted[i]) else np.zeros(0)
            row = np.where(used[i], -1.0, row)
            j = int(np.argmax(row)) if row.size else -1
            hit = j >= 0 and row[j] >= IOU_MATCH
            if hit:
                used[i][j] = True
            hits.append(hit)
        tp = np.cumsum(hits)
        recall = tp / total
        precision = tp / np.arange(1, len(hits) + 1)
        recall = np.concatenate([[0.0], recall, [1.0]]) if len(hits) else np.array([0.0, 1.0])
        precision = np.concatenate([[1.0], precision, [0.0]]) if len(hits) else np.array([0.0, 0.0])
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        aps.append(float(np.sum(np.diff(recall) * precision[1:])))
    return float(np.mean(aps))


def _detections(parts: Mapping[str, Output]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(boxes [N, 4], scores [N], classes [N]) per sample from any layout: [samples, N, 4|6] arrays or per-run
    arrays [N, 4|6]; [N, 6] rows are (x1, y1, x2, y2, score, class)."""
    boxes = _runs(parts["boxes"])
    scores = _runs(parts["scores"]) if "scores" in parts else [None] * len(boxes)
    classes = _runs(parts["classes"]) if "classes" in parts else [None] * len(boxes)
    counts = _runs(parts["count"]) if "count" in parts else [None] * len(boxes)
    found = []
    for b, s, c, n in zip(boxes, scores, classes, counts):
        b = np.asarray(b, np.float64)
        width = b.shape[-1] if b.ndim else 4
        rows = b.reshape(-1, width)
        if width >= 6 and s is None:
            s, c = rows[:, 4], rows[:, 5]
        rows = rows[:, :4]
        s = np.ones(len(rows)) if s is None else np.asarray(s, np.float64).reshape(-1)
        c = np.zeros(len(rows), np.int64) if c is None else np.asarray(c).reshape(-1).astype(np.int64)
        length = min(len(rows), len(s), len(c), int(np.asarray(n).reshape(-1)[0]) if n is not None else len(rows))
        rows, s, c = rows[:length], s[:length], c[:length]
        keep = np.any(rows != 0, axis=1)
        found.append((rows[keep], s[keep], c[keep]))
    return found


def _detection_group(names: list[str], refs: list[Output], kinds: dict[str, str]) -> dict:
    """The boxes output of a detection model and its partners (scores, classes, count) by role."""
    boxes = next((n for n in names if kinds[n] == "detection"), None)
    if boxes is None:
        return {}
    array = np.asarray(refs[names.index(boxes)][0] if isinstance(refs[names.index(boxes)], list) and
                       refs[names.index(boxes)] else refs[names.index(boxes)])
    if not array.ndim or array.shape[-1] not in (4, 6):
        return {}
    group = {"boxes": boxes}
    for role, pattern in (("count", _COUNT), ("scores", _SCORES), ("classes", _CLASSES)):
        found = next((n for n in names if n not in group.values() and pattern.search(n)
                      and kinds[n] in ("detection", "label", "regression", "classification", "sequence")), None)
        if found is not None:
            group[role] = found
    group["partners"] = tuple(v for k, v in group.items() if k != "boxes")
    return group


# ---- values ---------------------------------------------------------------------------------------------------------
def _value_metrics(out: Output, ref: Output) -> dict:
    """cosine (mean over samples or runs), relative_l2 (over everything) and max_abs_diff; None where the shapes of
    a run differ. One sample at a time in float64, so large outputs (token logits) need no float64 copy."""
    pairs = _pairs(out, ref)
    if not pairs or any(np.shape(a) != np.shape(b) for a, b in pairs):
        return {"cosine": None, "relative_l2": None, "max_abs_diff": None}
    cosines, error, norm, largest = [], 0.0, 0.0, []
    with np.errstate(invalid="ignore", over="ignore"):
        for a, b in pairs:
            a, b = np.asarray(a, np.float64).reshape(1, -1), np.asarray(b, np.float64).reshape(1, -1)
            cosines.append(float(_cosine_rows(a, b)[0]))
            diff = a - b
            error += float(np.sum(diff * diff))
            norm += float(np.sum(b * b))
            largest.append(float(np.max(np.abs(diff), initial=0.0)))  # NaN (an FP16 overflow) is kept
    error, norm = math.sqrt(error), math.sqrt(norm)
    relative = error / norm if norm > 0 else (0.0 if error == 0 else None)
    return {"cosine": float(np.mean(cosines)), "relative_l2": relative, "max_abs_diff": float(np.max(largest))}


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


# ---- summary --------------------------------------------------------------------------------------------------------
def _summary(per_output: list[OutputAgreement], samples: int, custom: dict | None) -> AccuracyStats:
    classes = next((o for o in per_output if o.task in ("classification", "label")
                    and (o.metrics.get("top1") is not None or o.metrics.get("agreement") is not None)), None)
    first_float = next((o for o in per_output if o.cosine is not None), None)
    errors = [o.max_abs_diff for o in per_output if o.max_abs_diff is not None]
    return AccuracyStats(top1=classes.metrics.get("top1") if classes else None,
                         top1_agreement=classes.metrics.get("agreement") if classes else None,
                         cosine=first_float.cosine if first_float else None,
                         max_abs_diff=max(errors) if errors else None, samples=samples, outputs=per_output,
                         headline_metric=custom or headline_of(per_output), custom_metric=custom)


def headline_of(per_output: Sequence[OutputAgreement]) -> dict | None:
    """{"name", "output", "value"} of the metric that speaks for the model: the first output (task-specific outputs
    before embeddings and regressions) with a measured metric of its task's HEADLINE_METRICS; None if none applies."""
    ordered = sorted(per_output, key=lambda o: o.task not in _TASK_FIRST)
    for output in ordered:
        for name in HEADLINE_METRICS.get(output.task or "", ()):
            value = output.metrics.get(name)
            if value is not None and np.isfinite(value):
                return {"name": name, "output": output.name, "value": float(value)}
    return None


def _custom(metric: Metric, refs: list, outs: list, labels) -> dict:
    name = metric_name(metric)
    try:
        value = float(metric(refs, outs, labels))
    except Exception as exc:  # noqa: BLE001 - the user's code: say whose error it is
        raise InputSpecError(f"Your accuracy metric {name!r} raised {type(exc).__name__}: {exc}. It is called as "
                             "metric(fp32_outputs, variant_outputs, labels) with one entry per model output "
                             "(arrays with samples on axis 0, or lists of per-sample arrays).") from exc
    return {"name": name, "output": None, "value": value}


def metric_name(metric: Metric) -> str:
    """The name a metric callable is reported under (its function name; "metric" for a lambda)."""
    name = getattr(metric, "__name__", type(metric).__name__)
    return "metric" if name == "<lambda>" else name


# ---- helpers --------------------------------------------------------------------------------------------------------
def _pairs(out: Output, ref: Output) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(zip(_runs(out), _runs(ref)))


def _rows(value: Output) -> np.ndarray | None:
    """Samples-first rows of an output: the array, or per-run arrays of one shape joined (a model with a fixed
    batch whose output's first axis is named, not fixed); None when the runs differ in shape."""
    if isinstance(value, np.ndarray):
        return value
    runs = _runs(value)
    if not runs or len({r.shape for r in runs}) != 1 or not runs[0].ndim:
        return None
    return np.concatenate(runs)


def _runs(value: Output) -> list[np.ndarray]:
    """One array per sample (rows of a samples-first array) or per run (a list)."""
    return [np.asarray(v) for v in value]


def _shape(value: Output) -> list[int]:
    """Shape of an output; for per-run outputs [runs, *first run's shape] with -1 where runs differ."""
    if isinstance(value, np.ndarray):
        return list(value.shape)
    shapes = [np.shape(v) for v in value]
    if not shapes:
        return [0]
    first = shapes[0]
    return [len(shapes), *(d if all(len(s) == len(first) and s[i] == d for s in shapes) else -1
                           for i, d in enumerate(first))]


def _numeric(value: Output) -> bool:
    return all(np.asarray(v).dtype.kind in "fiub" for v in (value if isinstance(value, list) else [value]))


def _floating(value: Output) -> bool:
    return all(np.asarray(v).dtype.kind == "f" for v in (value if isinstance(value, list) else [value]))


def _top1(pred: np.ndarray, labels) -> float | None:
    if not isinstance(labels, np.ndarray) or labels.size != len(pred) or labels.dtype.kind not in "iufUSO":
        return None
    truth = labels.reshape(-1)
    if truth.dtype.kind in "USO" or pred.dtype.kind in "USO":
        return float(np.mean(pred.astype(str) == truth.astype(str)))
    return float(np.mean(pred == truth))


def _class_map(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind != "f":
        return value.reshape(value.shape[1:]) if value.ndim == 3 and value.shape[0] == 1 else value
    if value.ndim >= 3 and value.shape[0] > 1:
        return np.argmax(value, axis=0)
    value = value.reshape(value.shape[1:]) if value.ndim >= 3 else value
    threshold = 0.5 if value.size and value.min() >= 0 and value.max() <= 1 else 0.0
    return (value > threshold).astype(np.int64)


def _classes_of(value: Output) -> int | None:
    first = np.asarray(value[0]) if len(value) else np.zeros(0)
    return int(first.shape[0]) if first.dtype.kind == "f" and first.ndim >= 3 and first.shape[0] > 1 else None


def _tokens(value: np.ndarray) -> np.ndarray:
    value = np.asarray(value)
    return np.argmax(value, axis=-1) if value.dtype.kind == "f" and value.ndim >= 2 else value


def _is_box_labels(labels) -> bool:
    return isinstance(labels, (list, tuple)) and bool(labels) and isinstance(labels[0], Mapping)


def _as_list(value: Sequence[Output] | np.ndarray) -> list[Output]:
    if isinstance(value, np.ndarray):
        return [value]
    return [v if isinstance(v, list) else np.asarray(v) for v in value]
