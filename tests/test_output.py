"""Output files: atomic, through symlinks, never over devices or inputs, checked before any measuring (issue 18.1)."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from workbench import output
from workbench.cli import main
from workbench.errors import OutputError
from workbench.output import atomic_write, check_outputs


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_files_get_the_ordinary_mode(tmp_path, umask_022):
    path = atomic_write(tmp_path / "sub" / "report.html", b"<html>")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"<html>"


def test_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write(path, b"new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    atomic_write(link, b"new")
    assert link.is_symlink() and real.read_text() == "new"


def test_special_files_and_folders_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="FIFO"):
        atomic_write(fifo, b"x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(OutputError, match="folder"):
        atomic_write(tmp_path, b"x")
    with pytest.raises(OutputError, match="device"):
        check_outputs({"--json": "/dev/full"})  # refused before anything is written


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    path.write_text('{"ok": true}')

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output.os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        atomic_write(path, b"{" * 1000)
    assert path.read_text() == '{"ok": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left behind


def test_outputs_must_differ_from_inputs_and_each_other(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    with pytest.raises(OutputError, match="input"):
        check_outputs({"--out": model}, inputs=[model])
    with pytest.raises(OutputError, match="input"):
        check_outputs({"--out": tmp_path / "." / "model.onnx"}, inputs=[str(model)])
    with pytest.raises(OutputError, match="--json .* also the path of --out"):
        check_outputs({"--out": tmp_path / "x", "--json": tmp_path / "x"})
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_outputs({"--out": model / "report.html"})
    check_outputs({"--out": tmp_path / "new" / "report.html", "--json": None}, inputs=[model])


def test_an_unwritable_folder_is_found_by_probing(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(output.tempfile, "mkstemp", denied)
    with pytest.raises(OutputError, match="Permission denied"):
        check_outputs({"--out": tmp_path / "report.html"})


@pytest.mark.parametrize("case", ["out-is-model", "out-equals-json", "out-is-folder", "json-is-device"])
def test_cli_refuses_bad_outputs_before_measuring(tmp_path, capsys, case):
    from conftest import make_tiny_cnn

    model = tmp_path / "tiny.onnx"
    model.write_bytes(make_tiny_cnn().SerializeToString())
    before = model.read_bytes()
    cache = tmp_path / "cache"
    outs = {"out-is-model": ["--out", str(model)],
            "out-equals-json": ["--out", str(tmp_path / "x"), "--json", str(tmp_path / "x")],
            "out-is-folder": ["--out", str(tmp_path)],
            "json-is-device": ["--json", "/dev/full"]}[case]
    assert main(["report", str(model), "--precision", "fp32", "--runs", "1", "--quiet",
                 "--cache-dir", str(cache), *outs]) == 2
    assert "error:" in capsys.readouterr().err
    assert model.read_bytes() == before
    assert not cache.exists()  # nothing was measured
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_plan_refuses_to_overwrite_its_graph_json(tmp_path, capsys):
    graph = tmp_path / "a.graph.json"
    graph.write_text('{"Layers": ["conv1"], "Bindings": ["input"]}')
    assert main(["plan", str(graph), "--json", str(graph)]) == 2
    assert graph.read_text() == '{"Layers": ["conv1"], "Bindings": ["input"]}'


def test_plan_report_and_json_are_written(tmp_path, capsys):
    graph = tmp_path / "a.graph.json"
    graph.write_text('{"Layers": ["conv1"], "Bindings": ["input"]}')
    assert main(["plan", str(graph), "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json")]) == 0
    assert "<html>" in (tmp_path / "r.html").read_text() and '"layers"' in (tmp_path / "r.json").read_text()
