"""`report` keeps what it measured when a precision or engine is refused (failure rows, JSON `failures`, exit code),
takes every option of the Python API (one vocabulary), and times its comparison in interleaved rounds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench import vocabulary
from workbench.cli import _parser, main
from workbench.results import NO_DIFFERENCE, RetimedLatency, paired_speedup


def _report(tmp_path, *extra: str, name: str = "r") -> tuple[int, dict, str]:
    argv = ["report", "digits-cnn", "--runs", "3", "--quiet", "--no-drift", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / f"{name}.html"), "--json", str(tmp_path / f"{name}.json"), *extra]
    code = main(argv)
    page = tmp_path / f"{name}.html"
    return code, json.loads((tmp_path / f"{name}.json").read_text()), page.read_text() if page.exists() else ""


@pytest.mark.slow  # measures digits-cnn on the command line
def test_refused_precisions_are_rows_and_fp32_is_kept(tmp_path, capsys):
    code, data, page = _report(tmp_path, "--keep-fp32", "NoSuchOp")
    assert code == 1  # nothing but FP32 could be measured
    assert [r["precision"] for r in data["results"]] == ["fp32"]
    assert [(f["precision"], f["backend"], f["error_type"]) for f in data["failures"]] == [
        ("fp16", "onnxruntime", "PrecisionError"), ("int8", "onnxruntime", "PrecisionError")]
    assert all("NoSuchOp" in f["reason"] and "Gemm" in f["reason"] for f in data["failures"])  # what to use instead
    assert data["failures"][1]["label"].startswith("int8 (minmax, onnxruntime")
    assert "Not measured" in page and page.count("PrecisionError") >= 2  # the rows, with their reasons
    assert "2 configurations could not be measured" in page
    assert "not measured: fp16" in capsys.readouterr().err


@pytest.mark.slow  # measures digits-cnn on the command line
def test_one_refused_precision_exits_zero_unless_strict(tmp_path):
    code, data, page = _report(tmp_path, "--calibration", "no-such-set")
    assert code == 0
    assert [r["precision"] for r in data["results"]] == ["fp32", "fp16"]
    assert [(f["precision"], f["error_type"]) for f in data["failures"]] == [("int8", "CalibrationError")]
    assert "no-such-set" in data["failures"][0]["reason"] and "Not measured" in page
    code, data, _ = _report(tmp_path, "--calibration", "no-such-set", "--strict", name="strict")
    assert code == 1 and len(data["results"]) == 2  # strict: the failure decides the exit code, results still kept


@pytest.mark.slow  # measures digits-cnn on the command line
def test_keep_fp32_reaches_the_plan(tmp_path):
    code, data, _ = _report(tmp_path, "--precision", "fp32", "--precision", "int8", "--keep-fp32", "Gemm")
    assert code == 0 and not data["failures"]
    int8 = data["results"][1]
    assert int8["keep_fp32"] == ["Gemm"] and "Gemm" in data["summary"][1]["label"]


@pytest.mark.slow  # measures digits-cnn on the command line
def test_dynamic_int8_and_every_vocabulary_choice_are_accepted(tmp_path):
    actions = {a.dest: a for a in next(a for a in _parser()._subparsers._group_actions)
               .choices["report"]._actions}
    assert tuple(actions["method"].choices) == vocabulary.METHODS
    assert tuple(actions["qdq_style"].choices) == vocabulary.QDQ_STYLES
    assert tuple(actions["weight_rounding"].choices) == vocabulary.WEIGHT_ROUNDINGS
    assert tuple(actions["precision"].choices) == vocabulary.PRECISIONS
    code, data, _ = _report(tmp_path, "--precision", "fp32", "--precision", "int8", "--method", "dynamic")
    assert code == 0 and data["results"][1]["method"] == "dynamic"
    code, data, _ = _report(tmp_path, "--precision", "int8", "--per-tensor", name="per-tensor")
    assert code == 0 and data["results"][0]["precision_notes"][0].startswith("INT8 (per-tensor weights)")


@pytest.mark.slow  # measures digits-cnn on the command line
def test_comparison_comes_from_interleaved_rounds(tmp_path):
    code, data, page = _report(tmp_path)
    assert code == 0 and not data["failures"]
    base, *variants = data["summary"]
    assert base["speedup_verdict"] == "baseline" and base["interleaved"]["rounds"] == 7
    for row in variants:
        rounds = row["interleaved"]["round_medians_ms"]
        assert len(rounds) == 7 and row["speedup_timing"] == "interleaved rounds"
        assert row["interleaved_median_ms"] == pytest.approx(float(np.median(rounds)))
        ratios = np.array(base["interleaved"]["round_medians_ms"]) / np.array(rounds)
        assert row["speedup_vs_fp32"] == pytest.approx(float(np.median(ratios)))
        assert row["speedup_ci"] == pytest.approx([ratios.min(), ratios.max()])  # 7 rounds: min and max bound it
    assert "in 7 interleaved rounds" in data["headline"]
    assert "7 interleaved rounds" in page and "speed-up timed in" in page


def _timed(rounds) -> RetimedLatency:
    return RetimedLatency.of(rounds, batch=8, runs=10)


def test_paired_speedup_sees_through_load_that_comes_and_goes():
    # load doubles every other round, on both sides alike: each round says x2, so the verdict holds
    base, fast = _timed([10, 20, 10, 20, 10, 20, 10]), _timed([5, 10, 5, 10, 5, 10, 5])
    gain = paired_speedup(fast, base)
    assert (gain.ratio, gain.low, gain.high, gain.verdict) == (2.0, 2.0, 2.0, "faster")
    assert paired_speedup(base, fast).verdict == "slower"
    # one round says faster, another slower: the interval holds 1, no verdict is claimed
    mixed = paired_speedup(_timed([10, 10, 10, 10, 10, 10, 10]), _timed([13, 12, 11, 8, 12, 12, 12]))
    assert mixed.low < 1 < mixed.high and mixed.verdict == NO_DIFFERENCE
    # five rounds cannot bound the median at 95 %: no interval, the effect size alone decides
    assert paired_speedup(_timed([5] * 5), _timed([10] * 5)).low is None


@pytest.mark.slow  # measures digits-cnn on the command line
def test_headline_verdict_names_what_the_headline_claims(tmp_path):
    code, data, _ = _report(tmp_path, "--precision", "fp32", "--precision", "int8")
    claim = data["headline_verdict"]
    assert code == 0 and claim["timing"] == "interleaved rounds"
    assert claim["configuration"] in data["headline"] and claim["baseline"].startswith("fp32")
    row = next(r for r in data["summary"] if r["label"] == claim["configuration"])
    assert claim["verdict"] == row["speedup_verdict"]


@pytest.mark.slow  # measures digits-cnn on the command line
def test_an_engine_that_cannot_run_is_a_row_and_the_other_engine_is_kept(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here: its engine does not fail")
    except ImportError:
        pass
    code, data, page = _report(tmp_path, "--precision", "fp32", "--precision", "int8", "--backend", "onnxruntime",
                               "--backend", "tensorrt")
    assert code == 0 and [r["backend"] for r in data["results"]] == ["onnxruntime", "onnxruntime"]
    assert {(f["backend"], f["error_type"]) for f in data["failures"]} == {("tensorrt", "MissingDependencyError")}
    assert len(data["failures"]) == 2 and "pip install tensorrt" in data["failures"][0]["reason"]
    code, data, _ = _report(tmp_path, "--precision", "fp32", "--backend", "tensorrt", name="nothing")
    assert code == 1 and data["results"] == [] and data["headline"].startswith("Nothing could be measured")


def test_unknown_engine_names_are_usage_errors():
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "digits-cnn", "--backend", "nosuch"])
    assert exit_info.value.code == 2
