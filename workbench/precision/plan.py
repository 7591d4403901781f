"""Precision plans: what the ONNX -> ONNX precision transform should do."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from ..errors import PrecisionError
from ..vocabulary import ALGORITHMS, METHODS, PRECISIONS, QDQ_STYLES, WEIGHT_ROUNDINGS

# Every way to keep nodes in FP32, as errors advise it (Python and the command line offer the same).
KEEP_FP32_HOW = ("PrecisionPlan(keep_fp32=[...]) or run(..., keep_fp32=[...]) in Python, --keep-fp32 NODE|OPTYPE "
                 "(repeatable) on the command line")

__all__ = ["ALGORITHMS", "INT8_FIELDS", "KEEP_FP32_HOW", "METHODS", "PLAN_CHOICES", "PLAN_FIELDS", "PRECISIONS",
           "QDQ_STYLES", "WEIGHT_ROUNDINGS", "PlanFields", "PrecisionPlan"]

# Field metadata. CHOICES: the vocabulary a field takes (command-line flags and widgets offer these). NEUTRAL: a field
# added after the first plans were cached declares the values that mean "as before"; `to_json` leaves it out then, so
# cache keys of earlier plans stay valid.
CHOICES, NEUTRAL = "choices", "neutral"


@dataclass(frozen=True)
class PrecisionPlan:
    """FP32, FP16 or INT8 (Q/DQ from calibration, or method "dynamic": ONNX Runtime's dynamic quantisation of
    MatMul), optionally keeping named nodes or op types in FP32.

    A non-empty `keep_fp32` makes the plan "mixed". `algorithms` (calibrated int8 only) names optional steps of
    the quantisation pipeline (precision.pipeline), e.g. ("smoothquant",); they run in registration order.
    """

    precision: str = field(default="fp32", metadata={CHOICES: PRECISIONS})
    # int8 only: minmax | entropy | percentile (calibrated) | dynamic (precision.dynamic)
    method: str | None = field(default=None, metadata={CHOICES: METHODS})
    qdq_style: str | None = field(default=None, metadata={CHOICES: QDQ_STYLES})  # int8 only
    per_channel: bool = True  # int8 weights
    keep_fp32: tuple[str, ...] = ()  # node names or op types left in FP32
    weight_rounding: str | None = field(default=None, metadata={CHOICES: WEIGHT_ROUNDINGS,
                                                                 NEUTRAL: (None, "nearest")})  # int8 only
    # calibrated int8 only: names from vocabulary.ALGORITHMS (the registry of pipeline steps)
    algorithms: tuple[str, ...] = field(default=(), metadata={CHOICES: ALGORITHMS, NEUTRAL: ((),)})

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PrecisionError(f"Unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}.")
        if self.precision == "int8":
            object.__setattr__(self, "method", self.method or "minmax")
            object.__setattr__(self, "qdq_style", self.qdq_style or "onnxruntime")
            if self.method not in METHODS:
                raise PrecisionError(f"Unknown calibration method {self.method!r}: choose one of {', '.join(METHODS)}.")
            if self.qdq_style not in QDQ_STYLES:
                raise PrecisionError(f"Unknown Q/DQ style {self.qdq_style!r}: choose one of {', '.join(QDQ_STYLES)}.")
            object.__setattr__(self, "weight_rounding", self.weight_rounding or "nearest")
            if self.weight_rounding not in WEIGHT_ROUNDINGS:
                raise PrecisionError(f"Unknown weight rounding {self.weight_rounding!r}: choose one of "
                                     f"{', '.join(WEIGHT_ROUNDINGS)}.")
            if self.method == "dynamic" and self.qdq_style != "onnxruntime":
                raise PrecisionError("method='dynamic' uses ONNX Runtime's integer ops (DynamicQuantizeLinear, "
                                     "MatMulInteger), which TensorRT cannot parse: use qdq_style='onnxruntime', or a "
                                     "calibrated method (minmax, entropy, percentile) for TensorRT-style Q/DQ.")
            if self.method == "dynamic" and self.weight_rounding != "nearest":
                raise PrecisionError(f"weight_rounding={self.weight_rounding!r} changes the Conv weights and biases "
                                     "of calibrated INT8 plans; method='dynamic' quantises MatMul only: use "
                                     "weight_rounding='nearest'.")
            named = (self.algorithms,) if isinstance(self.algorithms, str) else tuple(self.algorithms or ())
            unknown = [name for name in named if name not in ALGORITHMS]
            if unknown:
                raise PrecisionError(f"Unknown algorithm(s) {', '.join(map(repr, unknown))}: choose from "
                                     f"{', '.join(ALGORITHMS) or 'none (no algorithm is registered)'}.")
            if self.method == "dynamic" and named:
                raise PrecisionError(f"algorithms={named!r} rewrite the graph from calibration data; method='dynamic' "
                                     "has no calibration: use a calibrated method (minmax, entropy, percentile) or no "
                                     "algorithms.")
            # registration order is the order they run: equal selections give equal plans and cache keys
            object.__setattr__(self, "algorithms", tuple(name for name in ALGORITHMS if name in named))
        else:
            object.__setattr__(self, "method", None)
            object.__setattr__(self, "qdq_style", None)
            object.__setattr__(self, "weight_rounding", None)
            object.__setattr__(self, "algorithms", ())
        object.__setattr__(self, "keep_fp32", tuple(self.keep_fp32))

    @property
    def mixed(self) -> bool:
        return bool(self.keep_fp32)

    @property
    def needs_calibration(self) -> bool:
        return self.precision == "int8" and self.method != "dynamic"

    @property
    def gptq(self) -> bool:
        """INT8 weights rounded by GPTQ."""
        return self.weight_rounding in ("gptq", "gptq+bc")

    @property
    def bias_correction(self) -> bool:
        """INT8 biases corrected for the mean error of each layer's output."""
        return self.weight_rounding == "gptq+bc"

    @property
    def label(self) -> str:
        """Short human label, e.g. 'int8 (entropy, tensorrt)'."""
        style = self.qdq_style if self.method != "dynamic" else None  # dynamic INT8 has no Q/DQ style to name
        parts = [p for p in (self.method, style) if p] + [self.weight_rounding] * self.gptq + list(self.algorithms)
        text = self.precision + (f" ({', '.join(parts)})" if parts else "")
        return text + (f" +{len(self.keep_fp32)} fp32" if self.keep_fp32 else "")

    def to_record(self) -> dict:
        """Every field by name (tuples as lists): the plan's keys in result JSON, bundles and sweep configs."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    def to_json(self) -> dict:
        """`to_record` without later fields at their neutral values: the form in cache keys and ONNX metadata."""
        return {name: value for name, value in self.to_record().items()
                if getattr(self, name) not in _NEUTRAL_VALUES.get(name, ())}

    @classmethod
    def from_json(cls, data: Mapping) -> "PrecisionPlan":
        """The plan whose fields are the keys of `data` named like them (other keys are ignored); validated."""
        return cls(**{name: data[name] for name in PLAN_FIELDS if name in data})


PLAN_FIELDS = tuple(f.name for f in fields(PrecisionPlan))
PLAN_CHOICES = {f.name: f.metadata[CHOICES] for f in fields(PrecisionPlan) if CHOICES in f.metadata}
# fields only an INT8 plan sets (an FP32 plan ignores any value of them): command lines and sweeps drop them for
# other precisions
INT8_FIELDS = tuple(name for name, choices in PLAN_CHOICES.items() if name != "precision" and choices and
                    getattr(PrecisionPlan("fp32", **{name: choices[-1]}), name) == getattr(PrecisionPlan("fp32"), name))
_NEUTRAL_VALUES = {f.name: f.metadata[NEUTRAL] for f in fields(PrecisionPlan) if NEUTRAL in f.metadata}


class PlanFields:
    """The plan's fields read by name on anything that carries a `plan` (a result, a search configuration)."""

    plan: PrecisionPlan

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def method(self) -> str | None:
        return self.plan.method

    @property
    def qdq_style(self) -> str | None:
        return self.plan.qdq_style

    @property
    def keep_fp32(self) -> list[str]:
        return list(self.plan.keep_fp32)

    @property
    def weight_rounding(self) -> str | None:
        return self.plan.weight_rounding
