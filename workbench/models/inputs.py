"""How the workbench feeds a model's inputs: which axis holds the samples, the sizes chosen for dynamic axes, and
synthetic values that make sense for the input (ids inside the table a Gather reads, masks of ones, ...).

Arrays inside the workbench always hold samples on axis 0 (`CalibrationSet`, eval data). `InputPlan.feed` turns
such an array into what the engine takes: the sample axis moved to the input's batch axis, or, for an input without
one (a scalar such as a sample rate, a recurrent state with a fixed leading dim), the first sample's value shared by
the whole batch.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import InputSpecError
from ..graph import GraphIndex
from .spec import Dim, TensorSpec

IMAGE_SIZES = (224, 320, 256, 192, 160, 128, 96, 64, 48, 32, 640)  # tried in order for dynamic height/width
SEQUENCE_SIZES = (64, 128, 256, 512, 32, 16, 1024, 8)  # tried in order for other dynamic axes
DEFAULT_ID_RANGE = (0, 2)  # integer inputs the graph does not tell more about
# string inputs the graph does not tell more about (no LabelEncoder / CategoryMapper / OneHotEncoder keys)
DEFAULT_WORDS = ("the", "model", "runs", "fast", "and", "well", "on", "data", "a", "small", "test", "red")
_STRING_KEYS = {"LabelEncoder": "keys_strings", "CategoryMapper": "cats_strings", "OneHotEncoder": "cats_strings",
                "TfIdfVectorizer": "pool_strings", "DictVectorizer": "string_vocabulary"}
_PASS_THROUGH = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Expand"})
_COMPARISONS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})

Override = Sequence[int] | int | float  # a shape for an input, or a fixed value for a scalar input


@dataclass(frozen=True)
class InputPlan:
    """One model input as the workbench feeds it.

    `batch_axis`: the feed axis that holds the samples (None: one value shared by every batch). `sample_shape`:
    the concrete shape of one sample (the feed shape without the batch axis). `values`: how synthetic data is drawn
    ("normal", "integers", "ones", "constant", "words"), with `low`/`high` (integers in [low, high)), `value`, or
    `words` (strings drawn from them).
    `choices` says, in words, what was chosen and why (it goes into the result's notes).
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    batch_axis: int | None
    sample_shape: tuple[int, ...]
    values: str = "normal"
    low: float | None = None
    high: float | None = None
    value: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    words: tuple[str, ...] = ()

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """A samples-first array (n, *sample_shape) as this input's feed."""
        return to_feed(samples, self.batch_axis)

    def synthetic(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """`size` synthetic samples, samples on axis 0."""
        shape = (size, *self.sample_shape)
        dtype = np.dtype(self.dtype)
        if self.values == "constant":
            return np.full(shape, self.value, dtype=dtype)
        if self.values == "ones":
            return np.ones(shape, dtype=dtype)
        if self.values == "integers":
            return rng.integers(int(self.low), int(self.high), shape).astype(dtype)
        if self.values == "words":
            return np.array(self.words, dtype=object)[rng.integers(0, len(self.words), shape)]
        if dtype.kind == "f":
            return rng.standard_normal(shape).astype(dtype)
        return np.zeros(shape, dtype=dtype)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "batch_axis": self.batch_axis,
                "sample_shape": list(self.sample_shape), "values": self.values, "low": self.low, "high": self.high,
                "value": self.value, "choices": list(self.choices), "words": list(self.words)}


def batch_axes(inputs: Sequence[TensorSpec]) -> dict[str, int | None]:
    """Per input, the axis that holds the samples, or None.

    Axis 0 is the batch axis when it is dynamic. A fixed axis 0 is not a batch axis when other inputs have a dynamic
    one (a recurrent state such as (2, batch, 128) or (1, 1, 128)): then the input's batch axis is the one named like
    the others' batch symbol, if any. When every input fixes axis 0, it is the batch axis of the inputs whose size
    there matches the first input's. Rank-0 inputs have none.
    """
    dynamic_first = [spec.shape[0] for spec in inputs if spec.shape and not isinstance(spec.shape[0], int)]
    symbols = {dim for dim in dynamic_first if isinstance(dim, str)}
    first_fixed = next((spec.shape[0] for spec in inputs if spec.shape), None)
    axes: dict[str, int | None] = {}
    for spec in inputs:
        if not spec.shape:
            axes[spec.name] = None
        elif not isinstance(spec.shape[0], int):
            axes[spec.name] = 0
        elif dynamic_first:
            axes[spec.name] = next((i for i, d in enumerate(spec.shape)
                                    if i and (d in symbols or (d is None and None in dynamic_first))), None)
        else:
            axes[spec.name] = 0 if spec.shape[0] == first_fixed else None
    return axes


def feeder(inputs: Sequence[TensorSpec]):
    """A function turning samples-first arrays (name -> (n, *sample)) into the model's feeds."""
    axes = batch_axes(inputs)

    def to_feeds(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: to_feed(arr, axes.get(name, 0)) for name, arr in arrays.items()}
    return to_feeds


def to_feed(samples: np.ndarray, axis: int | None) -> np.ndarray:
    """Samples on axis 0 as a feed: moved to `axis`, or (None) the first sample's value for the whole batch."""
    if axis is None:
        return np.array(samples[0])  # (ascontiguousarray would make a rank-0 value rank 1)
    return np.ascontiguousarray(np.moveaxis(samples, 0, axis)) if axis else samples


def sample_shape(spec: TensorSpec, axis: int | None) -> tuple[Dim, ...]:
    """The declared shape of one sample: the spec's shape without its batch axis."""
    return spec.shape if axis is None else spec.shape[:axis] + spec.shape[axis + 1:]


def parse_override(text: str) -> tuple[str, Override]:
    """`NAME=SHAPE` (dims separated by ',' or 'x', e.g. x=1,3,640,640) or `NAME=VALUE` for a scalar input."""
    name, sep, rhs = text.partition("=")
    if not sep or not name or not rhs:
        raise InputSpecError(f"--input {text!r}: write NAME=SHAPE (e.g. images=1,3,640,640) or NAME=VALUE for a "
                             "scalar input (e.g. sr=16000).")
    parts = [p for p in re.split(r"[x,]", rhs.strip()) if p]
    try:
        if len(parts) == 1 and not re.search(r"[x,]", rhs):
            number = float(parts[0])
            return name, int(number) if number.is_integer() and "." not in parts[0] else number
        return name, tuple(int(p) for p in parts)
    except ValueError:
        raise InputSpecError(f"--input {text!r}: {rhs!r} is neither a shape (integers separated by ',' or 'x') nor "
                             "a number.") from None


def plan_inputs(inputs: Sequence[TensorSpec], proto: onnx.ModelProto | None = None, *,
                overrides: Mapping[str, Override] | None = None, probe: bool = False) -> list[InputPlan]:
    """Plans for every input: batch axis, concrete sizes for dynamic axes, synthetic value ranges.

    `overrides` maps an input name to its feed shape (the batch axis entry is ignored when that axis is dynamic) or,
    for a rank-0 input, to its fixed value. With `probe` (and `proto`), default sizes for dynamic axes are tried
    on the model with ONNX Runtime until one runs, so a detector with dynamic height and width runs out of the box.
    """
    overrides = dict(overrides or {})
    names = [spec.name for spec in inputs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise InputSpecError(f"Input override(s) {unknown} name no input of the model; its inputs are {names}.")
    axes = batch_axes(inputs)
    graph = _GraphFacts(proto) if proto is not None else None
    shapes = {spec.name: _resolve_override(spec, axes[spec.name], overrides.get(spec.name)) for spec in inputs}
    defaulted = any(not isinstance(d, int) for shape in shapes.values() for d in shape)
    candidates = range(len(IMAGE_SIZES)) if defaulted and probe and proto is not None else [0]
    plans: list[InputPlan] = []
    for attempt in candidates:
        plans = [_plan(spec, axes[spec.name], shapes[spec.name], overrides.get(spec.name), graph, attempt)
                 for spec in inputs]
        plans = _fit_lengths(plans)
        if len(candidates) == 1 or _runs(proto, plans):
            return plans
    raise InputSpecError(
        "No default size for the dynamic axes of " + ", ".join(f"{p.name} {list(p.shape)}" for p in plans)
        + " runs this model: give the input shapes, e.g. --input NAME=1,3,640,640 (Python: inputs={'NAME': "
        "(1, 3, 640, 640)}).")


def _resolve_override(spec: TensorSpec, axis: int | None, override) -> tuple[Dim, ...]:
    """The sample shape with the dims an override fixes filled in (checked against the fixed dims)."""
    declared = sample_shape(spec, axis)
    if override is None or not spec.shape:
        if override is not None and not isinstance(override, (int, float)):
            raise InputSpecError(f"Input {spec.name!r} is a scalar (rank 0): give a value, e.g. {spec.name}=16000.")
        return declared
    if isinstance(override, (int, float)):
        raise InputSpecError(f"Input {spec.name!r} has shape {list(spec.shape)}: give a shape such as "
                             f"{spec.name}={','.join(str(d) if isinstance(d, int) else '8' for d in spec.shape)}, "
                             "not a single value.")
    shape = tuple(int(d) for d in override)
    if len(shape) != len(spec.shape) or any(d < 1 for d in shape):
        raise InputSpecError(f"Input {spec.name!r}: override {list(shape)} does not fit its shape {list(spec.shape)} "
                             f"(rank {len(spec.shape)}, positive sizes).")
    for i, (given, dim) in enumerate(zip(shape, spec.shape)):
        if isinstance(dim, int) and dim != given:
            raise InputSpecError(f"Input {spec.name!r}: override {list(shape)} changes axis {i}, which the model "
                                 f"fixes at {dim} (shape {list(spec.shape)}).")
    return shape if axis is None else shape[:axis] + shape[axis + 1:]


def image_axes(spec: TensorSpec) -> tuple[int, int] | None:
    """The (height, width) feed axes of an NCHW or NHWC float image input, else None."""
    if len(spec.shape) != 4 or np.dtype(spec.dtype).kind != "f":
        return None
    if spec.shape[1] in (1, 3, 4):
        return (2, 3)
    if spec.shape[3] in (1, 3, 4):
        return (1, 2)
    return None


def _plan(spec: TensorSpec, axis: int | None, shape: tuple[Dim, ...], override, graph: "_GraphFacts | None",
          attempt: int) -> InputPlan:
    choices: list[str] = []
    image = image_axes(spec)
    # feed axis of each sample axis
    feed_axes = [i for i in range(len(spec.shape)) if i != axis]
    concrete = []
    defaulted = []
    for sample_axis, dim in enumerate(shape):
        if isinstance(dim, int):
            concrete.append(dim)
            continue
        feed_axis = feed_axes[sample_axis]
        sizes = IMAGE_SIZES if image and feed_axis in image else SEQUENCE_SIZES
        size = sizes[attempt % len(sizes)]
        concrete.append(size)
        defaulted.append((feed_axis, dim, size, "image height/width" if sizes is IMAGE_SIZES else "dynamic axis"))
    if defaulted:
        described = ", ".join(f"axis {a} ({d if d else 'unnamed'}) = {s}" for a, d, s, _ in defaulted)
        kinds = sorted({k for *_, k in defaulted})
        example = ",".join(str(c) for c in _feed_example(concrete, axis))
        choices.append(f"input {spec.name!r} {list(spec.shape)}: default size for its {' and '.join(kinds)}: "
                       f"{described} (override with --input {spec.name}={example})")
    dtype = np.dtype(spec.dtype)
    plan = InputPlan(spec.name, spec.dtype, spec.shape, axis, tuple(concrete))
    if isinstance(override, (int, float)):
        return replace(plan, values="constant", value=override,
                       choices=(*choices, f"input {spec.name!r}: fixed value {override} (given)"))
    lowered = spec.name.lower()
    if dtype.kind == "O":
        known = graph.string_facts(spec.name) if graph is not None else None
        words = known or DEFAULT_WORDS
        source = (f"the {len(words)} strings the graph maps" if known
                  else f"a small vocabulary ({', '.join(words[:4])}, ...)")
        return replace(plan, values="words", words=tuple(words), choices=(
            *choices, f"input {spec.name!r}: strings drawn from {source} (give your own with data=/--data)"))
    if dtype.kind == "b" or (dtype.kind in "iu" and "mask" in lowered):
        return replace(plan, values="ones", choices=(*choices, f"input {spec.name!r}: a mask of ones"))
    if dtype.kind in "iu":
        facts = graph.integer_facts(spec.name) if graph is not None else None
        if facts is not None and facts[0] == "compare":
            return replace(plan, values="constant", value=facts[1], choices=(
                *choices, f"input {spec.name!r}: fixed value {facts[1]} (the value the graph compares it with; "
                          f"override with --input {spec.name}=VALUE)"))
        if facts is not None and facts[0] == "gather":
            return replace(plan, values="integers", low=0, high=facts[1], choices=(
                *choices, f"input {spec.name!r}: ids in [0, {facts[1]}) (the rows of the table a Gather reads)"))
        if not spec.shape:
            return replace(plan, values="constant", value=1, choices=(
                *choices, f"input {spec.name!r}: scalar set to 1 (stated default; override with "
                          f"--input {spec.name}=VALUE)"))
        if re.search(r"len", lowered):
            return replace(plan, values="lengths", choices=choices)
        low, high = DEFAULT_ID_RANGE
        return replace(plan, values="integers", low=low, high=high, choices=(
            *choices, f"input {spec.name!r}: integers in [{low}, {high}) (stated default: the graph does not show "
                      "their range)"))
    if not spec.shape:
        return replace(plan, values="constant", value=1.0, choices=(*choices, f"input {spec.name!r}: scalar set to 1.0"))
    return replace(plan, choices=tuple(choices))


def _feed_example(sample: list[int], axis: int | None) -> list[int]:
    return sample if axis is None else [*sample[:axis], 1, *sample[axis:]]


def _fit_lengths(plans: list[InputPlan]) -> list[InputPlan]:
    """Length inputs get the longest dynamic axis of the other inputs, so every length fits the shapes fed."""
    sizes = [max(p.sample_shape, default=1) for p in plans if p.values != "lengths"]
    longest = max(sizes, default=1)
    return [replace(p, values="constant", value=longest, choices=(
        *p.choices, f"input {p.name!r}: lengths set to {longest} (the longest axis of the other inputs)"))
        if p.values == "lengths" else p for p in plans]


def _runs(proto: onnx.ModelProto, plans: list[InputPlan]) -> bool:
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # a failing try is expected: keep ORT's error log quiet
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        session.run(None, {p.name: p.feed(p.synthetic(1, rng)) for p in plans})
        return True
    except Exception:  # noqa: BLE001 - ORT raises many types for shapes a model cannot take
        return False


class _GraphFacts:
    """What a graph says about its integer and string inputs: the table a Gather indexes with them, a constant they
    are compared with, the strings an encoder maps."""

    def __init__(self, proto: onnx.ModelProto):
        self.index = GraphIndex(proto)
        self.constants = dict(self.index.initializers)
        for node in self.index.nodes:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = node.attribute[0].t

    def string_facts(self, name: str) -> tuple[str, ...] | None:
        """The strings a node reading `name` maps (a LabelEncoder's keys, a CategoryMapper's categories, ...),
        through ops that only move the strings (reshapes, a Gather of columns, ...)."""
        for _, node in self._readers(name, _PASS_THROUGH | {"Gather", "Slice", "Split", "Concat"}):
            wanted = _STRING_KEYS.get(node.op_type)
            for attribute in node.attribute:
                if attribute.name == wanted and attribute.strings:
                    return tuple(dict.fromkeys(v.decode() for v in attribute.strings))
        return None

    def integer_facts(self, name: str) -> tuple[str, float] | None:
        for tensor, node in self._readers(name, _PASS_THROUGH):
            if node.op_type == "Gather" and list(node.input).index(tensor) == 1 and node.input[0] in self.constants:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                return "gather", int(self.constants[node.input[0]].dims[axis])
            if node.op_type in _COMPARISONS:
                other = [i for i in node.input if i != tensor and i in self.constants]
                if other:
                    value = numpy_helper.to_array(self.constants[other[0]])
                    if value.size == 1:
                        return "compare", value.reshape(-1)[0].item()
        return None

    def _readers(self, name: str, through: frozenset[str]):
        """(tensor, node) for every node reading `name`, or what ops in `through` made of it (as their input 0)."""
        frontier, seen = [name], set()
        while frontier:
            tensor = frontier.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for node in self.index.consumers(tensor):
                yield tensor, node
                if node.op_type in through and list(node.input).index(tensor) == 0:
                    frontier.extend(node.output)
