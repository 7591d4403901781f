"""Reliability round 2 (issue 28): outputs never destroy inputs, a cache that trusts nothing it did not write, model
identity by content, bounded user data, tune's honest labels, bundles that stay inside themselves."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_tiny_cnn
from workbench import output
from workbench.cli import main
from workbench.errors import OutputError


@pytest.fixture
def tiny_file(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(make_tiny_cnn().SerializeToString())
    return model


def _npz(path, n=8):
    rng = np.random.default_rng(0)
    np.savez(path, input=rng.standard_normal((n, 1, 8, 8)).astype(np.float32), labels=np.arange(n) % 4)
    return path


# ---- 1. one output guard ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--data", "--calibration-data", "--eval-data"])
@pytest.mark.parametrize("output_option", ["--json", "--out"])
def test_report_never_writes_onto_its_data(tmp_path, tiny_file, capsys, option, output_option):
    data = _npz(tmp_path / "data.npz")
    before = data.read_bytes()
    cache = tmp_path / "cache"
    code = main(["report", str(tiny_file), "--precision", "fp32", "--runs", "1", "--quiet", "--no-drift",
                 "--cache-dir", str(cache), option, str(data), output_option, str(data)])
    assert code == 2 and "input of this command" in capsys.readouterr().err
    assert data.read_bytes() == before and not cache.exists()


def test_sweep_checks_its_json_before_any_work(tmp_path, tiny_file, capsys):
    before = tiny_file.read_bytes()
    cache = tmp_path / "cache"
    code = main(["sweep", str(tiny_file), "--grid", "precision=fp32", "--grid", "runs=1", "--no-drift", "--quiet",
                 "--cache-dir", str(cache), "--json", str(tiny_file)])
    assert code == 2 and "input of this command" in capsys.readouterr().err
    assert tiny_file.read_bytes() == before and not cache.exists()


def test_warm_checks_its_json_before_any_work(tmp_path, capsys, monkeypatch):
    import workbench.warm

    def no_work(*args, **kwargs):
        raise AssertionError("warm started before its output was checked")

    monkeypatch.setattr(workbench.warm, "warm", no_work)
    code = main(["warm", "--cache", str(tmp_path / "cache"), "--json", str(tmp_path)])
    assert code == 2 and "folder" in capsys.readouterr().err


@pytest.mark.parametrize("sidecar", [".profile.json", ".metadata.json", ".build.metadata.json",
                                     ".profile.metadata.json"])
@pytest.mark.parametrize("command", ["plan", "lint"])
def test_plan_and_lint_never_write_onto_a_sidecar_found_beside_the_graph(tmp_path, capsys, sidecar, command):
    graph = tmp_path / "a.graph.json"
    graph.write_text('{"Layers": ["conv1"], "Bindings": ["input"]}')
    side = tmp_path / f"a{sidecar}"
    side.write_text("[]")
    assert main([command, str(graph), "--json", str(side)]) == 2
    assert "input of this command" in capsys.readouterr().err and side.read_text() == "[]"


def test_python_write_report_never_writes_onto_the_sessions_data(tmp_path, tiny_file):
    from workbench.report import write_report
    from workbench.session import Workbench

    data = _npz(tmp_path / "data.npz")
    before = data.read_bytes()
    wb = Workbench(str(tiny_file), cache_dir=tmp_path / "cache", progress=False, data=str(data))
    assert str(data) in map(str, wb.input_paths) and str(tiny_file) in map(str, wb.input_paths)
    with pytest.raises(OutputError, match="input"):
        write_report([wb], [], data)
    assert data.read_bytes() == before


def test_an_output_over_a_file_inside_an_input_folder_is_refused(tmp_path):
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "1.png").write_bytes(b"png")
    with pytest.raises(OutputError, match="input"):
        output.check_outputs({"--json": folder / "1.png"}, inputs=[tmp_path / "images"])
    output.check_outputs({"--json": tmp_path / "images" / "new.json"}, inputs=[tmp_path / "images"])


def test_a_group_of_outputs_is_swapped_under_one_lock(tmp_path, monkeypatch):
    """While one writer swaps its JSON and HTML into place, another cannot: the pair always comes from one run."""
    held = []
    real_replace = os.replace

    def replace(src, dst):
        probe = os.open(tmp_path, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(False)
        except BlockingIOError:
            held.append(True)
        finally:
            os.close(probe)
        real_replace(src, dst)

    (tmp_path / "r.json").write_text("old")
    monkeypatch.setattr(output.os, "replace", replace)
    written = output.write_group({tmp_path / "r.json": b"{}", tmp_path / "r.html": b"<html>"})
    assert held == [True, True] and sorted(p.name for p in written) == ["r.html", "r.json"]
    assert (tmp_path / "r.json").read_bytes() == b"{}" and (tmp_path / "r.html").read_bytes() == b"<html>"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_group_that_cannot_be_written_leaves_every_old_file(tmp_path, monkeypatch):
    (tmp_path / "r.json").write_text("old json")
    (tmp_path / "r.html").write_text("old html")
    real_mkstemp = output.tempfile.mkstemp
    calls = []

    def mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(output.tempfile, "mkstemp", mkstemp)
    with pytest.raises(OutputError, match="No space"):
        output.write_group({tmp_path / "r.json": b"{}", tmp_path / "r.html": b"<html>"})
    assert (tmp_path / "r.json").read_text() == "old json" and (tmp_path / "r.html").read_text() == "old html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


def test_report_writes_json_and_html_as_one_group(tmp_path, tiny_file, monkeypatch, capsys):
    groups = []
    real = output.write_group
    monkeypatch.setattr(output, "write_group",
                        lambda files, **kw: groups.append(sorted(map(str, files))) or real(files, **kw))
    code = main(["report", str(tiny_file), "--precision", "fp32", "--runs", "1", "--quiet", "--no-drift",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "r.html")])
    assert code == 0
    ours = [group for group in groups if str(tmp_path / "r.html") in group or str(tmp_path / "r.json") in group]
    assert ours == [sorted([str(tmp_path / "r.html"), str(tmp_path / "r.json")])]
    assert json.loads((tmp_path / "r.json").read_text())["results"]


# ---- 2. a cache that follows no link and trusts only what it can check --------------------------------------------

from workbench.cache import KEY_ENV_VAR, CacheWarning, ResultCache  # noqa: E402
from workbench.errors import CacheError  # noqa: E402


@pytest.fixture
def no_cache_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    monkeypatch.delenv("WORKBENCH_CACHE_KEY_FILE", raising=False)
    monkeypatch.delenv("WORKBENCH_SHARED_CACHE", raising=False)


def test_the_cache_never_writes_through_a_planted_link(tmp_path, no_cache_key):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cache = ResultCache(tmp_path / "cache")
    key = cache.key(kind="run", model="abc")
    cache.directory.mkdir()
    for suffix in ("json", "onnx", "onnx.sha256"):
        (cache.directory / f"{key}.{suffix}").symlink_to(victim)
    cache.put(key, {"a": 1})
    cache.put_bytes(key, b"model bytes", "onnx")
    assert victim.read_text() == "precious"
    assert not (cache.directory / f"{key}.json").is_symlink() and cache.get(key) == {"a": 1}
    assert cache.get_bytes(key, "onnx") == b"model bytes"


def test_the_cache_reads_no_link_and_no_special_file(tmp_path, no_cache_key):
    writer = ResultCache(tmp_path / "outside")
    key = writer.key(kind="run")
    writer.put(key, {"a": 1})
    writer.put_bytes(key, b"x", "bin")
    cache = ResultCache(tmp_path / "cache")
    cache.directory.mkdir()
    (cache.directory / f"{key}.json").symlink_to(writer.path(key))
    (cache.directory / f"{key}.bin").symlink_to(writer.path(key, "bin"))
    (cache.directory / f"{key}.bin.sha256").symlink_to(writer.path(key, "bin.sha256"))
    assert cache.get(key) is None and cache.get_bytes(key) is None and cache.find(key) is None
    assert key not in cache
    fifo_key = cache.key(kind="fifo")
    os.mkfifo(cache.directory / f"{fifo_key}.json")  # would block a plain open()
    assert cache.get(fifo_key) is None


def test_a_planted_link_as_a_cache_subfolder_is_refused(tmp_path, no_cache_key):
    cache = ResultCache(tmp_path / "cache")
    cache.directory.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (cache.directory / "tensorrt").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CacheError, match="link"):
        cache.subfolder("tensorrt")
    assert cache.subfolder("engines").is_dir() and cache.subfolder("engines").parent == cache.directory


def test_a_shared_layer_writable_by_others_is_not_trusted_without_a_key(tmp_path, no_cache_key):
    shared = ResultCache(tmp_path / "shared")
    key = shared.key(kind="run")
    shared.put(key, {"speedup": 8.97})
    shared.directory.chmod(0o777)
    with pytest.warns(CacheWarning, match="writable by others"):
        cache = ResultCache(tmp_path / "private", shared=shared.directory)
        assert cache.get(key) is None


def test_shared_entries_are_authenticated_with_the_teachers_key(tmp_path, no_cache_key, monkeypatch):
    import hashlib

    monkeypatch.setenv(KEY_ENV_VAR, "teacher-secret")
    teacher = ResultCache(tmp_path / "shared")
    key = teacher.key(kind="run")
    teacher.put(key, {"top1": 0.71})
    teacher.put_bytes(key, b"onnx", "onnx")
    student = ResultCache(tmp_path / "private", shared=teacher.directory)
    assert student.get(key) == {"top1": 0.71} and student.get_bytes(key, "onnx") == b"onnx"
    # someone who can write the folder but holds no key edits an entry and recomputes its checksum
    envelope = json.loads(teacher.path(key).read_text())
    envelope["entry"]["top1"] = 0.999
    envelope["sha256"] = hashlib.sha256(json.dumps(envelope["entry"], sort_keys=True, separators=(",", ":"))
                                        .encode()).hexdigest()
    teacher.path(key).write_text(json.dumps(envelope))
    teacher.path(key, "onnx").write_bytes(b"evil")
    teacher.path(key, "onnx.sha256").write_text(hashlib.sha256(b"evil").hexdigest())
    student = ResultCache(tmp_path / "private2", shared=teacher.directory)
    assert student.get(key) is None and student.get_bytes(key, "onnx") is None
    assert student.counters.rejected == 2
    ResultCache(teacher.directory, key="another-key").put(key, {"top1": 0.71})  # sealed with another key
    assert ResultCache(tmp_path / "private3", shared=teacher.directory).get(key) is None


def test_a_missing_shared_cache_is_a_typed_error(tmp_path, tiny_file, capsys, no_cache_key):
    with pytest.raises(CacheError, match="does not exist"):
        ResultCache(tmp_path / "cache", shared=tmp_path / "nowhere")
    code = main(["report", str(tiny_file), "--precision", "fp32", "--runs", "1", "--quiet", "--no-drift",
                 "--cache-dir", str(tmp_path / "cache"), "--shared-cache", str(tmp_path / "nowhere"),
                 "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert code == 2 and "--shared-cache" in err and "does not exist" in err


# ---- 3. model identity by content ----------------------------------------------------------------------------------

def _two_model_files(tmp_path):
    paths = []
    for seed, folder in ((0, "a"), (1, "b")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "model.onnx"
        path.write_bytes(make_tiny_cnn(seed).SerializeToString())
        paths.append(path)
    return paths


def test_a_baseline_is_found_by_model_content_never_by_name(tmp_path):
    from workbench.results import RunResult, baseline_of
    from workbench.session import Workbench

    a, b = _two_model_files(tmp_path)
    run = {"runs": 2, "drift": False}
    wa = Workbench(str(a), cache_dir=tmp_path / "cache", progress=False)
    wb = Workbench(str(b), cache_dir=tmp_path / "cache", progress=False)
    a_fp32, b_fp32, b_fp16 = wa.run("fp32", **run), wb.run("fp32", **run), wb.run("fp16", **run)
    assert a_fp32.model == b_fp16.model == "model"  # both files are model.onnx
    assert b_fp16.model_sha256 == wb.model.content_hash != a_fp32.model_sha256
    assert baseline_of(b_fp16, [a_fp32]) is None
    assert baseline_of(b_fp16, [a_fp32, b_fp32]) is b_fp32
    again = RunResult.from_json(json.loads(json.dumps(b_fp16.to_json())))
    assert again.model_sha256 == b_fp16.model_sha256
    assert Workbench(str(b), cache_dir=tmp_path / "cache", progress=False).run("fp16", **run).model_sha256 \
        == wb.model.content_hash  # also when served from the cache


def test_the_loader_gives_same_named_files_unique_names(tmp_path, explorer):
    a, b = _two_model_files(tmp_path)
    first = explorer.loader.load_path(str(a))
    second = explorer.loader.load_path(str(b))
    assert first and second and first != second
    assert explorer.session(first).model.content_hash != explorer.session(second).model.content_hash
    assert explorer.loader.load_path(str(a)) == first  # the same file again keeps its name


def test_an_upload_named_like_a_sample_never_replaces_the_sample(explorer):
    sample_hash = explorer.session("digits-cnn").model.content_hash
    name = explorer.loader.load_onnx("digits-cnn.onnx", make_tiny_cnn(2).SerializeToString())
    assert name and name != "digits-cnn" and name in explorer.model.options
    assert explorer.session("digits-cnn").model.content_hash == sample_hash
    explorer.model.value = "digits-cnn"
    explorer.wait()


# ---- 5. Netron serves a private copy, to loopback names only ------------------------------------------------------

def _http(url: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    import http.client
    from urllib.parse import urlparse

    parsed = urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host or parsed.netloc})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_netron_serves_a_private_copy_of_a_model_file_to_loopback_names_only(tmp_path):
    pytest.importorskip("netron")
    from workbench.errors import MissingDependencyError
    from workbench.views import netron

    folder = tmp_path / "data"
    folder.mkdir()
    model = folder / "model.onnx"
    model.write_bytes(make_tiny_cnn().SerializeToString())
    (folder / "id_rsa").write_text("PRIVATE KEY")
    try:
        url = netron.open_in_netron(model)
    except MissingDependencyError as exc:
        pytest.skip(f"Netron refuses to run: {exc}")
    try:
        served = netron._SERVERS[url][1]
        assert served.parent != folder and served.read_bytes() == model.read_bytes()
        status, body = _http(url, f"/data/{served.name}")
        assert status == 200 and body == model.read_bytes()
        for path in ("/data/id_rsa", "/data/../data/id_rsa", f"/data/{folder}/id_rsa"):
            status, body = _http(url, path)
            assert b"PRIVATE KEY" not in body
        status, body = _http(url, "/", host="rebind.example:80")
        assert status == 403 and b"<html" not in body.lower()
        status, _ = _http(url, "/", host=f"localhost:{url.rsplit(':', 1)[1]}")
        assert status == 200
        assert netron.open_in_netron(model) == url  # the same file again: the running server
    finally:
        netron.stop_all()


# ---- 6. the loader never echoes files; user data has bounds ------------------------------------------------------

from workbench.errors import InputSpecError  # noqa: E402
from workbench.models.spec import TensorSpec  # noqa: E402
from workbench.userdata import ImagePreprocessing, load_data, read_npz  # noqa: E402

IMAGE_INPUT = [TensorSpec("input", "float32", ("batch", 1, 8, 8))]


def test_the_loader_never_shows_a_files_content(tmp_path, explorer):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$very-secret-hash:19000:0:99999:7:::\n")
    assert explorer.loader.load_path(str(secret)) is None
    assert "very-secret" not in explorer.loader.message.value and "root:" not in explorer.loader.message.value
    assert "Could not load" in explorer.loader.message.value


def _npy_member(shape, dtype="<f4") -> bytes:
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    return header.getvalue()


def test_an_npz_header_claiming_1e12_samples_is_refused_before_allocating(tmp_path):
    import zipfile

    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("input.npy", _npy_member((10**12, 1, 8, 8)))
    with pytest.raises(InputSpecError, match="needs 232.8 TiB"):
        load_data(path, IMAGE_INPUT)


def test_an_npz_that_decompresses_beyond_the_bound_is_refused(tmp_path, monkeypatch):
    import workbench.userdata

    np.savez_compressed(tmp_path / "zeros.npz", input=np.zeros((4096, 1, 8, 8), np.float32))  # 1 MiB of zeros
    monkeypatch.setattr(workbench.userdata, "MAX_DATA_BYTES", 64 << 10)
    with pytest.raises(InputSpecError, match="MiB|KiB|GiB"):
        read_npz(tmp_path / "zeros.npz")


def test_pickled_npz_members_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "input.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "evil.npz", "w") as archive:
        archive.write(tmp_path / "input.npy", "input.npy")
    with pytest.raises(InputSpecError, match="object"):
        load_data(tmp_path / "evil.npz", IMAGE_INPUT)


def test_fifos_and_devices_are_refused_as_data(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    with pytest.raises(InputSpecError, match="regular file"):
        load_data(fifo, IMAGE_INPUT)
    with pytest.raises(InputSpecError, match="regular file"):
        load_data("/dev/zero", IMAGE_INPUT)
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "1.png")
    with pytest.raises(InputSpecError, match="regular file"):
        load_data(tmp_path / "images", IMAGE_INPUT)


def test_an_image_with_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    import workbench.userdata

    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    Image.new("L", (600, 500)).save(folder / "big.png")
    monkeypatch.setattr(workbench.userdata, "MAX_IMAGE_PIXELS", 100_000)
    with pytest.raises(InputSpecError, match="300,000 pixels|megapixel"):
        load_data(tmp_path / "images", IMAGE_INPUT)


@pytest.mark.parametrize("text, argument", [("size=0x0", "size"), ("size=20000x20000", "size"),
                                            ("mean=1:2", "mean"), ("std=0", "std"), ("std=1:nan:1", "std"),
                                            ("scale=0", "scale"), ("size=-3", "size"), ("mean=inf", "mean")])
def test_bad_preprocessing_arguments_are_typed_errors_naming_the_argument(text, argument):
    with pytest.raises(InputSpecError, match=rf"^Image preprocessing {argument}"):
        ImagePreprocessing.parse(text)


def test_labels_outside_the_models_classes_are_refused(tmp_path):
    from workbench.session import Workbench

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", input=rng.standard_normal((8, 1, 8, 8)).astype(np.float32),
             labels=np.arange(8) + 10)  # the model has 4 classes
    model = tmp_path / "tiny.onnx"
    model.write_bytes(make_tiny_cnn().SerializeToString())
    with pytest.raises(InputSpecError, match="labels.*0-3|4 classes"):
        Workbench(str(model), cache_dir=tmp_path / "cache", progress=False, data=str(tmp_path / "d.npz"))


# ---- 7. tune says what precision really ran ------------------------------------------------------------------------

def _relu_chain(n: int = 3):
    import onnx
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION)


def test_tune_never_labels_an_fp32_plan_int8_and_carries_the_warning(tmp_path, capsys):
    path = tmp_path / "chain.onnx"
    path.write_bytes(_relu_chain().SerializeToString())
    code = main(["tune", str(path), "--budget", "3", "--runs", "3", "--quiet", "--cache-dir", str(tmp_path / "c"),
                 "--json", str(tmp_path / "t.json")])
    out = capsys.readouterr().out
    assert code == 0
    found = json.loads((tmp_path / "t.json").read_text())
    int8 = [c for c in found["configurations"] if c["precision"] == "int8"]
    assert int8, "the search measured no INT8 configuration"
    for config in int8:
        assert "all int8" not in config["kept_text"] and "FP32" in config["kept_text"]
        assert config["precision_warning"] and "mostly FP32" in config["precision_warning"]
        assert config["precision_share"]["graph"]
    assert "all int8" not in out and "WARNING" in out


# ---- 8. bundles replace only bundles and stay inside themselves ---------------------------------------------------

@pytest.fixture(scope="module")
def bundle_session(tmp_path_factory):
    from workbench.models.spec import Model
    from workbench.session import Workbench

    wb = Workbench(Model.from_proto(make_tiny_cnn(), name="tiny", source="test"),
                   cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return wb, wb.run("fp16", runs=2, drift=False)


def test_replace_never_deletes_a_folder_that_only_has_a_file_named_metadata_json(tmp_path, bundle_session):
    from workbench.scenarios import BundleError, export_bundle

    project = tmp_path / "project"
    project.mkdir()
    (project / "metadata.json").write_text('{"author": "me"}')
    (project / "thesis.tex").write_text("years of work")
    with pytest.raises(BundleError, match="not a bundle"):
        export_bundle(*bundle_session, project, replace=True)
    assert (project / "thesis.tex").read_text() == "years of work"


def test_a_bundle_into_a_link_lands_in_its_target_and_the_link_stays(tmp_path, bundle_session):
    from workbench.scenarios import export_bundle, verify_bundle

    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    for replace in (False, True):
        export_bundle(*bundle_session, link, replace=replace)
        assert link.is_symlink() and (target / "metadata.json").is_file() and verify_bundle(link) == []


def test_verify_bundle_reads_nothing_outside_the_bundle(tmp_path, bundle_session, monkeypatch):
    import hashlib

    import workbench.scenarios.bundle as bundle
    from workbench.scenarios import export_bundle, verify_bundle

    out = export_bundle(*bundle_session, tmp_path / "b")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    meta = json.loads((out / "metadata.json").read_text())
    [model_rel] = [rel for rel in meta["files"] if rel.endswith("model.onnx")]
    (out / model_rel).unlink()
    (out / model_rel).symlink_to(outside)
    meta["files"][model_rel] = hashlib.sha256(b"secret").hexdigest()
    meta["files"]["../secret.txt"] = hashlib.sha256(b"secret").hexdigest()
    meta["files"][str(outside)] = hashlib.sha256(b"secret").hexdigest()
    (out / "metadata.json").write_text(json.dumps(meta))
    read = []
    real_sha = bundle.file_sha256
    monkeypatch.setattr(bundle, "file_sha256", lambda path: read.append(os.path.realpath(path)) or real_sha(path))
    problems = verify_bundle(out)
    assert str(outside) not in read
    assert sum("outside the bundle" in p or "link" in p for p in problems) == 3, problems


# ---- 9. Ray: arguments and reachability checked before any work, a clean SIGTERM ---------------------------------

@pytest.mark.parametrize("args, message", [(["--ray", "--max-retries", "-5"], "--max-retries -5"),
                                           (["--ray", "127.0.0.1:1"], "Cannot reach the Ray cluster at 127.0.0.1:1"),
                                           (["--ray", "auto"], "Cannot reach the Ray cluster at 127.0.0.1:1"),
                                           (["--ray", "ray://127.0.0.1:1"], "ray[client]")])
def test_sweep_checks_ray_arguments_before_any_work(tmp_path, tiny_file, capsys, monkeypatch, args, message):
    import importlib.util

    pytest.importorskip("ray")
    if "ray[client]" in message and importlib.util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # what `--ray auto` finds first
    cache = tmp_path / "cache"
    code = main(["sweep", str(tiny_file), "--grid", "precision=fp32", "--quiet", "--cache-dir", str(cache), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not cache.exists()


def test_sigterm_ends_a_command_cleanly(tmp_path, tiny_file):
    import sys
    import threading

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "workbench", "sweep", str(tiny_file), "--grid",
                                "runs=200000", "--grid", "precision=fp32", "--no-drift", "--cache-dir",
                                str(tmp_path / "cache")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, env=env)
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(iter(lambda: process.stderr.read(1), "")), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while "latency" not in "".join(err) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for the progress bar: the work has started
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.2)  # let the reader thread take the last bytes
    text = "".join(err)
    assert process.returncode == 143 and "terminated" in text and "Traceback" not in text, text[-2000:]


# ---- 10. smaller faults -------------------------------------------------------------------------------------------

def test_a_layer_name_nested_1000_deep_is_split_without_recursion():
    from workbench.trtplan.parse import split_layer_name

    name = "PWN(" * 1000 + "conv1" + ")" * 1000
    split = split_layer_name(name)
    assert "conv1" in " ".join([*split.nodes, *split.internal])


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_policy_number_with_5000_digits_is_a_policy_error(tmp_path, suffix):
    from workbench.errors import PolicyError
    from workbench.scenarios.policy import PolicyTable

    path = tmp_path / f"p{suffix}"
    path.write_text('{"regions": [{"region": "eu", "allowed_precisions": ["int8"], "max_accuracy_drop": '
                    + "9" * 5000 + "}]}")
    with pytest.raises(PolicyError, match="max_accuracy_drop|number"):
        PolicyTable.load(path)


def test_a_28_mb_policy_is_refused_before_parsing(tmp_path, monkeypatch):
    import yaml

    from workbench.errors import PolicyError
    from workbench.scenarios.policy import PolicyTable

    path = tmp_path / "p.yaml"
    path.write_bytes(b"regions: []\n" + b"# padding\n" * 2_800_000)
    monkeypatch.setattr(yaml, "safe_load", lambda *a, **k: pytest.fail("a 28 MB policy was parsed"))
    with pytest.raises(PolicyError, match="MB"):
        PolicyTable.load(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_tune_refuses_a_max_drop_that_is_not_a_number_of_points(tmp_path, tiny_file, capsys, value):
    cache = tmp_path / "cache"
    code = main(["tune", str(tiny_file), "--max-drop", value, "--quiet", "--cache-dir", str(cache)])
    assert code == 2 and "--max-drop" in capsys.readouterr().err and not cache.exists()


@pytest.mark.filterwarnings("ignore::workbench.cache.CacheWarning")  # the full disk, as intended
def test_warm_into_a_full_disk_fails_loudly(tmp_path, monkeypatch, capsys):
    import errno

    def full(files, **kw):  # the cache's probe (a temporary file) succeeds, then the disk is full
        raise OutputError(f"Could not write {list(files)[0]} ({os.strerror(errno.ENOSPC)})")

    monkeypatch.setattr(output, "write_group", full)
    code = main(["warm", "--samples", "digits-cnn", "--backend", "onnxruntime", "--precision", "fp32",
                 "--batch", "1", "--runs", "1", "--quiet", "--cache", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code != 0 and "not written" in captured.out + captured.err


def test_a_model_with_only_rank_0_inputs_runs_or_fails_clearly(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from workbench.errors import WorkbenchError
    from workbench.session import Workbench

    graph = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["y"], name="square")], "scalar",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION)
    path = tmp_path / "scalar.onnx"
    path.write_bytes(proto.SerializeToString())
    try:
        result = Workbench(str(path), cache_dir=tmp_path / "cache", progress=False).run("fp32", runs=2, drift=False)
    except WorkbenchError as exc:
        assert "rank" in str(exc) or "scalar" in str(exc)
    else:
        assert result.headline_latency.median > 0


def test_a_file_size_limit_is_blamed_on_the_limit_not_the_model(tmp_path):
    import resource
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 10, 20 << 10))  # ulimit -f 20 (KiB)

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "workbench", "report", "digits-cnn", "--precision", "fp32",
                           "--runs", "2", "--no-drift", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                           "--json", str(tmp_path / "r.json")], preexec_fn=limit, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr  # 1: a failure row (report goes on)
    assert "INVALID_PROTOBUF" not in done.stderr and "re-export" not in done.stderr, done.stderr
    assert "file-size limit" in done.stderr or "File too large" in done.stderr, done.stderr


_RAY_DRIVER = """
import os, sys, time
from workbench.distributed import start_ray
ray = start_ray()
raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
deadline = time.monotonic() + 60
agents = []
while len(agents) < 2 and time.monotonic() < deadline:  # polling for the raylet's agents to start
    agents = [int(e) for e in os.listdir("/proc") if e.isdigit() and open(f"/proc/{e}/stat").read().rsplit(")", 1)[1].split()[1] == str(raylet)]
    time.sleep(0.5)
print("AGENTS", *agents, flush=True)
time.sleep(600)
"""


def test_kill_9_of_a_sweep_leaves_no_ray_agents_of_the_cluster_it_started(tmp_path):
    import sys

    pytest.importorskip("ray")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), RAY_USAGE_STATS_ENABLED="0")
    driver = subprocess.Popen([sys.executable, "-c", _RAY_DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)
    agents: list[int] = []
    try:
        for line in driver.stdout:
            if line.startswith("AGENTS"):
                agents = [int(p) for p in line.split()[1:]]
                break
        assert agents, "the local Ray started no agents"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()

        def alive(pid: int) -> bool:
            try:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
            except OSError:
                return False
        deadline = time.monotonic() + 10
        while any(map(alive, agents)) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the agents to go
        assert not any(map(alive, agents)), f"Ray agents {[p for p in agents if alive(p)]} outlived the driver"
    finally:
        if driver.poll() is None:
            driver.kill()
        for pid in agents:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
