"""A small loading panel for the explorer: a model from a path or `torchvision:NAME`, an uploaded .onnx file, and
an uploaded .npz calibration set (arrays by input name). Errors show in the panel; the explorer keeps working."""
from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from .._optional import require
from ..errors import WorkbenchError
from .tabs import SPINNER


class Loader:
    """`Loader(explorer)`: widgets `path` (Text), `load` (Button), `model_upload` and `data_upload` (FileUpload),
    `inputs` (Text: `NAME=SHAPE` or `NAME=VALUE` overrides, space-separated, for the next model loaded), `message`
    (HTML); `widget` is the panel. Loaded models join the explorer's model list and become the selection;
    an uploaded calibration set joins the current model's calibration sets and becomes the selection. Uses the
    explorer's public API only (`add_model`, `add_calibration_set`, `session()`); says it is busy while it loads."""

    def __init__(self, explorer):
        widgets = require("ipywidgets", extra="notebook", purpose="the explorer's loading panel")
        self.explorer = explorer
        self.path = widgets.Text(placeholder="path/to/model.onnx or torchvision:resnet18", description="Load model",
                                 layout=widgets.Layout(width="420px"))
        self.load = widgets.Button(description="Load", button_style="primary", layout=widgets.Layout(width="80px"))
        self.model_upload = widgets.FileUpload(accept=".onnx", multiple=False, description="Upload .onnx",
                                               layout=widgets.Layout(width="auto"))
        self.data_upload = widgets.FileUpload(accept=".npz", multiple=False, description="Calibration .npz",
                                              layout=widgets.Layout(width="auto"))
        self.inputs = widgets.Text(placeholder="e.g. images=1,3,640,640 sr=16000", description="Inputs",
                                   tooltip="shapes (or scalar values) for the synthetic inputs of the next model loaded",
                                   layout=widgets.Layout(width="320px"))
        self.message = widgets.HTML()
        self.message.add_class("workbench-loader-status")
        self.widget = widgets.HBox([self.path, self.load, self.model_upload, self.inputs, self.data_upload,
                                    self.message],
                                   layout=widgets.Layout(flex_flow="row wrap"))
        self.widget.add_class("workbench-loader")
        self.load.on_click(lambda _button: self.load_path(self.path.value))
        self.model_upload.observe(self._on_model_upload, names="value")
        self.data_upload.observe(self._on_data_upload, names="value")

    # ---- actions (also callable from code) ---------------------------------------------------------
    def load_path(self, source: str) -> str | None:
        """Load a model from a path or `torchvision:NAME`; returns its name in the model list (None on error)."""
        from ..models import load_model

        source = source.strip()
        if not source:
            return self._error("Type a path to an .onnx file or torchvision:NAME first.")
        self._busy(f"Loading {html.escape(source)}…")
        try:
            model = load_model(source)
        except WorkbenchError as exc:
            return self._error(str(exc))
        return self._add_model(model.name if source.startswith("torchvision:") else Path(source).stem, model)

    def load_onnx(self, filename: str, content: bytes) -> str | None:
        """Load an uploaded .onnx file; returns its name in the model list (None on error)."""
        from ..models.onnx_source import load_onnx_bytes

        self._busy(f"Loading {html.escape(filename)}…")
        try:
            model = load_onnx_bytes(content, name=Path(filename).stem)
        except WorkbenchError as exc:
            return self._error(f"{filename}: {exc}")
        return self._add_model(Path(filename).stem, model)

    def load_calibration(self, filename: str, content: bytes) -> str | None:
        """Add an uploaded .npz (arrays by input name) as a calibration set of the current model."""
        from ..userdata import load_data, read_npz

        self._busy(f"Reading {html.escape(filename)}…")
        try:
            arrays = read_npz(content, label=filename)  # headers and sizes checked before decompressing
        except WorkbenchError as exc:
            return self._error(str(exc))
        explorer = self.explorer
        try:
            data = load_data(arrays, explorer.session().model.inputs, name=filename)
            explorer.add_calibration_set(data.calibration_set(filename))  # runs the selection when INT8 is on
        except WorkbenchError as exc:
            return self._error(f"{filename}: {exc}")
        self._say(f"Calibration set {html.escape(filename)} added ({data.size} samples).")
        return filename

    # ---- internals ------------------------------------------------------------------------------------
    def _add_model(self, name: str, model) -> str | None:
        from ..models.inputs import parse_override, plan_inputs

        explorer = self.explorer
        name = self._unique_name(name, model)
        if model.name != name:
            model = replace(model, name=name)  # results and labels carry the name shown in the list
        try:  # checked here, so a bad override shows in the panel instead of failing the first run
            overrides = dict(parse_override(text) for text in self.inputs.value.split()) or None
            plan_inputs(model.inputs, overrides=overrides)
        except WorkbenchError as exc:
            return self._error(str(exc))
        self._say(f"Loaded {html.escape(name)}: {len(model.proto.graph.node)} nodes, inputs "
                  + ", ".join(f"{html.escape(s.name)} {list(s.shape)}" for s in model.inputs))
        explorer.add_model(name, model, inputs=overrides)  # selects it: the explorer measures it next
        return name

    def _unique_name(self, name: str, model) -> str:
        """`name`, or `name (2)`, `(3)`...: never the name of a sample or of another model (two files named
        model.onnx in different folders); the same file (path or content) loaded again keeps its name."""
        explorer = self.explorer
        for candidate in (name, *(f"{name} ({i})" for i in range(2, 10_000))):
            if candidate not in explorer.model.options:
                return candidate
            known = explorer._user_models.get(candidate)
            if known is not None and getattr(known, "content_hash", None) is not None and (
                    known.content_hash == model.content_hash
                    or (Path(model.source).is_file() and known.source == model.source)):
                return candidate
        raise WorkbenchError(f"Too many models named {name}: rename the file.")

    def _on_model_upload(self, change) -> None:
        for item in change["new"]:
            self.load_onnx(item["name"], bytes(item["content"]))

    def _on_data_upload(self, change) -> None:
        for item in change["new"]:
            self.load_calibration(item["name"], bytes(item["content"]))

    def _busy(self, text: str) -> None:
        """Shown before the work starts (the old message, an error included, goes at once)."""
        self.message.value = f"<span style='color:#555'>{SPINNER}{text}</span>"

    def _say(self, text: str) -> None:
        self.message.value = f"<span style='color:#1b5e20'>{text}</span>"

    def _error(self, text: str) -> None:
        self.message.value = f"<span style='color:#b00020'><b>Could not load:</b> {html.escape(text)}</span>"
        return None
