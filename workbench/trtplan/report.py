"""Summaries, layer-by-layer comparison and plotly figures for imported TensorRT plans.

Everything here is a pure function of `TrtPlan` objects (no TensorRT, no GPU).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from ..engine import EngineLayer
from . import TrtPlan
from .parse import QDQ_OPS, node_op_type

_ROLE_LABELS = {"qdq": "standalone Q/DQ layers", "reformat": "reformat copies (inserted)",
                "glue": "parser shuffles (inserted)", "unmatched": "compute without a match"}
_NUMBER = re.compile(r"_(\d+)$")


def layer_role(layer: EngineLayer) -> str:
    """'reformat' (inserted copy between formats), 'glue' (other inserted shuffles), 'qdq' (a Quantize/
    Dequantize node TensorRT could not fuse into a neighbour) or 'compute'."""
    if layer.inserted:
        return "reformat" if layer.name.startswith("Reformatting CopyNode") or layer.type == "Reformat" else "glue"
    ops = {node_op_type(n) for n in layer.onnx_nodes}
    if ops and ops <= QDQ_OPS:
        return "qdq"
    return "compute"


def _ms(layer: EngineLayer) -> float:
    return layer.latency_ms or 0.0


def _grouped(plan: TrtPlan, key) -> list[dict]:
    total = plan.total_layer_ms
    groups: dict[str, list[EngineLayer]] = defaultdict(list)
    for layer in plan.layers:
        groups[key(layer)].append(layer)
    rows = [{"group": name, "layers": len(layers), "ms": sum(_ms(l) for l in layers),
             "share": (sum(_ms(l) for l in layers) / total) if total else None}
            for name, layers in groups.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def plan_summary(plan: TrtPlan, top: int = 10) -> dict:
    """Latency by layer type, precision and role; the `top` slowest layers; share of reformat and Q/DQ layers.

    Times are mean per-layer ms from the profile (0 when the plan has no profile).
    """
    total = plan.total_layer_ms

    def renamed(rows, column):
        return [{column: r["group"], **{k: v for k, v in r.items() if k != "group"}} for r in rows]

    by_role = {r["group"]: r for r in _grouped(plan, layer_role)}
    slowest = sorted(plan.layers, key=lambda l: -_ms(l))[:top]
    return {
        "name": plan.name,
        "device": plan.device,
        "layers": len(plan.layers),
        "fused_layers": sum(1 for l in plan.layers if len(l.onnx_nodes) > 1),
        "total_layer_ms": total,
        "median_ms": (plan.latency_ms or {}).get("median"),
        "layer_time_ratio": plan.layer_time_ratio,
        "by_type": renamed(_grouped(plan, lambda l: l.type), "type"),
        "by_precision": renamed(_grouped(plan, lambda l: l.precision), "precision"),
        "by_role": renamed(_grouped(plan, layer_role), "role"),
        "top_layers": [{"name": l.name, "type": l.type, "precision": l.precision, "latency_ms": l.latency_ms,
                        "share": (_ms(l) / total) if total else None, "onnx_nodes": list(l.onnx_nodes)}
                       for l in slowest],
        "reformat_layers": by_role.get("reformat", {}).get("layers", 0),
        "reformat_ms": by_role.get("reformat", {}).get("ms", 0.0),
        "reformat_share": by_role.get("reformat", {}).get("share", 0.0),
        "qdq_layers": by_role.get("qdq", {}).get("layers", 0),
        "qdq_ms": by_role.get("qdq", {}).get("ms", 0.0),
        "qdq_share": by_role.get("qdq", {}).get("share", 0.0),
    }


def fused_layers(plan: TrtPlan) -> list[dict]:
    """Layers built from more than one ONNX name: what TensorRT fused, and how long the fused kernel takes."""
    return [{"layer": l.name, "type": l.type, "precision": l.precision, "onnx_nodes": list(l.onnx_nodes),
             "latency_ms": l.latency_ms} for l in plan.layers if len(l.onnx_nodes) > 1]


def residual_adds(plan: TrtPlan) -> list[dict]:
    """Layers holding an ONNX Add (ResNet/MobileNet residual joins) with the datatypes they read and write.

    In an INT8 plan an Add that reads an FP16/FP32 input means the residual branch was not quantised: the
    join runs in higher precision and a standalone Quantize layer must follow it.
    """
    rows = []
    for layer in plan.layers:
        if any(node_op_type(n) == "Add" for n in layer.onnx_nodes):
            ins, outs = plan.layer_dtypes(layer)
            rows.append({"layer": layer.name, "precision": layer.precision, "input_dtypes": ins,
                         "output_dtypes": outs, "latency_ms": layer.latency_ms,
                         "int8_in_and_out": all(d == "int8" for d in [*ins, *outs] if d)})
    return rows


def quantization_overhead(plan: TrtPlan) -> dict:
    """Numbers that explain why an INT8 (QAT) plan is or is not faster: non-INT8 residual Adds, standalone
    Q/DQ layers and reformat copies, with their summed time."""
    adds = residual_adds(plan)
    summary = plan_summary(plan)
    return {
        "name": plan.name,
        "median_ms": summary["median_ms"],
        "residual_adds": len(adds),
        "residual_adds_not_int8": sum(1 for a in adds if not a["int8_in_and_out"]),
        "qdq_layers": summary["qdq_layers"],
        "qdq_ms": summary["qdq_ms"],
        "reformat_layers": summary["reformat_layers"],
        "reformat_ms": summary["reformat_ms"],
        "int8_layer_ms": sum((_ms(l) for l in plan.layers if l.precision == "int8"), 0.0),
        "total_layer_ms": summary["total_layer_ms"],
    }


@dataclass
class ComparisonRow:
    """One matched compute layer across plans; a cell is None where a plan has no such layer."""

    key: str
    op_type: str
    cells: dict[str, dict | None]

    def to_json(self) -> dict:
        return {"key": self.key, "op_type": self.op_type, "cells": dict(self.cells)}


@dataclass
class PlanComparison:
    """Plans matched layer by layer, plus the time each plan spends outside matched compute layers."""

    labels: list[str]
    match: str  # "name": by ONNX node name; "ordinal": by op type and order (plans from different exports)
    rows: list[ComparisonRow]
    overhead_ms: dict[str, dict[str, float]]  # label -> {"qdq", "reformat", "glue", "unmatched"}
    totals: dict[str, dict] = field(default_factory=dict)  # label -> {"layers_ms", "median_ms"}

    def table(self) -> list[dict]:
        """Flat rows (one per matched layer) for display: key, then '<label> ms' and '<label> precision'."""
        out = []
        for row in self.rows:
            flat = {"key": row.key}
            for label in self.labels:
                cell = row.cells.get(label)
                flat[f"{label} ms"] = cell["latency_ms"] if cell else None
                flat[f"{label} precision"] = cell["precision"] if cell else None
            out.append(flat)
        return out

    def to_json(self) -> dict:
        return {"labels": list(self.labels), "match": self.match, "rows": [r.to_json() for r in self.rows],
                "overhead_ms": {k: dict(v) for k, v in self.overhead_ms.items()},
                "totals": {k: dict(v) for k, v in self.totals.items()}}


def _anchors(plan: TrtPlan) -> list[tuple[EngineLayer, str, str]]:
    """(layer, anchor node, op type) per compute layer: the anchor is its first non-Q/DQ ONNX node with an op type."""
    out = []
    for layer in plan.layers:
        if layer_role(layer) != "compute":
            continue
        for node in layer.onnx_nodes:
            op = node_op_type(node)
            if op and op not in QDQ_OPS:
                out.append((layer, node, op))
                break
    return out


def _ordinal_keys(anchors: list[tuple[EngineLayer, str, str]]) -> list[str]:
    """'Conv#3' = the fourth Conv, ordered by the exporter's node number when every name has one (engine order
    differs between plans, e.g. where a downsample conv runs), else by engine order."""
    by_op: dict[str, list[int]] = defaultdict(list)
    for i, (_, _, op) in enumerate(anchors):
        by_op[op].append(i)
    keys = [""] * len(anchors)
    for op, indices in by_op.items():
        numbers = [_NUMBER.search(anchors[i][1]) for i in indices]
        if all(numbers):
            indices = [i for _, i in sorted(zip((int(m.group(1)) for m in numbers), indices))]
        for rank, i in enumerate(indices):
            keys[i] = f"{op}#{rank}"
    return keys


def compare_plans(plans: dict[str, TrtPlan], match: str = "auto") -> PlanComparison:
    """Match compute layers across plans. `match`: "name" (same ONNX export: anchor node names are shared),
    "ordinal" (different exports, e.g. FP32 vs a QAT model: the k-th Conv matches the k-th Conv) or "auto"
    (name when every plan shares at least half its anchor names with the first plan)."""
    if match not in ("auto", "name", "ordinal"):
        raise ValueError(f"match must be 'auto', 'name' or 'ordinal', not {match!r}")
    labels = list(plans)
    anchors = {label: _anchors(plan) for label, plan in plans.items()}
    if match == "auto":
        first = {node for _, node, _ in anchors[labels[0]]} if labels else set()
        shared = all(sum(node in first for _, node, _ in a) >= 0.5 * len(a) for a in anchors.values() if a)
        match = "name" if shared else "ordinal"
    keyed: dict[str, dict[str, tuple[EngineLayer, str]]] = {}
    order: dict[str, str] = {}  # key -> op type, in first-seen order (a dict: membership is O(1))
    for label in labels:
        keys = [node for _, node, _ in anchors[label]] if match == "name" else _ordinal_keys(anchors[label])
        cells = {}
        for key, (layer, _, op) in zip(keys, anchors[label]):
            cells[key] = (layer, op)
            order.setdefault(key, op)
        keyed[label] = cells
    rows = [ComparisonRow(key, op, {
        label: ({"layer": keyed[label][key][0].name, "latency_ms": keyed[label][key][0].latency_ms,
                 "precision": keyed[label][key][0].precision, "type": keyed[label][key][0].type}
                if key in keyed[label] else None) for label in labels}) for key, op in order.items()]
    overhead = {}
    for label, plan in plans.items():
        matched = {id(layer) for layer, _ in keyed[label].values()}
        buckets = {"qdq": 0.0, "reformat": 0.0, "glue": 0.0, "unmatched": 0.0}
        for layer in plan.layers:
            role = layer_role(layer)
            if role != "compute":
                buckets[role] += _ms(layer)
            elif id(layer) not in matched:
                buckets["unmatched"] += _ms(layer)
        overhead[label] = buckets
    totals = {label: {"layers_ms": plan.total_layer_ms, "median_ms": (plan.latency_ms or {}).get("median")}
              for label, plan in plans.items()}
    return PlanComparison(labels, match, rows, overhead, totals)


def plan_latency_by_type_figure(plans: TrtPlan | dict[str, TrtPlan], by: str = "type"):
    """Stacked bar per plan: summed per-layer ms split by layer `by` = "type", "precision" or "role"."""
    import plotly.graph_objects as go

    if isinstance(plans, TrtPlan):
        plans = {plans.name: plans}
    key = {"type": lambda l: l.type, "precision": lambda l: l.precision, "role": layer_role}.get(by)
    if key is None:
        raise ValueError(f"by must be 'type', 'precision' or 'role', not {by!r}")
    labels = list(plans)
    sums = {label: defaultdict(float) for label in labels}
    for label, plan in plans.items():
        for layer in plan.layers:
            sums[label][key(layer)] += _ms(layer)
    groups = sorted({g for s in sums.values() for g in s}, key=lambda g: -sum(s.get(g, 0.0) for s in sums.values()))
    fig = go.Figure([go.Bar(name=g, x=labels, y=[sums[label].get(g, 0.0) for label in labels]) for g in groups])
    medians = [(plans[l].latency_ms or {}).get("median") for l in labels]
    if any(m is not None for m in medians):
        fig.add_trace(go.Scatter(name="end-to-end median", x=labels, y=medians, mode="markers",
                                 marker={"symbol": "diamond", "size": 12, "color": "black"}))
    fig.update_layout(barmode="stack", title=f"Summed per-layer time by {by}", yaxis_title="ms per inference",
                      legend_title=by)
    return fig


def plan_comparison_figure(plans: dict[str, TrtPlan] | PlanComparison, match: str = "auto"):
    """Grouped bars: each matched compute layer's ms per plan, then each plan's Q/DQ, reformat and unmatched time.

    Hover shows the engine layer name and precision.
    """
    import plotly.graph_objects as go

    comparison = plans if isinstance(plans, PlanComparison) else compare_plans(plans, match=match)
    extra = [k for k in ("qdq", "reformat", "glue", "unmatched")
             if any(comparison.overhead_ms[label][k] for label in comparison.labels)]
    x = [row.key for row in comparison.rows] + [_ROLE_LABELS[k] for k in extra]
    traces = []
    for label in comparison.labels:
        cells = [row.cells[label] for row in comparison.rows]
        y = [c["latency_ms"] if c else None for c in cells] + [comparison.overhead_ms[label][k] for k in extra]
        hover = [f"{c['layer']}<br>{c['precision']}" if c else "not in this plan" for c in cells] + \
                [_ROLE_LABELS[k] for k in extra]
        traces.append(go.Bar(name=label, x=x, y=y, hovertext=hover,
                             customdata=[c["precision"] if c else None for c in cells] + [None] * len(extra)))
    fig = go.Figure(traces)
    fig.update_layout(barmode="group", title=f"Per-layer time, matched by {comparison.match}",
                      yaxis_title="ms per inference", xaxis_tickangle=-45)
    return fig


__all__ = ["ComparisonRow", "PlanComparison", "compare_plans", "fused_layers", "layer_role",
           "plan_comparison_figure", "plan_latency_by_type_figure", "plan_summary", "quantization_overhead",
           "residual_adds"]
