"""Checks on result JSON read back from a cache (or any file): types, ranges, finiteness, internal consistency.

A result that fails is not shown: the cache treats it as a miss and the configuration is measured again. The checks
walk the known structure explicitly (no generic recursion), so a deeply nested entry cannot exhaust the stack.
"""
from __future__ import annotations

import math
from dataclasses import fields

from .errors import PrecisionError
from .precision.plan import PrecisionPlan
from .vocabulary import OUTPUT_TASKS

# A timed inference below 1 microsecond is not a measurement (a single engine call costs more); above a day is not
# one either. Both bound what an edited entry can claim (e.g. a 20,000x speed-up).
MIN_LATENCY_MS = 1e-3
MAX_LATENCY_MS = 8.64e7
MAX_LAYER_TIME_RATIO = 1e3  # summed per-layer time over end-to-end time; profilers overlap a little, not 1000x


class SchemaError(ValueError):
    """A result entry that does not fit the result schema (the message says which field and why)."""


def check_run_json(data) -> None:
    """Raise SchemaError unless `data` is a plausible `RunResult.to_json()`."""
    _check(isinstance(data, dict), "result", "is not an object")
    for name in ("model", "backend"):
        _check(isinstance(data.get(name), str), name, "is not a string")
    _check("precision" in data, "precision", "is missing")
    _plan(data)
    for name in ("calibration", "calibration_hash", "drift_graph", "cache_key", "model_sha256"):
        _check(data.get(name) is None or isinstance(data[name], str), name, "is not a string or null")
    for name in ("synthetic_data", "accelerated"):
        _check(isinstance(data.get(name, False), bool), name, "is not a boolean")
    _strings(data.get("notes", []), "notes")
    versions = data.get("versions", {})
    _check(isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values()), "versions",
           "is not an object of strings")
    machine = data.get("machine")
    _check(machine is None or isinstance(machine, dict), "machine", "is not an object or null")

    latency = data.get("latency_by_batch")
    _check(isinstance(latency, list) and latency, "latency_by_batch", "is not a non-empty list")
    for i, stats in enumerate(latency):
        _latency(stats, f"latency_by_batch[{i}]")
    _accuracy(data.get("accuracy"))

    _layers(data.get("layers", []), "layers")
    engine = data.get("engine")
    _check(engine is None or isinstance(engine, dict), "engine", "is not an engine graph or null")
    if engine is not None:
        _layers(engine.get("layers"), "engine.layers")
        _strings(engine.get("source_nodes"), "engine.source_nodes")
    ratio = _number(data.get("layer_time_ratio"), "layer_time_ratio", low=0.0, high=MAX_LAYER_TIME_RATIO,
                    optional=True)
    around = _number(data.get("profile_end_to_end_ms"), "profile_end_to_end_ms", low=MIN_LATENCY_MS,
                     high=MAX_LATENCY_MS, optional=True)
    total = sum(layer.get("latency_ms") or 0.0 for layer in data.get("layers", []))
    if ratio is not None and around is not None and total > 0:  # edited layer times no longer add up
        _check(math.isclose(ratio, total / around, rel_tol=1e-3), "layer_time_ratio",
               f"is {ratio:.4g} but the layers sum to {total / around:.4g} of the end-to-end time")
    _strings(data.get("precision_notes", []), "precision_notes")
    shares = data.get("graph_precision")
    _check(shares is None or isinstance(shares, dict), "graph_precision", "is not an object or null")
    for name, share in (shares or {}).items():
        _number(share, f"graph_precision.{name}", low=0.0, high=1.0)
    _check(data.get("variant_sha256") is None or isinstance(data["variant_sha256"], str), "variant_sha256",
           "is not a string or null")

    drift = data.get("drift", [])
    _check(isinstance(drift, list), "drift", "is not a list")
    for i, point in enumerate(drift):
        where = f"drift[{i}]"
        _check(isinstance(point, dict) and isinstance(point.get("tensor"), str), where, "has no tensor name")
        _number(point.get("sqnr_db"), f"{where}.sqnr_db", optional=True, infinite=True)  # inf: identical
        _number(point.get("cosine"), f"{where}.cosine", low=-1.0 - 1e-3, high=1.0 + 1e-3, optional=True)
        # an FP16 overflow really gives inf (and inf - inf a NaN) here
        _number(point.get("max_abs_diff"), f"{where}.max_abs_diff", low=0.0, optional=True, infinite=True, nan=True)


_JSON_TYPES = {"str": (str,), "bool": (bool,), "int": (int,), "float": (int, float), "None": (type(None),)}


def _plan(data: dict) -> None:
    """The plan's keys, checked as `PrecisionPlan` declares them (type annotation of each field, then its own
    validation)."""
    for plan_field in fields(PrecisionPlan):
        if plan_field.name not in data:
            continue
        value, kinds = data[plan_field.name], [kind.strip() for kind in str(plan_field.type).split("|")]
        if any(kind.startswith("tuple[") for kind in kinds):  # tuple[str, ...]: a list in JSON
            _strings(value, plan_field.name)
        elif all(kind in _JSON_TYPES for kind in kinds):
            types = tuple(t for kind in kinds for t in _JSON_TYPES[kind])
            _check(isinstance(value, types) and (bool in types or not isinstance(value, bool)), plan_field.name,
                   f"is not {' or '.join('null' if kind == 'None' else kind for kind in kinds)}")
    try:
        PrecisionPlan.from_json(data)
    except PrecisionError as exc:
        raise SchemaError(f"precision plan: {exc}") from None


def _layers(layers, where: str) -> None:
    _check(isinstance(layers, list), where, "is not a list")
    for i, layer in enumerate(layers):
        at = f"{where}[{i}]"
        _check(isinstance(layer, dict), at, "is not an object")
        _check(isinstance(layer.get("name"), str) and isinstance(layer.get("type"), str), at,
               "has no string name and type")
        _strings(layer.get("onnx_nodes", []), f"{at}.onnx_nodes")
        _number(layer.get("latency_ms"), f"{at}.latency_ms", low=0.0, high=MAX_LATENCY_MS, optional=True)


def _latency(stats, where: str) -> None:
    _check(isinstance(stats, dict), where, "is not an object")
    for name in ("batch", "runs"):
        value = stats.get(name)
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{where}.{name}",
               "is not a positive integer")
    times = {name: _number(stats.get(name), f"{where}.{name}", low=MIN_LATENCY_MS, high=MAX_LATENCY_MS)
             for name in ("median", "p90", "min", "mean")}
    _check(times["min"] <= times["median"] <= times["p90"], where, "does not have min <= median <= p90")
    _check(times["min"] <= times["mean"], where, "has a mean below its minimum")
    throughput = _number(stats.get("throughput"), f"{where}.throughput", low=0.0)
    expected = stats["batch"] * 1000.0 / times["median"]
    _check(math.isclose(throughput, expected, rel_tol=1e-3), f"{where}.throughput",
           f"is {throughput:.6g}/s but batch and median give {expected:.6g}/s")
    runs = stats.get("times_ms", [])
    _check(isinstance(runs, list), f"{where}.times_ms", "is not a list")
    for j, value in enumerate(runs):
        _number(value, f"{where}.times_ms[{j}]", low=0.0, high=MAX_LATENCY_MS)
    if runs:  # kept run times must give the stated median (an edited median alone is caught here)
        ordered = sorted(runs)
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        _check(len(runs) == stats["runs"] and math.isclose(median, times["median"], rel_tol=1e-6),
               f"{where}.times_ms", "do not give the stated runs and median")
    interval = stats.get("median_ci")
    _check(interval is None or (isinstance(interval, list) and len(interval) == 2), f"{where}.median_ci",
           "is not [low, high] or null")
    if interval is not None:
        low, high = (_number(v, f"{where}.median_ci", low=0.0, high=MAX_LATENCY_MS) for v in interval)
        _check(low <= high, f"{where}.median_ci", "has low above high")
    dims = stats.get("dims", {})
    _check(isinstance(dims, dict) and all(isinstance(v, int) and v >= 1 for v in dims.values()), f"{where}.dims",
           "is not an object of positive integers")


def _accuracy(accuracy) -> None:
    _check(isinstance(accuracy, dict), "accuracy", "is not an object")
    for name in ("top1", "top1_agreement"):
        _number(accuracy.get(name), f"accuracy.{name}", low=0.0, high=1.0, optional=True)
    _number(accuracy.get("cosine"), "accuracy.cosine", low=-1.0 - 1e-3, high=1.0 + 1e-3, optional=True)
    _number(accuracy.get("max_abs_diff"), "accuracy.max_abs_diff", low=0.0, optional=True, infinite=True, nan=True)
    samples = accuracy.get("samples")
    _check(isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0, "accuracy.samples",
           "is not a count")
    outputs = accuracy.get("outputs", [])
    _check(isinstance(outputs, list), "accuracy.outputs", "is not a list")
    for i, output in enumerate(outputs):  # task and metrics are absent in results from before tasks
        where = f"accuracy.outputs[{i}]"
        _check(isinstance(output, dict) and isinstance(output.get("name"), str), where, "has no output name")
        _check(output.get("task") is None or output["task"] in OUTPUT_TASKS, f"{where}.task",
               f"is not one of {OUTPUT_TASKS} or null")
        metrics = output.get("metrics", {})
        _check(isinstance(metrics, dict), f"{where}.metrics", "is not an object")
        for name, value in metrics.items():
            _number(value, f"{where}.metrics.{name}", optional=True, infinite=True, nan=True)
    for key in ("headline_metric", "custom_metric"):
        chosen = accuracy.get(key)
        _check(chosen is None or (isinstance(chosen, dict) and isinstance(chosen.get("name"), str)),
               f"accuracy.{key}", "is not {name, output, value} or null")
        if chosen is not None:
            _number(chosen.get("value"), f"accuracy.{key}.value", optional=True, infinite=True)


def _number(value, where: str, *, low: float = -math.inf, high: float = math.inf, optional: bool = False,
            infinite: bool = False, nan: bool = False) -> float | None:
    """`value` as a float in [low, high]; `infinite`/`nan` admit those where a measurement can really give them."""
    if value is None and optional:
        return None
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), where, "is not a number")
    if math.isnan(value):
        _check(nan, where, "is NaN")
        return float(value)
    _check(math.isfinite(value) or infinite, where, "is not finite")
    _check(low <= value <= high, where, f"is {value!r}, outside [{low:g}, {high:g}]")
    return float(value)


def _strings(value, where: str) -> None:
    _check(isinstance(value, list) and all(isinstance(v, str) for v in value), where, "is not a list of strings")


def _check(condition, where: str, problem: str) -> None:
    if not condition:
        raise SchemaError(f"{where} {problem}")
