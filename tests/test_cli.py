"""The command line and its HTML report: the JSON keys are a contract other tools read."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from workbench.cli import main

SECTIONS = ("Summary", "Layer fusion: graph before and after", "Per-layer latency", "Per-layer accuracy drift",
            "Regional precision policies", "Cost model", "How this report was made")


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    argv = ["report", "digits-cnn", "--precision", "fp32", "--precision", "int8", "--method", "entropy",
            "--runs", "3", "--quiet", "--cache-dir", str(out / "cache"),
            "--out", str(out / "report.html"), "--json", str(out / "results.json")]
    assert main(argv) == 0
    return out


def test_report_json_keeps_the_contract(report_run):
    data = json.loads((report_run / "results.json").read_text())  # strict JSON: no NaN/Infinity literals
    assert data["model"]["name"] == "digits-cnn"
    assert data["model"]["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    fp32, int8 = data["results"]
    for result in (fp32, int8):
        for key in ("precision", "calibration", "method", "qdq_style", "backend", "synthetic_data", "latency_ms",
                    "accuracy", "layers", "drift"):
            assert key in result, key
        assert set(result["latency_ms"]) >= {"median", "p90", "batch"} and result["latency_ms"]["batch"] == 8
        assert set(result["accuracy"]) >= {"top1", "top1_agreement", "cosine"}
        assert result["layers"] and all(set(l) >= {"name", "type", "precision", "onnx_nodes", "latency_ms"}
                                        for l in result["layers"])
        assert result["backend"] == "onnxruntime" and result["synthetic_data"] is False
    assert fp32["precision"] == "fp32" and fp32["calibration"] is None and fp32["drift"] == []
    assert int8["method"] == "entropy" and int8["qdq_style"] == "onnxruntime" and int8["calibration"] == "digits-train"
    assert int8["drift"] and all(set(d) >= {"tensor", "sqnr_db", "cosine"} for d in int8["drift"])
    assert fp32["accuracy"]["top1"] > 0.97 and fp32["accuracy"]["top1_agreement"] == 1.0


def test_report_html_is_self_contained_with_every_section(report_run):
    page = (report_run / "report.html").read_text()
    assert not re.search(r'<script[^>]+src=["\']https?:', page)
    assert not re.search(r'<link[^>]+href=["\']https?:', page)
    assert "Plotly.newPlot" in page and page.count("<svg") >= 2
    for title in SECTIONS:
        assert f">{title}</h2>" in page, title
    assert "python -m workbench report digits-cnn" in page


def test_samples_lists_the_bundled_samples(capsys):
    assert main(["samples"]) == 0
    out = capsys.readouterr().out
    assert "fashion-cnn (default)" in out and "digits-cnn" in out and "calibration sets:" in out


def test_errors_are_one_clear_line_and_exit_non_zero(tmp_path):
    missing = tmp_path / "nope.onnx"
    proc = subprocess.run([sys.executable, "-m", "workbench", "report", str(missing), "--json", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ") and "nope.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plan_json_contract(trt_plans_dir, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", str(trt_plans_dir / "a100-resnet18-fp16"), "--json", str(out),
                 "--out", str(tmp_path / "plan.html")]) == 0
    data = json.loads(out.read_text())
    assert data["layers"] and all(set(l) >= {"name", "type", "precision", "onnx_nodes", "latency_ms"}
                                  for l in data["layers"])
    assert data["latency_ms"]["median"] == pytest.approx(0.86, abs=0.01)
    assert "<svg" in (tmp_path / "plan.html").read_text() or "Plotly.newPlot" in (tmp_path / "plan.html").read_text()


def test_plan_and_lint_take_a_bundled_example_plan_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no project folder: the names resolve through the package
    out = tmp_path / "plan.json"
    assert main(["plan", "a100-resnet18-qat", "--json", str(out), "--out", str(tmp_path / "plan.html")]) == 0
    assert json.loads(out.read_text())["latency_ms"]["median"] == pytest.approx(0.88, abs=0.01)
    assert main(["lint", "a100-resnet18-qat"]) == 0
    assert "[unfused-qdq]" in capsys.readouterr().out


def test_help_everywhere():
    for argv in (["--help"], ["report", "--help"], ["plan", "--help"], ["samples", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0


def test_two_engines_side_by_side(tmp_path):
    pytest.importorskip("openvino")
    argv = ["report", "digits-cnn", "--precision", "fp32", "--backend", "onnxruntime", "--backend", "openvino",
            "--runs", "3", "--quiet", "--no-drift", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["backend"] for r in data["results"]] == ["onnxruntime", "openvino"]
    assert data["results"][0]["accuracy"]["top1"] == pytest.approx(data["results"][1]["accuracy"]["top1"], abs=0.01)
    page = (tmp_path / "r.html").read_text()
    assert "Engines side by side" in page and ">openvino</td>" in page


def test_report_without_out_writes_html_and_json_to_reports(report_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "digits-cnn", "--precision", "fp32", "--runs", "3", "--quiet",
                 "--cache-dir", str(report_run / "cache")]) == 0
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.html", "results.json"]
    assert json.loads((tmp_path / "reports" / "results.json").read_text())["results"][0]["precision"] == "fp32"
    assert not (tmp_path / "report.html").exists()
