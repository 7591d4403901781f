"""Precision plans: what the ONNX -> ONNX precision transform should do."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import PrecisionError
from ..vocabulary import METHODS, PRECISIONS, QDQ_STYLES, WEIGHT_ROUNDINGS

# Every way to keep nodes in FP32, as errors advise it (Python and the command line offer the same).
KEEP_FP32_HOW = ("PrecisionPlan(keep_fp32=[...]) or run(..., keep_fp32=[...]) in Python, --keep-fp32 NODE|OPTYPE "
                 "(repeatable) on the command line")

__all__ = ["KEEP_FP32_HOW", "METHODS", "PRECISIONS", "QDQ_STYLES", "WEIGHT_ROUNDINGS", "PrecisionPlan"]


@dataclass(frozen=True)
class PrecisionPlan:
    """FP32, FP16 or INT8 (Q/DQ from calibration, or method "dynamic": ONNX Runtime's dynamic quantisation of
    MatMul), optionally keeping named nodes or op types in FP32.

    A non-empty `keep_fp32` makes the plan "mixed".
    """

    precision: str = "fp32"
    method: str | None = None  # int8 only: minmax | entropy | percentile (calibrated) | dynamic (precision.dynamic)
    qdq_style: str | None = None  # int8 only: onnxruntime | tensorrt
    per_channel: bool = True  # int8 weights
    keep_fp32: tuple[str, ...] = ()  # node names or op types left in FP32
    weight_rounding: str | None = None  # int8 only: nearest | gptq | gptq+bc

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
        else:
            object.__setattr__(self, "method", None)
            object.__setattr__(self, "qdq_style", None)
            object.__setattr__(self, "weight_rounding", None)
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
        parts = [p for p in (self.method, style) if p] + [self.weight_rounding] * self.gptq
        text = self.precision + (f" ({', '.join(parts)})" if parts else "")
        return text + (f" +{len(self.keep_fp32)} fp32" if self.keep_fp32 else "")

    def to_json(self) -> dict:
        data = asdict(self)
        data["keep_fp32"] = list(self.keep_fp32)
        if self.weight_rounding in (None, "nearest"):  # the default: absent, so cache keys from before it stay valid
            del data["weight_rounding"]
        return data
