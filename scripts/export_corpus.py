"""The exported corpus: models that users bring, exported HERE at test time by the exporters they use (torch's
dynamo and TorchScript exporters, skl2onnx, onnxmltools, ONNX Runtime's quantiser, an old-style IR-3 rewrite), with
random weights from configs or weights trained on scikit-learn's bundled data. Nothing is downloaded and nothing
is committed: each model is built once into a cache folder keyed by this module's VERSION and the exporters'
versions.

    python scripts/export_corpus.py [--dest DIR] [NAME ...]   # default $WORKBENCH_EXPORTED or
                                                               # ~/.cache/tensorrt-workbench/exported
    python scripts/export_corpus.py --table WORK               # + one FP32/FP16/INT8 report each: markdown table

tests/corpus/README.md lists the models, exporters and licences; tests/test_corpus_exported.py reports on them.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

VERSION = 4  # bump when an export function changes: the cache key changes with it
SEED = 0


@dataclass(frozen=True)
class ExportedModel:
    """One model of the exported corpus: how it is built and what a report on it needs."""

    name: str
    exporter: str
    task: str  # what the model does (the README's words)
    licence: str  # of the architecture's code / the training data
    build: Callable[[Path], None]  # writes model.onnx (+ eval.npz, calibration.npz where it has data)
    inputs: tuple[str, ...] = ()  # `report --input NAME=SHAPE` overrides the corpus run passes
    packages: tuple[str, ...] = ()  # whose versions enter the cache key
    tasks: dict[str, str] = field(default_factory=dict)  # output -> task the report must use for it


def default_dest() -> Path:
    return Path(os.environ.get("WORKBENCH_EXPORTED", Path.home() / ".cache" / "tensorrt-workbench" / "exported"))


def cache_key(model: ExportedModel) -> str:
    versions = [f"{p}=={metadata.version(p)}" for p in ("onnx", *model.packages)]
    return hashlib.sha256(f"{VERSION}|{model.name}|{'|'.join(versions)}".encode()).hexdigest()[:12]


def export(model: ExportedModel, dest: Path | None = None) -> Path:
    """The folder holding `model.onnx` (+ `eval.npz`, `calibration.npz` where it has data), built once per key."""
    folder = Path(dest or default_dest()) / f"{model.name}-{cache_key(model)}"
    if not (folder / "model.onnx").is_file():
        partial = folder.with_name(folder.name + ".part")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        model.build(partial)
        partial.replace(folder)
    return folder


# --- torch models ---------------------------------------------------------------------------------------------------

def _torch_export(module, args: tuple, path: Path, *, dynamo: bool, input_names, output_names,
                  dynamic_axes: dict | None = None, opset: int = 18) -> None:
    import torch

    torch.manual_seed(SEED)
    module.eval()
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(module, args, dynamo=True, input_names=list(input_names),
                                        output_names=list(output_names), dynamic_axes=dynamic_axes,
                                        opset_version=opset, verbose=False)
            program.save(str(path))
        else:
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=dynamic_axes, opset_version=opset)


EVAL_IMAGES, CALIBRATION_IMAGES = 8, 16  # random images (no labels: variants are compared with FP32)


def _save_images(folder: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Random images in [0, 1) for evaluation and calibration, written beside the model; returns them all."""
    images = np.random.default_rng(SEED).random((EVAL_IMAGES + CALIBRATION_IMAGES, *shape), dtype=np.float32)
    np.savez(folder / "eval.npz", **{name: images[:EVAL_IMAGES]})
    np.savez(folder / "calibration.npz", **{name: images[EVAL_IMAGES:]})
    return images


class _Detection:
    """torchvision SSDlite (NMS inside) as a module of one image tensor -> boxes, scores, labels."""

    @staticmethod
    def module():
        import torch
        from torchvision.models.detection import ssdlite320_mobilenet_v3_large

        torch.manual_seed(SEED)
        detector = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=8,
                                                 detections_per_img=50, score_thresh=0.01)
        # the transform resizes every image to 320x320; a smaller fixed size keeps the corpus quick on 2 cores
        detector.transform.min_size = (160,)
        detector.transform.max_size = 160
        detector.transform.fixed_size = (160, 160)

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.detector = detector

            def forward(self, image):
                found = self.detector(list(image))[0]
                return found["boxes"], found["scores"], found["labels"]

        return Wrapped().eval()


def _traceable_batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's batched NMS (one NMS over boxes offset per class) without its data-dependent branches."""
    from torchvision.ops import nms

    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _build_detection(dynamo: bool) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        import torch

        from unittest import mock

        from torchvision.ops import boxes as box_ops

        image = torch.from_numpy(_save_images(folder, "image", (3, 160, 160))[:1])
        # torch.export cannot guard on batched_nms's data-dependent size tests: the coordinate trick without them
        with mock.patch.object(box_ops, "batched_nms", _traceable_batched_nms):
            _torch_export(_Detection.module(), (image,), folder / "model.onnx", dynamo=dynamo, input_names=["image"],
                          output_names=["boxes", "scores", "labels"], opset=18 if dynamo else 17)

    return build


def _build_segmentation(folder: Path) -> None:
    import torch
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(SEED)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=6)
    with torch.no_grad():  # with its random biases one class wins every pixel; without them the map has 4 classes
        for head in (net.classifier.low_classifier, net.classifier.high_classifier):
            head.bias.zero_()

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net(image)["out"]

    image = torch.from_numpy(_save_images(folder, "image", (3, 96, 96))[:1])
    _torch_export(Wrapped(), (image,), folder / "model.onnx", dynamo=False, input_names=["image"],
                  output_names=["masks"], dynamic_axes={"image": {0: "batch"}, "masks": {0: "batch"}}, opset=17)


def _build_vit(folder: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(SEED)
    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=2,
                       num_attention_heads=4, intermediate_size=128, num_labels=10)
    vit = ViTForImageClassification(config)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, pixel_values):
            return self.vit(pixel_values=pixel_values).logits

    _torch_export(Wrapped(), (torch.rand(2, 3, 32, 32),), folder / "model.onnx", dynamo=True,
                  input_names=["pixel_values"], output_names=["logits"],
                  dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}})


GPT2_LAYERS, GPT2_HEADS, GPT2_WIDTH, GPT2_VOCAB = 2, 2, 32, 128


def _build_gpt2_kv(folder: Path) -> None:
    import torch
    from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(SEED)
    config = GPT2Config(n_layer=GPT2_LAYERS, n_head=GPT2_HEADS, n_embd=GPT2_WIDTH, vocab_size=GPT2_VOCAB,
                        n_positions=64, use_cache=True, bos_token_id=0, eos_token_id=0)
    gpt2 = GPT2LMHeadModel(config)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gpt2 = gpt2

        def forward(self, input_ids, *past):
            cache = DynamicCache()
            for layer in range(GPT2_LAYERS):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.gpt2(input_ids=input_ids, past_key_values=cache, use_cache=True)
            present = out.past_key_values
            flat = []
            for layer in range(GPT2_LAYERS):
                flat += [present.layers[layer].keys, present.layers[layer].values]
            return (out.logits, *flat)

    head = GPT2_WIDTH // GPT2_HEADS
    ids = torch.randint(0, GPT2_VOCAB, (1, 3))
    past = [torch.rand(1, GPT2_HEADS, 5, head) for _ in range(2 * GPT2_LAYERS)]
    past_names = [f"past_{kind}_{layer}" for layer in range(GPT2_LAYERS) for kind in ("key", "value")]
    present_names = [f"present_{kind}_{layer}" for layer in range(GPT2_LAYERS) for kind in ("key", "value")]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: "total_sequence"} for n in present_names}}
    _torch_export(Wrapped(), (ids, *past), folder / "model.onnx", dynamo=False,
                  input_names=["input_ids", *past_names], output_names=["logits", *present_names],
                  dynamic_axes=axes, opset=17)


def gpt2_input_overrides(*, batch: int = 1, sequence: int = 4, past: int = 6) -> tuple[str, ...]:
    """`--input NAME=SHAPE` for the KV-cache decoder: token ids and the cache of `past` earlier tokens."""
    head = GPT2_WIDTH // GPT2_HEADS
    cache = [f"past_{kind}_{layer}={batch},{GPT2_HEADS},{past},{head}"
             for layer in range(GPT2_LAYERS) for kind in ("key", "value")]
    return (f"input_ids={batch},{sequence}", *cache)


def _build_bert(folder: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    config = BertConfig(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    bert = BertModel(config, add_pooling_layer=False)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(0, 256, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"}}
    _torch_export(Wrapped(), (ids, mask), folder / "model.onnx", dynamo=False,
                  input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                  dynamic_axes=axes, opset=17)


# --- scikit-learn / LightGBM on scikit-learn's bundled digits ---------------------------------------------------------

def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as float32 [N, 64], split 75/25 with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=SEED,
                                                        stratify=digits.target)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _sklearn_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, _, _ = digits_split()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x_train, y_train)


def _save_digits(folder: Path, input_name: str) -> None:
    x_train, y_train, x_test, y_test = digits_split()
    np.savez(folder / "eval.npz", **{input_name: x_test, "labels": y_test})
    np.savez(folder / "calibration.npz", **{input_name: x_train[:128]})


def _build_sklearn(zipmap: bool) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        from skl2onnx import to_onnx

        pipeline = _sklearn_pipeline()
        options = None if zipmap else {id(pipeline.steps[-1][1]): {"zipmap": False}}
        onx = to_onnx(pipeline, digits_split()[0][:1], options=options, target_opset=17)
        (folder / "model.onnx").write_bytes(onx.SerializeToString())
        _save_digits(folder, onx.graph.input[0].name)

    return build


def _build_lightgbm(folder: Path) -> None:
    from lightgbm import LGBMClassifier
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    x_train, y_train, _, _ = digits_split()
    classifier = LGBMClassifier(n_estimators=20, num_leaves=15, random_state=SEED, verbose=-1).fit(x_train, y_train)
    onx = convert_lightgbm(classifier, initial_types=[("input", FloatTensorType([None, 64]))], target_opset=15)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    _save_digits(folder, "input")


def sklearn_reference(name: str) -> tuple[np.ndarray, float]:
    """The fitted scikit-learn / LightGBM model's own predictions and accuracy on the held-out digits."""
    _, _, x_test, y_test = digits_split()
    if name == "lightgbm-digits":
        from lightgbm import LGBMClassifier

        x_train, y_train, _, _ = digits_split()
        model = LGBMClassifier(n_estimators=20, num_leaves=15, random_state=SEED, verbose=-1).fit(x_train, y_train)
    else:
        model = _sklearn_pipeline()
    predicted = model.predict(x_test)
    return predicted, float(np.mean(predicted == y_test))


# --- already quantised, and old files --------------------------------------------------------------------------------

def _build_qdq(folder: Path) -> None:
    """The segmentation model quantised by ONNX Runtime's static quantiser, QDQ format (as users ship them)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = export(MODEL_BY_NAME["lraspp-segmentation"], folder.parent)
    with np.load(source / "calibration.npz") as data:
        images = data["image"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": images[i:i + 1]} for i in range(len(images))])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source / "model.onnx"), str(folder / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
    for data in ("eval.npz", "calibration.npz"):
        shutil.copyfile(source / data, folder / data)


def _build_ir3(folder: Path) -> None:
    """The bundled digits CNN rewritten as an old model-zoo file: IR version 3, opset 8, every initializer also
    listed as a graph input (as exporters did before IR 4)."""
    import onnx
    from onnx import helper

    from workbench.samples._data import data_file, digits_split as cnn_split

    old = onnx.load(str(data_file("digits-cnn.onnx")))
    graph = old.graph
    newer = {"BatchNormalization": ("training_mode",), "MaxPool": ("ceil_mode", "dilations")}  # not in opset 8
    for node in graph.node:
        kept = [a for a in node.attribute if a.name not in newer.get(node.op_type, ())]
        del node.attribute[:]
        node.attribute.extend(kept)
        if node.op_type == "BatchNormalization":
            node.attribute.append(helper.make_attribute("spatial", 1))
    listed = {i.name for i in graph.input}
    for init in graph.initializer:
        if init.name not in listed:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    old.ir_version = 3
    old.producer_name, old.producer_version = "model-zoo-style", "ir3"
    del old.opset_import[:]
    old.opset_import.append(helper.make_opsetid("", 8))
    onnx.checker.check_model(old)
    onnx.save(old, str(folder / "model.onnx"))
    x_train, _, x_test, y_test = cnn_split()
    np.savez(folder / "eval.npz", input=x_test, labels=y_test)
    np.savez(folder / "calibration.npz", input=x_train[:128])


_TORCH = ("torch", "torchvision")
_HF = ("torch", "transformers")
MODELS = (
    ExportedModel("ssdlite-dynamo", "torch.onnx.export(dynamo=True), torch 2.14", "detection with NMS (SSDlite "
                  "MobileNetV3, 8 classes, 160x160, random weights)", "BSD-3-Clause (torchvision)",
                  _build_detection(dynamo=True), packages=_TORCH,
                  tasks={"boxes": "detection", "scores": "detection", "labels": "detection"}),
    ExportedModel("ssdlite-torchscript", "torch.onnx.export(dynamo=False), opset 17", "detection with NMS (as above)",
                  "BSD-3-Clause (torchvision)", _build_detection(dynamo=False), packages=_TORCH,
                  tasks={"boxes": "detection", "scores": "detection", "labels": "detection"}),
    ExportedModel("lraspp-segmentation", "torch.onnx.export(dynamo=False), opset 17", "semantic segmentation "
                  "(LRASPP MobileNetV3, 6 classes, 96x96, random weights)", "BSD-3-Clause (torchvision)",
                  _build_segmentation, packages=_TORCH, tasks={"masks": "segmentation"}),
    ExportedModel("vit-tiny", "torch.onnx.export(dynamo=True), torch 2.14", "image classification (ViT from "
                  "ViTConfig: 2 layers, width 64, 32x32, 10 classes, random weights)", "Apache-2.0 (transformers)",
                  _build_vit, packages=_HF, tasks={"logits": "classification"}),
    ExportedModel("gpt2-kv-cache", "torch.onnx.export(dynamo=False), opset 17", "decoder with KV-cache inputs "
                  "(GPT-2 from GPT2Config: 2 layers, width 32, vocab 128, random weights)", "Apache-2.0 "
                  "(transformers)", _build_gpt2_kv, inputs=gpt2_input_overrides(), packages=_HF,
                  tasks={"logits": "sequence", **{f"present_{kind}_{layer}": "regression" for layer in
                                                  range(GPT2_LAYERS) for kind in ("key", "value")}}),
    ExportedModel("bert-tiny-encoder", "torch.onnx.export(dynamo=False), opset 17", "encoder returning hidden "
                  "states (BERT from BertConfig: 2 layers, width 64, random weights)", "Apache-2.0 (transformers)",
                  _build_bert, inputs=("input_ids=1,16", "attention_mask=1,16"), packages=_HF,
                  tasks={"last_hidden_state": "embedding"}),
    ExportedModel("sklearn-zipmap", "skl2onnx (default options: ZipMap)", "classification (StandardScaler + "
                  "LogisticRegression on scikit-learn's digits)", "BSD-3-Clause (scikit-learn, digits data)",
                  _build_sklearn(zipmap=True), packages=("scikit-learn", "skl2onnx"),
                  tasks={"output_label": "label", "output_probability": "classification"}),
    ExportedModel("sklearn-no-zipmap", "skl2onnx (zipmap=False: label + probabilities)", "classification (as above)",
                  "BSD-3-Clause (scikit-learn, digits data)", _build_sklearn(zipmap=False),
                  packages=("scikit-learn", "skl2onnx"),
                  tasks={"label": "label", "probabilities": "classification"}),
    ExportedModel("lightgbm-digits", "onnxmltools.convert_lightgbm (ZipMap)", "classification (LGBMClassifier, 20 "
                  "trees, on scikit-learn's digits)", "MIT (LightGBM), BSD-3-Clause (digits data)", _build_lightgbm,
                  packages=("lightgbm", "onnxmltools", "scikit-learn"),
                  tasks={"label": "label", "probabilities": "classification"}),
    ExportedModel("lraspp-qdq", "onnxruntime.quantization.quantize_static (QDQ, U8 activations, S8 weights)",
                  "already-quantised segmentation (the LRASPP above)", "BSD-3-Clause (torchvision)", _build_qdq,
                  packages=(*_TORCH, "onnxruntime"), tasks={"masks": "segmentation"}),
    ExportedModel("digits-cnn-ir3", "onnx.helper rewrite to IR 3 / opset 8 (initializers as inputs)", "classification "
                  "(the bundled digits CNN as an old model-zoo file, opset 8)", "Apache-2.0 (this project)",
                  _build_ir3, tasks={"output": "classification"}),
)
MODEL_BY_NAME = {m.name: m for m in MODELS}


# --- reports on the corpus (tests/test_corpus_exported.py and --table) ----------------------------------------------

PRECISIONS = ("fp32", "fp16", "int8")
TIMED_RUNS = 3  # per configuration: the corpus checks outcomes, not speed (benchmarks/ times speed)
CALIBRATION_SAMPLES = 16
COMPARISON = 3  # interleaved rounds, and runs per round, of the report's comparison


def report_argv(model: ExportedModel, folder: Path, work: Path) -> list[str]:
    """`python -m workbench report` arguments for FP32 + FP16 + INT8 of one exported model in one report, its JSON
    and HTML written into `work` (with its result cache)."""
    options = ["--batch", "1", "--runs", str(TIMED_RUNS), "--calibration-size", str(CALIBRATION_SAMPLES),
               "--no-drift", "--quiet", "--cache-dir", str(work / "cache")]
    if (folder / "eval.npz").is_file():
        options += ["--eval-data", str(folder / "eval.npz")]
    if (folder / "calibration.npz").is_file():
        options += ["--calibration-data", str(folder / "calibration.npz")]
    for override in model.inputs:
        options += ["--input", override]
    return ["report", str(folder / "model.onnx"), *[a for p in PRECISIONS for a in ("--precision", p)], *options,
            "--json", str(work / "report.json"), "--out", str(work / "report.html")]


@contextmanager
def bounded_comparison(rounds: int = COMPARISON, runs: int = COMPARISON):
    """The report's interleaved re-timing with fewer rounds and runs (it is not what the corpus checks)."""
    from unittest import mock

    from workbench import report

    with mock.patch.object(report, "interleaved_comparison",
                           functools.partial(report.interleaved_comparison, rounds=rounds, runs=runs)):
        yield


def summary_row(model: ExportedModel, payload: dict) -> str:
    """One markdown row: each precision's median latency and headline metric, or why it was not measured."""
    cells = []
    for precision in PRECISIONS:
        index = next((i for i, r in enumerate(payload["results"]) if r["precision"] == precision), None)
        failure = next((f for f in payload["failures"] if f["precision"] == precision), None)
        if index is None:
            cells.append(f"not measured: {failure['error_type']}: {failure['reason'][:160]}" if failure else "-")
            continue
        result, row = payload["results"][index], payload["summary"][index]  # summary rows follow the results
        metric = result["accuracy"]["headline_metric"]
        text = f"{row['latency_median_ms']:.2f} ms"
        if metric is not None:
            value = metric["value"]
            shown = f"{value:.4f}" if metric["name"] == "cosine" else f"{value * 100:.2f} %"
            text += f"; {metric['name']} ({metric['output']}) {shown}"
        cells.append(text)
    first = next((r["accuracy"]["headline_metric"] for r in payload["results"]), None)
    return (f"| {model.name} | {model.exporter} | " + " | ".join(cells)
            + f" | {first['name'] + ' of ' + first['output'] if first else 'n/a'} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models to build (default: all)")
    parser.add_argument("--dest", type=Path, default=None, help="cache folder (default $WORKBENCH_EXPORTED)")
    parser.add_argument("--table", type=Path, default=None, metavar="WORK",
                        help="also report FP32/FP16/INT8 on each (reports into WORK) and print a markdown table")
    args = parser.parse_args(argv)
    models = [MODEL_BY_NAME[n] for n in args.names] if args.names else list(MODELS)
    folders = {}
    for model in models:
        folders[model.name] = export(model, args.dest)
        print(f"{model.name}: {folders[model.name]}")
    if args.table:
        import json

        from workbench.cli import main as workbench_main

        rows = []
        with bounded_comparison():
            for model in models:
                work = args.table / model.name
                work.mkdir(parents=True, exist_ok=True)
                code = workbench_main(report_argv(model, folders[model.name], work))
                payload = json.loads((work / "report.json").read_text())
                rows.append(summary_row(model, payload) + f" {code} |")
        print("| model | exporter | FP32 | FP16 | INT8 | headline metric | exit code |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
