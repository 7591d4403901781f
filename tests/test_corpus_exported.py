"""The exported corpus (scripts/export_corpus.py, tests/corpus/README.md): models exported here at test time by the
exporters users bring models from. Each gets FP32 + FP16 + INT8 in ONE `python -m workbench report` with no
traceback; a refused precision is a `failures` row with its reason; every output is judged with its task's metric;
and the metrics are checked against values computed here independently (scikit-learn's own accuracy, a plain IoU
loop for detection, a plain per-pixel argmax for segmentation)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from workbench import errors
from workbench.cli import main as cli_main
from workbench.vocabulary import HEADLINE_METRICS

pytestmark = [pytest.mark.corpus, pytest.mark.slow]  # minutes: exports, then 11 reports

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "export_corpus.py"
_spec = importlib.util.spec_from_file_location("export_corpus", _SCRIPT)
corpus = importlib.util.module_from_spec(_spec)
sys.modules["export_corpus"] = corpus
_spec.loader.exec_module(corpus)

VARIANTS = ("fp16", "int8")
TYPED_ERRORS = {cls.__name__ for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, Exception)}


class Report:
    """One `report` run of an exported model: its exit code, JSON payload, HTML and the options it ran with."""

    def __init__(self, model, folder: Path, work: Path):
        self.model, self.folder, self.work = model, folder, work
        self.cache, self.html, json_path = work / "cache", work / "report.html", work / "report.json"
        self.code = cli_main(corpus.report_argv(model, folder, work))
        self.payload = json.loads(json_path.read_text()) if json_path.is_file() else None

    def result(self, precision: str) -> dict | None:
        return next((r for r in self.payload["results"] if r["precision"] == precision), None)

    def failure(self, precision: str) -> dict | None:
        return next((f for f in self.payload.get("failures", []) if f.get("precision") == precision), None)

    def output(self, precision: str, name: str) -> dict:
        return next(o for o in self.result(precision)["accuracy"]["outputs"] if o["name"] == name)

    def session(self):
        """A Workbench with the report's options on the report's cache (its results come back from the cache)."""
        from workbench.models.inputs import parse_override
        from workbench.session import Workbench

        data = {}
        if (self.folder / "eval.npz").is_file():
            data["eval_data"] = str(self.folder / "eval.npz")
        if (self.folder / "calibration.npz").is_file():
            data["calibration_data"] = str(self.folder / "calibration.npz")
        return Workbench(str(self.folder / "model.onnx"), cache_dir=self.cache, progress=False,
                         inputs=dict(parse_override(t) for t in self.model.inputs) or None, **data)

    def rerun(self, wb, precision: str):
        return wb.run(precision, batch=1, runs=corpus.TIMED_RUNS, calibration_size=corpus.CALIBRATION_SAMPLES,
                      drift=False)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """name -> Report, each model exported (cached across sessions) and reported once per test session, with the
    report's interleaved re-timing bounded (the corpus checks outcomes, not speed)."""
    done: dict[str, Report] = {}
    with corpus.bounded_comparison():
        yield _reporter(done, tmp_path_factory)


def _reporter(done: dict, tmp_path_factory):
    def get(name: str) -> Report:
        if name not in done:
            model = corpus.MODEL_BY_NAME[name]
            try:
                folder = corpus.export(model)
            except ImportError as exc:  # an exporter of the dev extra is missing (pip install -e '.[torch,dev]')
                pytest.skip(f"{name} cannot be exported here: {exc}")
            done[name] = Report(model, folder, tmp_path_factory.mktemp(name))
        return done[name]

    return get


def test_exported_corpus_covers_the_kinds_users_bring():
    kinds = {m.name: m for m in corpus.MODELS}
    exporters = " ".join(m.exporter for m in corpus.MODELS)
    assert "dynamo=True" in exporters and "dynamo=False" in exporters
    assert all(tool in exporters for tool in ("skl2onnx", "onnxmltools", "quantize_static", "IR 3"))
    tasks = {task for m in corpus.MODELS for task in m.tasks.values()}
    assert {"detection", "segmentation", "classification", "label", "embedding", "sequence"} <= tasks
    assert any("past_key" in override for override in kinds["gpt2-kv-cache"].inputs)
    assert len(corpus.MODELS) >= 11


def _metric(output: dict, *names: str) -> float | None:
    metrics = output.get("metrics") or {}
    return next((metrics[n] for n in names if metrics.get(n) is not None), None)


@pytest.mark.parametrize("name", [m.name for m in corpus.MODELS])
def test_exported_model_reports_every_precision(name, reports):
    report = reports(name)
    assert report.payload is not None, f"no JSON written (exit code {report.code})"
    assert report.result("fp32") is not None
    html = report.html.read_text()
    assert "Traceback" not in html and "fp32" in html
    measured = [p for p in VARIANTS if report.result(p) is not None]
    for precision in VARIANTS:
        failure = report.failure(precision)
        assert (report.result(precision) is None) == (failure is not None), precision  # a result or a reason
        if failure is not None:  # refused with a typed error that says why, not a bug caught on the way
            assert failure["error_type"] in TYPED_ERRORS, failure
            assert failure["reason"].strip() and "Traceback" not in failure["reason"], failure
    assert (report.code == 0) == bool(measured), (report.code, measured, report.payload["failures"])
    for precision in ("fp32", *measured):
        accuracy = report.result(precision)["accuracy"]
        names = [o["name"] for o in accuracy["outputs"]]
        assert names == [o["name"] for o in report.payload["model"]["outputs"]]  # every output, in graph order
        for output, task in report.model.tasks.items():
            row = report.output(precision, output)
            assert row["task"] == task, (precision, output, row)
            assert row["metrics"] or "scored with" in (row["note"] or ""), (precision, output, row)
        headline = accuracy["headline_metric"]
        assert headline is not None and headline["value"] is not None, accuracy
        assert headline["name"] in HEADLINE_METRICS[report.model.tasks[headline["output"]]], headline


SKLEARN = ("sklearn-zipmap", "sklearn-no-zipmap", "lightgbm-digits")


@pytest.mark.parametrize("name", SKLEARN)
def test_classifier_top1_is_scikit_learns_accuracy(name, reports):
    """The reported top-1 of the probabilities and of the label output equals the fitted model's own accuracy on
    the same held-out digits (within 0.1 point): never the share of class 0, never an argmax of labels."""
    report = reports(name)
    predicted, accuracy = corpus.sklearn_reference(name)
    label_name = next(o for o, task in report.model.tasks.items() if task == "label")
    probabilities_name = next(o for o, task in report.model.tasks.items() if task == "classification")
    fp32 = report.result("fp32")
    assert fp32["accuracy"]["samples"] == len(predicted)
    top1 = _metric(report.output("fp32", probabilities_name), "top1")
    assert top1 == pytest.approx(accuracy, abs=1e-3), (top1, accuracy)
    label_top1 = _metric(report.output("fp32", label_name), "top1")
    assert label_top1 == pytest.approx(accuracy, abs=1e-3), (label_top1, accuracy)
    assert accuracy > 0.9  # a real classifier: the check above is not 10 % against 10 %


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def matched_box_rate(reference: list[tuple], variant: list[tuple], *, threshold: float = 0.5) -> float:
    """Matched pairs / the larger box count, summed over images: variant boxes by descending score each take the
    unused reference box of the same class with the highest IoU, when that IoU >= threshold. A plain loop."""
    matched = larger = 0
    for (ref_boxes, _, ref_labels), (boxes, scores, labels) in zip(reference, variant):
        used = set()
        for i in sorted(range(len(boxes)), key=lambda k: -float(scores[k])):  # stable: ties keep their order
            best, best_iou = None, -1.0
            for j in range(len(ref_boxes)):
                if j in used or labels[i] != ref_labels[j]:
                    continue
                iou = _iou(boxes[i], ref_boxes[j])
                if iou > best_iou:
                    best, best_iou = j, iou
            if best is not None and best_iou >= threshold:
                used.add(best)
                matched += 1
        larger += max(len(boxes), len(ref_boxes))
    return matched / larger


def _per_sample_outputs(proto, arrays: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    count = len(next(iter(arrays.values())))
    rows = [session.run(names, {k: v[i:i + 1] for k, v in arrays.items()}) for i in range(count)]
    return rows


@pytest.mark.parametrize("name", ["ssdlite-dynamo", "ssdlite-torchscript"])
def test_detection_matched_box_rate_is_a_plain_iou_loops(name, reports):
    report = reports(name)
    wb = report.session()
    names = [o.name for o in wb.model.outputs]
    order = [names.index(n) for n in ("boxes", "scores", "labels")]
    reference = [tuple(row[i] for i in order) for row in _per_sample_outputs(wb.model.proto, wb.eval.arrays)]
    assert sum(len(r[0]) for r in reference) > 0  # the random-weight detector finds boxes: the rate means something
    checked = 0
    for precision in VARIANTS:
        if report.result(precision) is None:
            continue
        result = report.rerun(wb, precision)
        variant = [tuple(row[i] for i in order)
                   for row in _per_sample_outputs(wb.variant_model(result).proto, wb.eval.arrays)]
        expected = matched_box_rate(reference, variant)
        reported = _metric(report.output(precision, "boxes"), "matched_box_rate")
        assert reported == pytest.approx(expected, abs=1e-6), (precision, reported, expected)
        checked += 1
    assert checked, report.payload.get("failures")


@pytest.mark.parametrize("name", ["lraspp-segmentation", "lraspp-qdq"])
def test_segmentation_pixel_agreement_is_a_plain_argmax(name, reports):
    report = reports(name)
    wb = report.session()
    reference = np.concatenate([row[0] for row in _per_sample_outputs(wb.model.proto, wb.eval.arrays)])
    assert len(np.unique(np.argmax(reference, axis=1))) > 1  # not one class everywhere: agreement could fail
    checked = 0
    for precision in VARIANTS:
        if report.result(precision) is None:
            continue
        result = report.rerun(wb, precision)
        variant = np.concatenate([row[0] for row in _per_sample_outputs(wb.variant_model(result).proto,
                                                                        wb.eval.arrays)])
        expected = float(np.mean(np.argmax(reference, axis=1) == np.argmax(variant, axis=1)))
        reported = _metric(report.output(precision, "masks"), "pixel_agreement")
        assert reported == pytest.approx(expected, abs=1e-6), (precision, reported, expected)
        checked += 1
    assert checked, report.payload.get("failures")


def test_ir3_file_scores_like_the_modern_original(reports):
    """The IR-3 rewrite (initializers listed as inputs) gives the bundled digits CNN's own accuracy."""
    import onnx

    from workbench.samples._data import data_file

    report = reports("digits-cnn-ir3")
    with np.load(report.folder / "eval.npz") as data:
        images, labels = data["input"], data["labels"]
    original = onnx.load(str(data_file("digits-cnn.onnx")))
    logits = np.concatenate([row[0] for row in _per_sample_outputs(original, {"input": images})])
    expected = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert _metric(report.output("fp32", "output"), "top1") == pytest.approx(expected, abs=1e-3)


def test_kv_cache_decoder_runs_with_the_given_shapes(reports):
    report = reports("gpt2-kv-cache")
    fp32 = report.result("fp32")
    logits = report.output("fp32", "logits")
    assert logits["shape"][-2:] == [4, corpus.GPT2_VOCAB]  # --input input_ids=1,4: 4 new tokens
    present = report.output("fp32", "present_key_0")
    assert present["shape"][-2:] == [6 + 4, corpus.GPT2_WIDTH // corpus.GPT2_HEADS]  # 6 cached + 4 new
    assert _metric(logits, "token_agreement") == pytest.approx(1.0)
    assert fp32["accuracy"]["headline_metric"]
