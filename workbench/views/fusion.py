"""Fusion view: the ONNX graph before fusion beside the engine's layers after it, as static graphviz SVG.

Every multi-node engine layer (a fused group) gets one fill colour in both graphs, and a cluster outline
around its nodes in the "before" graph. Big graphs are split into pages in the engine's execution order.
"""
from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from plotly.colors import qualitative, unlabel_rgb

from .._optional import require
from ..engine import EngineGraph, EngineLayer
from ..errors import MissingDependencyError, WorkbenchError
from ..models.spec import Model
from ..output import atomic_write
from ..results import RunResult

# Pastel fills keep black label text readable; greys (unfused layers) and pale yellows (inserted layers)
# are left out so a fused group is never mistaken for either.
_GROUP_COLORS = list(dict.fromkeys(
    "#%02x%02x%02x" % (r, g, b)
    for r, g, b in (tuple(int(v) for v in unlabel_rgb(c))
                    for c in qualitative.Set3 + qualitative.Pastel1 + qualitative.Pastel2)
    if len({r, g, b}) > 1 and not (r > 240 and g > 230 and b < 215)
))
SINGLE_COLOR = "#eeeeee"  # a layer built from exactly one ONNX node
INSERTED_COLOR = "#fff3b0"  # reorder / cast / Q-DQ glue the engine added
REMOVED_COLOR = "#ffffff"  # ONNX node no layer claims (folded or eliminated)
_LABEL_CHARS = 34


@dataclass
class _Unit:
    """One engine layer on a page, with the ONNX nodes it covers that exist in the model."""

    layer: EngineLayer
    index: int  # position in the engine's execution order (stable node id across pages and filters)
    color: str
    nodes: list[int] = field(default_factory=list)  # indices into the model's node list


@dataclass
class FusionView:
    """Before/after fusion graphs of one page as SVG; shows side by side in a notebook (static, no JS)."""

    before_svg: str
    after_svg: str
    title: str
    page: int
    pages: int
    summary: dict

    @property
    def svg(self) -> str:
        """One standalone SVG holding both graphs side by side (e.g. to save to a file)."""
        before, after = _strip_prolog(self.before_svg), _strip_prolog(self.after_svg)
        (w1, h1), (w2, h2) = _size(before), _size(after)
        gap = 24
        return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                f'width="{w1 + w2 + gap:.0f}pt" height="{max(h1, h2):.0f}pt" '
                f'viewBox="0 0 {w1 + w2 + gap:.0f} {max(h1, h2):.0f}">'
                f'{_place(before, 0)}{_place(after, w1 + gap)}</svg>')

    def save(self, path: str) -> None:
        """Write `.svg` to `path` (atomically, like every output)."""
        atomic_write(path, self.svg.encode("utf-8"))

    def _repr_html_(self) -> str:
        s = self.summary
        swatch = ('<span style="display:inline-block;width:12px;height:12px;border:1px solid #555;'
                  'background:{};margin:0 4px 0 10px;vertical-align:middle{}"></span>{}')
        legend = "".join([
            swatch.format(_GROUP_COLORS[0], "", "fused group (same colour before and after)"),
            swatch.format(SINGLE_COLOR, "", "one node, one layer"),
            swatch.format(INSERTED_COLOR, ";border-style:dashed", "inserted by the engine"),
            swatch.format(REMOVED_COLOR, ";border-style:dotted", "removed (folded/eliminated)"),
        ])
        counts = (f"{s['original_nodes']} ONNX nodes → {s['engine_layers']} engine layers; "
                  f"{s['fused_groups']} fused groups, {s['inserted_layers']} inserted, "
                  f"{s['removed_nodes']} removed · page {self.page + 1} of {self.pages}")
        # the (wide) ONNX graph scrolls; the (narrow) engine graph keeps its size beside it
        column = '<div style="flex:0 {} auto;min-width:0;overflow:auto"><div style="font-weight:bold">{}</div>{}</div>'
        return (f'<div><div style="font-weight:bold;font-size:1.1em">{html.escape(self.title)}</div>'
                f'<div style="font-size:0.9em;margin:2px 0 6px 0">{html.escape(counts)}</div>'
                f'<div style="font-size:0.85em;margin-bottom:6px">{legend}</div>'
                f'<div style="display:flex;flex-direction:row;gap:16px;align-items:flex-start">'
                f'{column.format(1, "Before fusion (ONNX nodes)", _strip_prolog(self.before_svg))}'
                f'{column.format(0, "After fusion (engine layers)", _strip_prolog(self.after_svg))}</div></div>')


def fusion_graph(model: Model | onnx.ModelProto, engine: EngineGraph | RunResult, *, max_nodes: int = 80,
                 page: int = 0, filter: str | Callable[[EngineLayer], bool] | None = None) -> FusionView:
    """Render `model`'s ONNX graph before fusion beside `engine`'s layers after fusion.

    Pass the ONNX model the engine was built from (after the precision transform for FP16/INT8).
    Pages hold up to `max_nodes` ONNX nodes each, in engine execution order; `filter="fused"` shows only
    layers built from two or more nodes, or pass a callable taking an EngineLayer.
    """
    proto = model.proto if isinstance(model, Model) else model
    if isinstance(engine, RunResult):
        if engine.engine is None:
            raise WorkbenchError(f"{engine.label} has no engine graph: run it with a backend that reports layers.")
        engine = engine.engine
    if max_nodes < 1:
        raise WorkbenchError(f"max_nodes={max_nodes} is too small: give at least 1 (default 80).")
    keep = _layer_filter(filter)

    nodes = list(proto.graph.node)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(nodes)]
    index = {name: i for i, name in enumerate(names)}
    known = [n for layer in engine.layers for n in layer.onnx_nodes if n in index]
    if nodes and engine.layers and not known and any(l.onnx_nodes for l in engine.layers):
        raise WorkbenchError(
            "None of the engine's layers refers to a node of this model: the engine was built from another graph. "
            "Pass the ONNX model the engine was built from (for FP16/INT8 the output of precision.apply_plan).")

    units, claimed, color_index = [], set(), 0
    for position, layer in enumerate(engine.layers):
        covered = [index[n] for n in layer.onnx_nodes if n in index]
        if len(covered) > 1:
            color, color_index = _GROUP_COLORS[color_index % len(_GROUP_COLORS)], color_index + 1
        else:
            color = INSERTED_COLOR if layer.inserted or not covered else SINGLE_COLOR
        claimed.update(covered)
        units.append(_Unit(layer, position, color, covered))
    removed = [i for i in range(len(nodes)) if i not in claimed]
    summary = {
        "original_nodes": len(nodes), "engine_layers": len(engine.layers),
        "fused_groups": sum(len(u.nodes) > 1 for u in units),
        "inserted_layers": sum(u.layer.inserted for u in units), "removed_nodes": len(removed),
    }

    shown = [u for u in units if keep(u)]
    pages = _paginate(shown, removed if filter is None else [], max_nodes)
    if not 0 <= page < len(pages):
        raise WorkbenchError(f"page={page} is out of range: this view has {len(pages)} page(s), "
                             f"use 0..{len(pages) - 1} (or raise max_nodes).")
    page_units, page_removed = pages[page]
    shapes = _shapes(proto)
    before = _before_graph(proto, names, page_units, page_removed, shapes)
    # Weights of the optimised graph show up as layer inputs; only tensors some layer makes, or the
    # model's inputs, get edges.
    data_tensors = {t for layer in engine.layers for t in layer.outputs} | {i.name for i in proto.graph.input}
    after = _after_graph(page_units, shapes, data_tensors)
    title = f"Fusion: {getattr(model, 'name', proto.graph.name) or 'model'} on {engine.backend}"
    if filter is not None:
        title += f" (filter: {filter if isinstance(filter, str) else getattr(filter, '__name__', 'custom')})"
    return FusionView(before_svg=_render(before), after_svg=_render(after), title=title, page=page,
                      pages=len(pages), summary={**summary, "page": page, "pages": len(pages)})


def _layer_filter(filter) -> Callable[[_Unit], bool]:
    if filter is None:
        return lambda unit: True
    if filter == "fused":
        return lambda unit: len(unit.nodes) > 1
    if callable(filter):
        return lambda unit: bool(filter(unit.layer))
    raise WorkbenchError(f"filter={filter!r} is not supported: use None, 'fused', or a function EngineLayer -> bool.")


def _paginate(units: list[_Unit], removed: list[int], max_nodes: int) -> list[tuple[list[_Unit], list[int]]]:
    """Cut the execution order into pages of at most `max_nodes` ONNX nodes (a fused group is never split,
    so one group larger than `max_nodes` gets a page of its own). Removed nodes go with the unit holding the
    closest earlier node in ONNX order."""
    attached: dict[int, list[int]] = {}
    owner_of = {n: k for k, unit in enumerate(units) for n in unit.nodes}
    for node in removed:
        earlier = [owner_of[n] for n in range(node - 1, -1, -1) if n in owner_of][:1]
        attached.setdefault(earlier[0] if earlier else 0, []).append(node)
    pages: list[tuple[list[_Unit], list[int]]] = [([], [])]
    used = 0
    for k, unit in enumerate(units):
        weight = max(len(unit.nodes), 1) + len(attached.get(k, []))
        if pages[-1][0] and used + weight > max_nodes:
            pages.append(([], []))
            used = 0
        pages[-1][0].append(unit)
        pages[-1][1].extend(attached.get(k, []))
        used += weight
    if not units and removed:
        pages[-1][1].extend(removed)
    return pages


def _shapes(proto: onnx.ModelProto) -> dict[str, str]:
    graph = proto.graph
    if not graph.value_info and len(graph.node) > 1:
        try:  # labels want output shapes; inference is cheap and leaves the caller's model untouched
            graph = onnx.shape_inference.infer_shapes(proto).graph
        except Exception:  # noqa: BLE001 - shapes are decoration; an un-inferable model still renders
            pass
    shapes = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = "×".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                                         for d in dims) or "scalar"
    return shapes


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else "…" + text[-(_LABEL_CHARS - 1):]


def _label(*parts: str) -> str:
    graphviz = require("graphviz", extra="notebook", purpose="the fusion graph view")
    return graphviz.nohtml("\\n".join(graphviz.escape(p) for p in parts if p))


def _text(text: str) -> str:
    """Any name as literal DOT text: backslashes, quotes and '<...>' lose their special meaning."""
    return require("graphviz", extra="notebook", purpose="the fusion graph view").escape(text)


def _digraph(name: str):
    graphviz = require("graphviz", extra="notebook", purpose="the fusion graph view")
    g = graphviz.Digraph(name)
    g.attr(rankdir="TB", nodesep="0.25", ranksep="0.3", fontname="Helvetica", fontsize="10")
    g.attr("node", shape="box", style="rounded,filled", fontname="Helvetica", fontsize="9", height="0.3",
           penwidth="1")
    g.attr("edge", arrowsize="0.6", color="#555555")
    return g


def _stub(g, key: str, tensor: str, shapes: dict[str, str], stubs: dict[str, str]) -> str:
    """A small ellipse standing for a tensor made or used off this page (or a graph input/output)."""
    if key not in stubs:
        stubs[key] = f"t{len(stubs)}"  # an id free of the tensor name (':' would make it a port)
        g.node(stubs[key], label=_label(_short(tensor), shapes.get(tensor, "")), shape="ellipse", style="dashed",
               fontsize="8", color="#888888", fontcolor="#555555", tooltip=_text(f"tensor {tensor}"))
    return stubs[key]


def _before_graph(proto: onnx.ModelProto, names: list[str], units: list[_Unit], removed: list[int],
                  shapes: dict[str, str]):
    g = _digraph("before")
    nodes = proto.graph.node
    layer_of = {n: unit for unit in units for n in unit.nodes}
    # Constant nodes are drawn like weights (not at all): exported shape arithmetic would bury the real graph
    hidden = {i for i in layer_of if nodes[i].op_type == "Constant"}
    weights = {init.name for init in proto.graph.initializer} | {t for i in hidden for t in nodes[i].output}
    on_page = sorted(set(layer_of) | set(removed))
    producer = {out: i for i in on_page for out in nodes[i].output}

    def add(i: int, target) -> None:
        if i in hidden:
            return
        node, unit = nodes[i], layer_of.get(i)
        out_shape = shapes.get(node.output[0], "") if node.output else ""
        if unit is None:
            tip = f"{names[i]} ({node.op_type}): no engine layer (constant-folded or eliminated)"
            target.node(f"b{i}", label=_label(_short(names[i]), node.op_type, out_shape), fillcolor=REMOVED_COLOR,
                        style="rounded,dotted", tooltip=_text(tip))
            return
        ms = "" if unit.layer.latency_ms is None else f", {unit.layer.latency_ms:.4f} ms"
        tip = f"{names[i]} ({node.op_type}) → layer {unit.layer.name} [{unit.layer.precision}{ms}]"
        target.node(f"b{i}", label=_label(_short(names[i]), node.op_type, out_shape), fillcolor=unit.color,
                    tooltip=_text(tip))

    for k, unit in enumerate(units):
        if len(unit.nodes) > 1:
            with g.subgraph(name=f"cluster_{k}") as c:
                c.attr(label=_label(_short(unit.layer.name)), style="rounded,dashed", color="#444444",
                       fontsize="8", tooltip=_text(f"fused into layer {unit.layer.name}"))
                for i in unit.nodes:
                    add(i, c)
        else:
            for i in unit.nodes:
                add(i, g)
    for i in removed:
        add(i, g)

    stubs: dict[str, str] = {}
    graph_outputs = {o.name for o in proto.graph.output}
    for i in on_page:
        if i in hidden:
            continue
        for tensor in nodes[i].input:
            if not tensor or tensor in weights:
                continue
            src = f"b{producer[tensor]}" if tensor in producer else _stub(g, f"t_in_{tensor}", tensor, shapes, stubs)
            g.edge(src, f"b{i}")
        for tensor in nodes[i].output:
            if tensor in graph_outputs:
                g.edge(f"b{i}", _stub(g, f"t_out_{tensor}", tensor, shapes, stubs))
    return g


def _after_graph(units: list[_Unit], shapes: dict[str, str], data_tensors: set[str]):
    g = _digraph("after")
    producer = {out: unit.index for unit in units for out in unit.layer.outputs}
    consumed = {t for unit in units for t in unit.layer.inputs}
    stubs: dict[str, str] = {}
    for unit in units:
        layer, k = unit.layer, unit.index
        shape = "×".join(str(d) for d in layer.output_shapes[0]) if layer.output_shapes and layer.output_shapes[0] else \
            (shapes.get(layer.outputs[0], "") if layer.outputs else "")
        ms = "" if layer.latency_ms is None else f"{layer.latency_ms:.4f} ms"
        tip = "\n".join(filter(None, [
            f"{layer.name} ({layer.type}, {layer.precision})", ms and f"latency {ms}",
            f"kernel {layer.kernel}" if layer.kernel else "",
            "inserted by the engine" if layer.inserted else f"ONNX nodes: {', '.join(layer.onnx_nodes)}"]))
        g.node(f"a{k}", label=_label(_short(layer.name), f"{layer.type} · {layer.precision}", shape, ms),
               fillcolor=unit.color, style="rounded,filled,dashed" if layer.inserted else "rounded,filled",
               penwidth="2" if len(unit.nodes) > 1 else "1", tooltip=_text(tip))
        for tensor in layer.inputs:
            if tensor in producer:
                g.edge(f"a{producer[tensor]}", f"a{k}")
            elif tensor in data_tensors:
                g.edge(_stub(g, f"t_in_{tensor}", tensor, shapes, stubs), f"a{k}")
        for tensor in layer.outputs:
            if tensor not in consumed:
                g.edge(f"a{k}", _stub(g, f"t_out_{tensor}", tensor, shapes, stubs))
    return g


def _render(g) -> str:
    graphviz = require("graphviz", extra="notebook", purpose="the fusion graph view")
    try:
        return g.pipe(format="svg", encoding="utf-8")
    except graphviz.ExecutableNotFound as exc:
        raise MissingDependencyError(
            "Graphviz's 'dot' program was not found on PATH (needed for the fusion graph view): "
            "apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS) or conda install graphviz."
        ) from exc


def _strip_prolog(svg: str) -> str:
    """Drop the XML declaration, DOCTYPE and comments so the SVG can be inlined in HTML or another SVG."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


_SIZE = re.compile(r'width="([\d.]+)pt"\s+height="([\d.]+)pt"')


def _size(svg: str) -> tuple[float, float]:
    match = _SIZE.search(svg)
    return (float(match.group(1)), float(match.group(2))) if match else (0.0, 0.0)


def _place(svg: str, x: float) -> str:
    """Nest a dot SVG at offset x; its size becomes plain user units so the outer viewBox scales both alike."""
    w, h = _size(svg)
    return _SIZE.sub(f'x="{x:.0f}" y="0" width="{w:.0f}" height="{h:.0f}"', svg, count=1)
