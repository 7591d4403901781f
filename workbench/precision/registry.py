"""Optional quantisation algorithms by the name a plan selects them with (`PrecisionPlan(algorithms=(...))`): each
a step of `precision.pipeline` in a module of its own, imported only when a plan uses it. This module imports
nothing, so plans and the vocabulary read the names without loading onnx.

Adding an algorithm: its module (a class with the `pipeline.Step` methods and `after`), one line here, its tests.
"""
from __future__ import annotations

ALGORITHMS: dict[str, str] = {  # name -> "module:class" in workbench.precision; applied in this order
    "smoothquant": "smoothquant:SmoothQuant",
    "cle": "equalization:CrossLayerEqualization",
}
