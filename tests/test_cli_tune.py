"""`python -m workbench tune` and `lint`, and the report's lint section."""
from __future__ import annotations

import json

import pytest

from workbench.cli import main
from workbench.report import build_report
from workbench.session import Workbench


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-tune-cache")


def test_tune_writes_chosen_plan_frontier_and_sensitivity(cache, tmp_path, capsys):
    out = tmp_path / "tune.json"
    argv = ["tune", "digits-cnn", "--max-drop", "0.5", "--metric", "top1", "--budget", "3", "--runs", "3",
            "--quiet", "--cache-dir", str(cache), "--json", str(out), "--bundle", str(tmp_path / "bundle")]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["model"]["name"] == "digits-cnn" and data["metric"] == "top1" and data["max_drop"] == 0.5
    chosen = data["chosen"]
    assert chosen["within_budget"] and chosen["drop"] <= 0.5
    finalists = [c for c in data["configurations"] if c["retimed"]]  # timed again, interleaved with FP32
    assert finalists[0]["precision"] == "fp32" and chosen in finalists
    assert chosen["retimed"]["median_ms"] == min(c["retimed"]["median_ms"] for c in finalists)
    assert all(c["within_budget"] for c in finalists)
    assert data["frontier"] and all(c["on_frontier"] for c in data["frontier"])
    assert data["sensitivity"]["units"] and {"unit", "noise_added", "recovered"} <= set(data["sensitivity"]["units"][0])
    assert len(data["configurations"]) <= 1 + 3
    printed = capsys.readouterr().out
    assert "search stopped:" in printed and "bundle:" in printed and "timing FP32 and the" in printed
    assert list((tmp_path / "bundle" / "model_repository").iterdir())  # the chosen plan as a deployment bundle


def test_lint_a_tensorrt_plan_folder(trt_plans_dir, tmp_path, capsys):
    out = tmp_path / "lint.json"
    assert main(["lint", str(trt_plans_dir / "a100-resnet18-qat"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rules = {f["rule"] for f in data["findings"]}
    assert {"float-between-int8", "unfused-qdq"} <= rules
    assert all(f["ms"] >= 0 and f["why"] and f["fix"] and f["layers"] for f in data["findings"])
    assert "ms at stake" in capsys.readouterr().out


def test_lint_a_model_measures_it_first(cache, capsys):
    assert main(["lint", "digits-cnn", "--precision", "fp16", "--quiet", "--cache-dir", str(cache)]) == 0
    printed = capsys.readouterr().out
    assert "fp16" in printed and "[not-accelerated]" in printed  # ONNX Runtime's CPU provider has no FP16 speed


def test_report_has_a_lint_section(cache):
    wb = Workbench("digits-cnn", cache_dir=cache, progress=False)
    results = [wb.run("fp32", runs=3), wb.run("fp16", runs=3)]
    page = build_report([wb], results)
    assert ">Why is it not faster? Engine lint</h2>" in page and "not-accelerated" in page
