"""Fusion view: the ONNX graph before fusion beside the engine's layers after it, as static graphviz SVG.

Every multi-node engine layer (a fused group) gets one fill colour in both graphs, and a cluster outline
around its nodes in the "before" graph. Big graphs are split into pages in the engine's execution order.
Subgraphs of constants only (weights, weight Q/DQ) are drawn like weights (not at all), and exported shape
arithmetic (Shape/Gather/Unsqueeze/Concat... chains feeding Reshape, Pad, Expand) is collapsed into one box.
"""
from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
from plotly.colors import qualitative, unlabel_rgb

from .._optional import require
from ..engine import EngineGraph, EngineLayer
from ..graph import GraphIndex
from ..errors import MissingDependencyError, WorkbenchError
from ..models.spec import Model
from ..output import atomic_write
from ..results import RunResult
from .figures import short_name

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
GLUE_COLOR = "#f4f4f4"  # collapsed shape arithmetic
_LABEL_CHARS = 34
# Side by side from STACK_BELOW_PX of view width; narrower (1024x768 with JupyterLab's file browser open) the
# "After fusion" column goes under the "Before" one, each scrolling inside itself, so it is always reachable.
STACK_BELOW_PX = 760
_FUSION_STYLE = (
    "<style>.workbench-fusion-view{max-width:100%;container-type:inline-size}"
    ".workbench-fusion-columns{display:flex;flex-direction:row;gap:12px;align-items:flex-start;width:100%}"
    ".workbench-fusion-before,.workbench-fusion-after{min-width:0;overflow:auto;max-height:75vh;"
    "border:1px solid #e4e4e4;border-radius:4px;padding:4px;box-sizing:border-box}"
    ".workbench-fusion-before{flex:1 1 0}.workbench-fusion-after{flex:0 1 auto;max-width:48%}"
    f"@container (max-width:{STACK_BELOW_PX}px){{.workbench-fusion-columns{{flex-direction:column}}"
    ".workbench-fusion-before,.workbench-fusion-after{flex:none;width:100%;max-width:100%;max-height:60vh}}"
    "</style>")
# Ops that compute on shapes when every input they read is a shape or a constant (Shape/Size start the chain).
_SHAPE_SOURCES = frozenset({"Shape", "Size"})
_SHAPE_OPS = frozenset({"Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Range", "ReduceProd",
                        "ReduceMax", "ReduceMin", "Add", "Sub", "Mul", "Div", "Floor", "Ceil", "Equal", "Where",
                        "ConstantOfShape", "Identity", "Not", "Less", "Greater", "Max", "Min", "Neg", "Abs", "Mod",
                        "Reshape", "Expand", "Tile", "Sqrt"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


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
            swatch.format(GLUE_COLOR, ";border-style:dashed", "shape arithmetic (collapsed)"),
        ])
        counts = (f"{s['original_nodes']} ONNX nodes → {s['engine_layers']} engine layers; "
                  f"{s['fused_groups']} fused groups, {s['inserted_layers']} inserted, "
                  f"{s['removed_nodes']} removed · page {self.page + 1} of {self.pages}")
        # Both columns scroll inside themselves: the wide ONNX graph never pushes the engine layers off screen.
        column = ('<div class="{}"><div style="font-weight:bold;position:sticky;top:0;left:0;'
                  'background:#fff">{}</div>{}</div>')
        return (f'{_FUSION_STYLE}<div class="workbench-fusion-view">'
                f'<div style="font-weight:bold;font-size:1.1em">{html.escape(self.title)}</div>'
                f'<div style="font-size:0.9em;margin:2px 0 6px 0">{html.escape(counts)}</div>'
                f'<div style="font-size:0.85em;margin-bottom:6px">{legend}</div>'
                f'<div class="workbench-fusion-columns">'
                f'{column.format("workbench-fusion-before", "Before fusion (ONNX nodes)", _inline(self.before_svg))}'
                f'{column.format("workbench-fusion-after", "After fusion (engine layers)", _inline(self.after_svg))}'
                f'</div></div>')


def fusion_pages_html(model: Model | onnx.ModelProto, engine: EngineGraph | RunResult, *, max_nodes: int = 80,
                      max_pages: int = 20) -> str:
    """Every page of the fusion view in one HTML block with previous/next buttons (a few lines of inline JS, so
    it works in a saved report); pages past `max_pages` are left out with a note."""
    layout = _layout(model, engine, max_nodes, None)
    shown = min(len(layout.pages), max_pages)
    views = [layout.view(p) for p in range(shown)]
    first = views[0]
    buttons = "" if shown < 2 else (
        f'<div style="margin:4px 0"><button class="workbench-page-previous" disabled '
        f'onclick="{html.escape(_turn_page_js(-1))}">◀ previous page</button> '
        f'<button class="workbench-page-next" onclick="{html.escape(_turn_page_js(1))}">next page ▶</button></div>')
    more = "" if shown == first.pages else (f"<p>Pages {shown + 1}-{first.pages} are not included here: open the "
                                            "explorer or call views.fusion_graph(..., page=N).</p>")
    hidden = ' style="display:none"'
    pages = "".join(f'<div class="workbench-fusion-page"{hidden if k else ""}>{view._repr_html_()}</div>'
                    for k, view in enumerate(views))
    return f'<div class="workbench-fusion-pages">{buttons}{pages}{more}</div>'


def _turn_page_js(step: int) -> str:
    return ("var v=this.closest('.workbench-fusion-pages'),p=[...v.querySelectorAll('.workbench-fusion-page')],"
            "i=p.findIndex(function(e){return e.style.display!=='none'}),"
            f"n=Math.max(0,Math.min(p.length-1,i+({step})));"
            "p.forEach(function(e,k){e.style.display=k===n?'':'none'});"
            "v.querySelector('.workbench-page-previous').disabled=n===0;"
            "v.querySelector('.workbench-page-next').disabled=n===p.length-1")


def fusion_graph(model: Model | onnx.ModelProto, engine: EngineGraph | RunResult, *, max_nodes: int = 80,
                 page: int = 0, filter: str | Callable[[EngineLayer], bool] | None = None) -> FusionView:
    """Render `model`'s ONNX graph before fusion beside `engine`'s layers after fusion.

    Pass the ONNX model the engine was built from (after the precision transform for FP16/INT8).
    Pages hold up to `max_nodes` ONNX nodes each, in engine execution order; `filter="fused"` shows only
    layers built from two or more nodes, or pass a callable taking an EngineLayer.
    """
    return _layout(model, engine, max_nodes, filter).view(page)


@dataclass
class _Layout:
    """What every page of one fusion view shares: the graph index, layer units, node roles and the page cuts."""

    title: str
    graph: GraphIndex
    names: list[str]
    summary: dict
    roles: "_Roles"
    undrawn: set[int]
    pages: list[tuple[list[_Unit], list[int]]]
    shapes: dict[str, str]
    data_tensors: set[str]

    def view(self, page: int) -> FusionView:
        if not 0 <= page < len(self.pages):
            raise WorkbenchError(f"page={page} is out of range: this view has {len(self.pages)} page(s), "
                                 f"use 0..{len(self.pages) - 1} (or raise max_nodes).")
        page_units, page_removed = self.pages[page]
        before = _before_graph(self.graph, self.names, page_units, page_removed, self.shapes, self.roles)
        after = _after_graph(page_units, self.shapes, self.data_tensors, self.graph.nodes, self.undrawn)
        return FusionView(before_svg=_render(before), after_svg=_render(after), title=self.title, page=page,
                          pages=len(self.pages), summary={**self.summary, "page": page, "pages": len(self.pages)})


def _layout(model: Model | onnx.ModelProto, engine: EngineGraph | RunResult, max_nodes: int, filter) -> _Layout:
    proto = model.proto if isinstance(model, Model) else model
    if isinstance(engine, RunResult):
        if engine.engine is None:
            raise WorkbenchError(f"{engine.label} has no engine graph: run it with a backend that reports layers.")
        engine = engine.engine
    if max_nodes < 1:
        raise WorkbenchError(f"max_nodes={max_nodes} is too small: give at least 1 (default 80).")
    keep = _layer_filter(filter)

    graph = GraphIndex(proto)
    nodes = graph.nodes
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

    roles = _roles(graph)
    undrawn = roles.hidden | set(roles.glue)
    shown = [u for u in units if keep(u)]
    pages = _paginate(shown, [i for i in removed if i not in undrawn] if filter is None else [], max_nodes, undrawn)
    # Weights of the optimised graph show up as layer inputs; only tensors some layer makes, or the
    # model's inputs, get edges.
    data_tensors = {t for layer in engine.layers for t in layer.outputs} | {i.name for i in proto.graph.input}
    title = f"Fusion: {getattr(model, 'name', proto.graph.name) or 'model'} on {engine.backend}"
    if filter is not None:
        title += f" (filter: {filter if isinstance(filter, str) else getattr(filter, '__name__', 'custom')})"
    return _Layout(title, graph, names, summary, roles, undrawn, pages, _shapes(proto), data_tensors)


def _layer_filter(filter) -> Callable[[_Unit], bool]:
    if filter is None:
        return lambda unit: True
    if filter == "fused":
        return lambda unit: len(unit.nodes) > 1
    if callable(filter):
        return lambda unit: bool(filter(unit.layer))
    raise WorkbenchError(f"filter={filter!r} is not supported: use None, 'fused', or a function EngineLayer -> bool.")


def _paginate(units: list[_Unit], removed: list[int], max_nodes: int,
              undrawn: set[int]) -> list[tuple[list[_Unit], list[int]]]:
    """Cut the execution order into pages of at most `max_nodes` drawn ONNX nodes (a fused group is never split,
    so one group larger than `max_nodes` gets a page of its own; constants and collapsed shape arithmetic do not
    count). Removed nodes go with the unit holding the closest earlier node in ONNX order."""
    attached: dict[int, list[int]] = {}
    owner_of = {n: k for k, unit in enumerate(units) for n in unit.nodes}
    for node in removed:
        earlier = [owner_of[n] for n in range(node - 1, -1, -1) if n in owner_of][:1]
        attached.setdefault(earlier[0] if earlier else 0, []).append(node)
    pages: list[tuple[list[_Unit], list[int]]] = [([], [])]
    used = 0
    for k, unit in enumerate(units):
        weight = max(sum(n not in undrawn for n in unit.nodes), 1) + len(attached.get(k, []))
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
            shapes[info.name] = _dims_text([d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims])
    return shapes


def _dims_text(dims) -> str:
    """Readable shape: "batch×32×?×?" (axis 0 is the sample axis; exporter placeholders like unk__5 are "?")."""
    if not dims:
        return "scalar"
    parts = []
    for axis, dim in enumerate(dims):
        if isinstance(dim, int) and dim > 0:
            parts.append(str(dim))
        elif axis == 0:
            parts.append("batch")
        else:
            text = str(dim or "")
            parts.append("?" if not text or text.startswith("unk__") or text.isdigit() or text == "-1" else text)
    return "×".join(parts)


def _short(text: str) -> str:
    return short_name(text, _LABEL_CHARS)


@dataclass
class _Roles:
    """Nodes not drawn one by one: constant-only subgraphs (like weights) and shape arithmetic (one box each)."""

    hidden: set[int]
    glue: dict[int, int]  # node -> id of its shape-arithmetic box (the first node of its connected chain)
    boxes: dict[int, list[int]]


def _roles(graph: GraphIndex) -> _Roles:
    constant = set(graph.initializers)
    shape_tensors: set[str] = set()
    hidden, glue = set(), []
    for i in graph.topological_order():
        node = graph.nodes[i]
        inputs = [t for t in node.input if t]
        if all(t in constant for t in inputs):
            hidden.add(i)
            constant.update(t for t in node.output if t)
        elif node.op_type in _SHAPE_SOURCES or (
                node.op_type in _SHAPE_OPS and all(t in constant or t in shape_tensors for t in inputs)):
            glue.append(i)
            shape_tensors.update(t for t in node.output if t)
    parent = {i: i for i in glue}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in glue:
        for j in graph.predecessors(i):
            if j in parent:
                parent[find(i)] = find(j)
    roots = {i: find(i) for i in glue}
    boxes: dict[int, list[int]] = {}
    for i, root in roots.items():
        boxes.setdefault(root, []).append(i)
    return _Roles(hidden, roots, boxes)


# Graphviz rejects any DOT string longer than 16,384 characters (a syntax error, no SVG). Drawn labels are cut far
# below that; a longer tooltip (e.g. the node list of a layer fusing thousands of nodes) goes into DOT as a short
# placeholder (letters and digits only: dot escapes the rest) that `_render` swaps for the full, escaped text in the
# SVG, so the hover still shows all of it.
_DOT_CHARS = 16_384
_LABEL_PART_CHARS = 200
_LONG_TEXTS: dict[str, str] = {}  # placeholder -> full text, bounded (see _long_text)


def _label(*parts: str) -> str:
    graphviz = require("graphviz", extra="notebook", purpose="the fusion graph view")
    return graphviz.nohtml("\\n".join(graphviz.escape(_cut(p)) for p in parts if p))


def _cut(text: str) -> str:
    """A drawn label part of at most _LABEL_PART_CHARS characters (the hover and the JSON keep the full text)."""
    if len(text) <= _LABEL_PART_CHARS:
        return text
    return text[:_LABEL_PART_CHARS - 40] + f"… (+{len(text) - _LABEL_PART_CHARS + 40:,} characters)"


def _text(text: str) -> str:
    """Any name as literal DOT text: backslashes, quotes and '<...>' lose their special meaning."""
    escaped = require("graphviz", extra="notebook", purpose="the fusion graph view").escape(text)
    return escaped if len(escaped) < _DOT_CHARS // 2 else _long_text(text)


def _long_text(text: str) -> str:
    key = "workbenchlongtext" + hashlib.sha1(text.encode("utf-8")).hexdigest()
    if len(_LONG_TEXTS) > 256:
        _LONG_TEXTS.clear()
    _LONG_TEXTS[key] = text
    return key


def _with_long_texts(svg: str) -> str:
    for key in [k for k in _LONG_TEXTS if k in svg]:
        svg = svg.replace(key, html.escape(_LONG_TEXTS[key], quote=True).replace("\n", "&#10;"))
    return svg


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


def _before_graph(graph: GraphIndex, names: list[str], units: list[_Unit], removed: list[int],
                  shapes: dict[str, str], roles: _Roles):
    g = _digraph("before")
    nodes = graph.nodes
    layer_of = {n: unit for unit in units for n in unit.nodes}
    undrawn = roles.hidden | set(roles.glue)
    on_page = [i for i in sorted(set(layer_of) | set(removed)) if i not in undrawn]
    drawn = set(on_page)

    def add(i: int, target) -> None:
        node, unit = nodes[i], layer_of.get(i)
        out_shape = shapes.get(node.output[0], "") if node.output else ""
        label = _label(node.op_type, _short(names[i]), out_shape)
        if unit is None:
            tip = f"{names[i]} ({node.op_type}): no engine layer (constant-folded or eliminated)"
            target.node(f"b{i}", label=label, fillcolor=REMOVED_COLOR, style="rounded,dotted", tooltip=_text(tip))
            return
        ms = "" if unit.layer.latency_ms is None else f", {unit.layer.latency_ms:.4f} ms"
        tip = f"{names[i]} ({node.op_type}) → layer {unit.layer.name} [{unit.layer.precision}{ms}]"
        target.node(f"b{i}", label=label, fillcolor=unit.color, tooltip=_text(tip))

    for k, unit in enumerate(units):
        members = [i for i in unit.nodes if i in drawn]
        if len(members) > 1:
            with g.subgraph(name=f"cluster_{k}") as c:
                c.attr(label=_label(_short(unit.layer.name)), style="rounded,dashed", color="#444444",
                       fontsize="8", tooltip=_text(f"fused into layer {unit.layer.name}"))
                for i in members:
                    add(i, c)
        else:
            for i in members:
                add(i, g)
    for i in removed:
        if i in drawn:
            add(i, g)

    stubs: dict[str, str] = {}
    boxes: set[int] = set()
    graph_outputs = set(graph.graph_outputs)
    for i in on_page:
        for tensor in dict.fromkeys(nodes[i].input):
            source = graph.producer_index.get(tensor)
            if not tensor or tensor in graph.initializers or source in roles.hidden:
                continue
            if source in roles.glue:
                box = roles.glue[source]
                if box not in boxes:
                    boxes.add(box)
                    members = roles.boxes[box]
                    ops = ", ".join(dict.fromkeys(nodes[j].op_type for j in members))
                    g.node(f"g{box}", label=_label("shape arithmetic", f"{len(members)} nodes"), fillcolor=GLUE_COLOR,
                           style="rounded,filled,dashed", fontsize="8",
                           tooltip=_text(f"{len(members)} exported shape-arithmetic nodes collapsed: {ops}"))
                g.edge(f"g{box}", f"b{i}", style="dashed", color="#999999")
                continue
            src = f"b{source}" if source in drawn else _stub(g, f"t_in_{tensor}", tensor, shapes, stubs)
            g.edge(src, f"b{i}")
        for tensor in nodes[i].output:
            if tensor in graph_outputs:
                g.edge(f"b{i}", _stub(g, f"t_out_{tensor}", tensor, shapes, stubs))
    return g


def _computes(unit: _Unit, nodes, undrawn: set[int]) -> str:
    """What a layer runs and computes: the engine's kernel, then the ONNX ops it covers when they differ, e.g.
    "QLinearConv (Conv+Relu)" (Q/DQ, constants and shape arithmetic left out), as notebook 02 and the report
    name INT8 kernels."""
    engine = re.split(r"[:.]", unit.layer.type)[-1]  # no op domain ("com.microsoft.nchwc.Conv" -> "Conv")
    ops = [nodes[i].op_type for i in unit.nodes if i not in undrawn] or [nodes[i].op_type for i in unit.nodes]
    core = [op for op in ops if op not in _QDQ] or ops
    core = [op for k, op in enumerate(core) if k == 0 or op != core[k - 1]]
    if not core or core == [engine]:
        return engine
    covered = "+".join(core) if len(core) <= 4 else "+".join(core[:3]) + f"+… ({len(core)} ops)"
    return f"{engine} ({covered})"


def _after_graph(units: list[_Unit], shapes: dict[str, str], data_tensors: set[str], nodes, undrawn: set[int]):
    g = _digraph("after")
    producer = {out: unit.index for unit in units for out in unit.layer.outputs}
    consumed = {t for unit in units for t in unit.layer.inputs}
    stubs: dict[str, str] = {}
    # Weight and bias Q/DQ the engine runs as layers of their own (no activation input: TensorRT-placed Q/DQ on ONNX
    # Runtime) are one box, as shape arithmetic is before fusion: drawn one by one they fill the page's first row.
    weights = [u for u in units if re.split(r"[:.]", u.layer.type)[-1] in _QDQ
               and not any(t in producer or t in data_tensors for t in u.layer.inputs)]
    if len(weights) > 1:
        total = sum(u.layer.latency_ms or 0.0 for u in weights)
        g.node("a_weights", label=_label("weight Q/DQ", f"{len(weights)} layers", f"{total:.4f} ms"),
               fillcolor=INSERTED_COLOR, style="rounded,filled,dashed",
               tooltip=_text(f"{len(weights)} Quantize/DequantizeLinear layers on weights and biases, run on every "
                             f"inference ({total:.4f} ms): {', '.join(u.layer.name for u in weights[:20])}"))
        for unit in weights:
            for tensor in unit.layer.outputs:
                producer[tensor] = "_weights"  # edges start at node "a_weights"
        units = [u for u in units if u not in weights]
    for unit in units:
        layer, k = unit.layer, unit.index
        shape = _dims_text(layer.output_shapes[0]) if layer.output_shapes and layer.output_shapes[0] else \
            (shapes.get(layer.outputs[0], "") if layer.outputs else "")
        ms = "" if layer.latency_ms is None else f"{layer.latency_ms:.4f} ms"
        tip = "\n".join(filter(None, [
            f"{layer.name}", f"engine op {layer.type}, {layer.precision}", ms and f"latency {ms}",
            f"kernel {layer.kernel}" if layer.kernel else "",
            "inserted by the engine" if layer.inserted else f"ONNX nodes: {', '.join(layer.onnx_nodes)}"]))
        g.node(f"a{k}", label=_label(_computes(unit, nodes, undrawn), _short(layer.name), " · ".join(filter(None, [layer.precision, shape])), ms),
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
        return _with_long_texts(g.pipe(format="svg", encoding="utf-8"))
    except graphviz.ExecutableNotFound as exc:
        raise MissingDependencyError(
            "Graphviz's 'dot' program was not found on PATH (needed for the fusion graph view): "
            "apt-get install graphviz (Debian/Ubuntu), brew install graphviz (macOS) or conda install graphviz."
        ) from exc


def _strip_prolog(svg: str) -> str:
    """Drop the XML declaration, DOCTYPE and comments so the SVG can be inlined in HTML or another SVG."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _inline(svg: str) -> str:
    """The SVG at its natural size inside HTML (notebook CSS would otherwise shrink it to the column width)."""
    return _strip_prolog(svg).replace("<svg ", '<svg style="max-width:none;height:auto" ', 1)


_SIZE = re.compile(r'width="([\d.]+)pt"\s+height="([\d.]+)pt"')


def _size(svg: str) -> tuple[float, float]:
    match = _SIZE.search(svg)
    return (float(match.group(1)), float(match.group(2))) if match else (0.0, 0.0)


def _place(svg: str, x: float) -> str:
    """Nest a dot SVG at offset x; its size becomes plain user units so the outer viewBox scales both alike."""
    w, h = _size(svg)
    return _SIZE.sub(f'x="{x:.0f}" y="0" width="{w:.0f}" height="{h:.0f}"', svg, count=1)
