"""Careless and hostile input: each case ends in a result or one clear typed error (issue 18, items 3, 5, 7)."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import make_tiny_cnn
from workbench.calibration import CalibrationSet
from workbench.errors import CalibrationError, InputSpecError, ModelLoadError, PlanImportError, PolicyError
from workbench.limits import MAX_NESTING, capped_threads, machine_cores, too_deep
from workbench.models import load_model
from workbench.models.spec import Model
from workbench.scenarios import BundleError, default_policies, export_bundle, verify_bundle
from workbench.scenarios.policy import PolicyTable
from workbench.session import Workbench
from workbench.trtplan import load_plan
from workbench.trtplan.parse import parse_profile, parse_profile_metadata


def _chain(names: list[str], dims=("batch", 4)) -> onnx.ModelProto:
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Relu", [prev], [f"{name}:{i}"], name=name))
        prev = f"{name}:{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, list(dims))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tiny_session(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    wb = Workbench(Model.from_proto(make_tiny_cnn(), name="tiny", source="test"), cache_dir=cache, progress=False)
    return wb, wb.run("fp16", runs=2, drift=False), cache


# ---- 3. bundles ----------------------------------------------------------------------------------------------------


def test_bundle_refuses_a_non_empty_folder_and_replaces_a_bundle_whole(tmp_path, tiny_session):
    wb, result, _ = tiny_session
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not empty"):
        export_bundle(wb, result, target)
    with pytest.raises(BundleError, match="not a bundle"):
        export_bundle(wb, result, target, replace=True)
    assert (target / "notes.txt").read_text() == "mine"

    out = export_bundle(wb, result, tmp_path / "b2")
    stale = out / "model_repository" / "tiny_fp16" / "2" / "model.onnx"
    stale.parent.mkdir()
    stale.write_bytes(b"old model")
    assert verify_bundle(out) == ["model_repository/tiny_fp16/2/model.onnx is not listed in metadata.json (Triton "
                                  "may serve it, e.g. a stale model version)"]
    export_bundle(wb, result, out, replace=True)
    assert not stale.exists() and verify_bundle(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b2", "bundle"]  # no temporary folders left


def test_bundle_into_a_file_path_is_a_clear_error(tmp_path, tiny_session):
    wb, result, _ = tiny_session
    path = tmp_path / "a-file"
    path.write_text("x")
    with pytest.raises(BundleError, match="is a file"):
        export_bundle(wb, result, path)
    with pytest.raises(BundleError, match="Cannot create"):
        export_bundle(wb, result, path / "bundle")
    assert path.read_text() == "x"


def test_a_swapped_cached_onnx_is_never_exported(tmp_path, tiny_session):
    _, result, cache = tiny_session
    artefact = cache / f"{result.cache_key}.onnx"
    assert artefact.is_file()
    artefact.write_bytes(Model.from_proto(make_tiny_cnn(seed=7), name="other", source="t").serialized())
    fresh = Workbench(Model.from_proto(make_tiny_cnn(), name="tiny", source="test"), cache_dir=cache, progress=False)
    cached = fresh.run("fp16", runs=2, drift=False)
    assert cached.variant_sha256 == result.variant_sha256
    try:
        out = export_bundle(fresh, cached, tmp_path / "bundle")
    except BundleError as exc:
        assert "not the one" in str(exc)
    else:  # the cache noticed the swap and rebuilt the variant: what is exported is what was measured
        meta = json.loads((out / "metadata.json").read_text())
        assert meta["model"]["sha256"] == result.variant_sha256


# ---- 7. tracebacks from valid or nearly valid input ----------------------------------------------------------------


def test_fusion_view_escapes_every_name(tmp_path):
    pytest.importorskip("graphviz")
    from workbench import views

    names = ["<b>", "back\\", 'q"uote', "<i>x</i>", "{a}", "a;b", "port:x"]
    wb = Workbench(_chain(names), cache_dir=tmp_path, progress=False)
    result = wb.run("fp32", runs=1, drift=False)
    page = views.fusion_graph(wb.variant_model(result), result.engine)._repr_html_()
    assert "&lt;b&gt;" in page and "back\\" in page and "port:x" in page


def test_a_zero_size_dim_is_a_clear_error(tmp_path):
    # a declared 0 is a dynamic axis (exporters write it so); when no default size runs, the error says what to give
    with pytest.raises(InputSpecError, match="give the input shapes, e.g. --input NAME="):
        Workbench(_chain(["r"], dims=("batch", 0, 4)), cache_dir=tmp_path, progress=False)


def test_policy_files_with_bad_encoding_or_nesting(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("regions:\n  - region: Köln\n".encode("latin-1"))
    with pytest.raises(PolicyError, match="not UTF-8"):
        PolicyTable.load(bad)
    for suffix in (".yaml", ".json"):
        deep = tmp_path / f"deep{suffix}"
        deep.write_text("[" * 50_000 + "]" * 50_000)
        with pytest.raises(PolicyError, match="nests more than"):
            PolicyTable.load(deep)
        shallow_but_deep = tmp_path / f"deep2{suffix}"
        shallow_but_deep.write_text('{"regions": ' + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "}")
        with pytest.raises(PolicyError, match="nests more than"):
            PolicyTable.load(shallow_but_deep)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PolicyError, match="not a regular file"):
        PolicyTable.load(fifo)


def test_policy_save_creates_a_missing_folder(tmp_path):
    path = default_policies().save(tmp_path / "new" / "folder" / "policies.yaml")
    assert PolicyTable.load(path).regions == default_policies().regions


_GRAPH = {"Bindings": ["x"], "Layers": [{"Name": "conv1", "LayerType": "Convolution",
                                         "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
                                         "Outputs": [{"Name": "y", "Dimensions": [1, 8]}]}]}


def _graph(**fields):
    data = json.loads(json.dumps(_GRAPH))
    data["Layers"][0].update(fields)
    return data


@pytest.mark.parametrize("data, match", [
    (_graph(Inputs="x"), "'Inputs' is str"),
    (_graph(Inputs=["x"]), "Inputs entry 0 is str"),
    (_graph(Metadata=5), "'Metadata' is int"),
    (_graph(Outputs=[{"Name": "y", "Dimensions": 8}]), "'Dimensions' is int"),
    ({"Bindings": "x", "Layers": []}, "'Bindings' is str"),
    ({"I/O Tensors": ["x"], "Layers": []}, "'I/O Tensors' entry 0 is str"),
    ('{"Layers": ' + "[" * 10_000 + "]" * 10_000 + "}", "nests more than"),
])
def test_plan_graphs_with_wrong_types_or_nesting(data, match):
    with pytest.raises(PlanImportError, match=match):
        load_plan(data)


@pytest.mark.parametrize("profile, match", [
    ([{"count": "10"}, {"name": "conv1", "averageMs": 1.0}], "'count' is str"),
    ([{"name": "conv1", "averageMs": "1.0"}], "'averageMs' is str"),
    ([{"name": "conv1", "averageMs": float("nan")}], "finite and non-negative"),
    ('[{"name": "conv1", "averageMs": NaN}]', "finite and non-negative"),
    ([{"name": "conv1", "averageMs": -0.5}], "finite and non-negative"),
    ([{"name": "conv1", "averageMs": 1.0, "medianMs": float("inf")}], "finite and non-negative"),
])
def test_plan_profiles_with_wrong_types_or_bad_times(profile, match):
    with pytest.raises(PlanImportError, match=match):
        parse_profile(profile)


def test_plan_profile_metadata_with_text_latency():
    with pytest.raises(PlanImportError, match=r"Latency\[0\] is str"):
        parse_profile_metadata({"performance_summary": {"Latency": ["fast", 1, 1, 1, 1]}})
    with pytest.raises(PlanImportError, match="inference_options is str"):
        parse_profile_metadata({"performance_summary": {"Latency": [1, 1, 1, 1, 1]}, "inference_options": "b=8"})


def test_calibration_from_a_list_or_ragged_data():
    with pytest.raises(CalibrationError, match="bare list needs input_name"):
        CalibrationSet.from_arrays("l", [np.zeros((2, 1, 8, 8), np.float32)])
    assert CalibrationSet.from_arrays("l", [[1.0, 2.0], [3.0, 4.0]], input_name="x").arrays["x"].shape == (2, 2)
    with pytest.raises(CalibrationError, match="rectangular"):
        CalibrationSet.from_arrays("r", {"x": [[1.0], [2.0, 3.0]]})
    with pytest.raises(CalibrationError, match="not an array of samples"):
        CalibrationSet.from_arrays("s", {"x": np.float32(1.0)})


# ---- 5. bounds -------------------------------------------------------------------------------------------------------


def test_threads_are_capped_at_the_cores_with_a_warning(tmp_path):
    with pytest.warns(UserWarning, match="cores"):
        assert capped_threads(100_000) == machine_cores()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert capped_threads(1) == 1 and capped_threads(None) is None
    with pytest.raises(InputSpecError, match="positive"):
        capped_threads(0)
    with pytest.warns(UserWarning, match="cores"):
        wb = Workbench(Model.from_proto(make_tiny_cnn(), name="tiny", source="t"), cache_dir=tmp_path,
                       threads=100_000, progress=False)
    assert wb.threads == machine_cores()


def test_a_batch_that_cannot_fit_is_refused_before_allocating(tmp_path):
    wb = Workbench(Model.from_proto(make_tiny_cnn(), name="tiny", source="t"), cache_dir=tmp_path, progress=False)
    with pytest.raises(InputSpecError, match="batch 1000000000000 needs .*TiB"):
        wb.run("fp32", batch=10**12, runs=1)
    assert not any(tmp_path.iterdir())  # nothing measured, nothing cached


def test_declared_dims_that_cannot_fit_are_refused(tmp_path):
    with pytest.raises(InputSpecError, match="synthetic samples .* needs"):
        Workbench(_chain(["r"], dims=("batch", 1_000_000, 1_000_000)), cache_dir=tmp_path, progress=False)


def test_special_files_are_refused_as_models(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)  # reading it would block forever
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(fifo)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model("/dev/zero")  # reading it would never end


def test_nesting_check_is_iterative_and_handles_shared_containers():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert too_deep(deep) and not too_deep({"a": [[1]] * 1000})
    shared = [1]
    assert not too_deep([shared] * 1000)


def test_tune_refuses_a_non_empty_bundle_folder_before_searching(tmp_path, capsys):
    from workbench.cli import main

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert main(["tune", "digits-cnn", "--bundle", str(folder), "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "not empty" in capsys.readouterr().err and not (tmp_path / "cache").exists()
