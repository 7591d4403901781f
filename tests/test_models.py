"""workbench.models.load_model: every source type, and a clear ModelLoadError for every kind of bad input."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from workbench.errors import ModelLoadError
from workbench.models import load_model

torch = pytest.importorskip("torch")


def _ort_run(model, feeds):
    session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.fixture
def onnx_file(tmp_path, tiny_cnn):
    path = tmp_path / "tiny.onnx"
    onnx.save_model(tiny_cnn.proto, path)
    return path


def test_onnx_path_bytes_and_proto_load_the_same_graph(onnx_file, tiny_cnn, tiny_inputs):
    by_str = load_model(str(onnx_file))
    by_path = load_model(onnx_file, name="custom")
    by_bytes = load_model(onnx_file.read_bytes())
    by_proto = load_model(tiny_cnn.proto)
    assert by_str.name == "tiny" and by_path.name == "custom"
    assert by_str.source == str(onnx_file)
    assert by_str.content_hash == by_path.content_hash == by_bytes.content_hash == by_proto.content_hash
    assert [s.shape for s in by_str.inputs] == [("batch", 1, 8, 8)]
    assert by_str.outputs[0].shape == ("batch", 4)
    np.testing.assert_allclose(_ort_run(by_bytes, tiny_inputs)[0], _ort_run(tiny_cnn, tiny_inputs)[0], rtol=1e-6)


def test_shape_inference_fills_intermediate_shapes(tiny_cnn):
    bare = onnx.ModelProto.FromString(tiny_cnn.serialized())
    del bare.graph.value_info[:]
    model = load_model(bare)
    shapes = {v.name: v for v in model.proto.graph.value_info}
    assert "c1" in shapes and "logits" in shapes


def test_unnamed_and_duplicate_nodes_get_unique_names(tiny_cnn):
    proto = onnx.ModelProto.FromString(tiny_cnn.serialized())
    proto.graph.node[0].name = ""
    proto.graph.node[1].name = ""
    proto.graph.node[3].name = "relu1"  # duplicates node 2
    model = load_model(proto)
    names = model.node_names
    assert all(names) and len(set(names)) == len(names)
    assert proto.graph.node[0].name == ""  # the caller's proto is left alone


def test_external_data_next_to_the_file_loads(tmp_path, tiny_cnn, tiny_inputs):
    path = tmp_path / "ext.onnx"
    # save_model(save_as_external_data=True) rewrites the proto it is given: save a copy
    onnx.save_model(onnx.ModelProto.FromString(tiny_cnn.serialized()), path, save_as_external_data=True,
                    location="ext.weights", size_threshold=0)
    assert (tmp_path / "ext.weights").is_file()
    model = load_model(path)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.proto.graph.initializer)
    np.testing.assert_allclose(_ort_run(model, tiny_inputs)[0], _ort_run(tiny_cnn, tiny_inputs)[0], rtol=1e-6)


def test_missing_external_data_file_is_named(tmp_path, tiny_cnn):
    path = tmp_path / "ext.onnx"
    # save_model(save_as_external_data=True) rewrites the proto it is given: save a copy
    onnx.save_model(onnx.ModelProto.FromString(tiny_cnn.serialized()), path, save_as_external_data=True,
                    location="ext.weights", size_threshold=0)
    (tmp_path / "ext.weights").unlink()
    with pytest.raises(ModelLoadError, match=r"ext\.weights.*missing"):
        load_model(path)


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model(missing)
    assert str(missing) in str(info.value)


def test_text_file_is_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a README, not a model\n" * 20)
    with pytest.raises(ModelLoadError, match="text file") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_onnx(tmp_path, tiny_cnn, keep):
    data = tiny_cnn.serialized()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError, match="truncated") as info:
        load_model(path)
    assert "cut.onnx" in str(info.value)


def test_unsupported_source_type():
    with pytest.raises(ModelLoadError, match="Cannot load a model from a int"):
        load_model(42)


def test_invalid_graph_is_reported(tiny_cnn):
    proto = onnx.ModelProto.FromString(tiny_cnn.serialized())
    proto.graph.node[0].input[1] = "no_such_weight"
    with pytest.raises(ModelLoadError, match="not valid"):
        load_model(proto)


# ---- PyTorch sources ---------------------------------------------------------------------------------------------
class _ConvBn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                        torch.nn.Flatten(), torch.nn.Linear(4 * 64, 3))
        with torch.no_grad():  # non-trivial running stats, so a dropped BN would change the outputs
            self.body[1].running_mean.uniform_(-1, 1)
            self.body[1].running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.body(x)


def test_torch_module_export_keeps_batchnorm_and_dynamic_batch():
    torch.manual_seed(0)
    net = _ConvBn()
    model = load_model(net, example_input=torch.zeros(1, 1, 8, 8), name="convbn")
    ops = [n.op_type for n in model.proto.graph.node]
    assert "BatchNormalization" in ops and "Conv" in ops
    assert model.inputs[0].name == "input" and model.inputs[0].shape[0] == "batch"
    assert model.outputs[0].shape[0] == "batch"
    assert all(model.node_names) and len(set(model.node_names)) == len(model.node_names)
    assert max(o.version for o in model.proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort_run(model, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_torch_module_that_cannot_export():
    class Svd(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]

    with pytest.raises(ModelLoadError, match="Svd.*linalg_svd"):
        load_model(Svd(), example_input=torch.zeros(1, 1, 8, 8))


def test_torch_module_errors_on_bad_example_input_or_opset():
    with pytest.raises(ModelLoadError, match="example_input"):
        load_model(_ConvBn())
    with pytest.raises(ModelLoadError, match="failed on example_input"):
        load_model(_ConvBn(), example_input=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ModelLoadError, match="opset >= 17"):
        load_model(_ConvBn(), example_input=torch.zeros(1, 1, 8, 8), opset=13)


@pytest.mark.slow
def test_torchvision_resnet18_random_weights():
    model = load_model("torchvision:resnet18")
    assert model.name == "resnet18" and model.source == "torchvision:resnet18"
    assert model.inputs[0].shape == ("batch", 3, 224, 224)
    assert model.outputs[0].shape == ("batch", 1000)
    assert sum(n.op_type == "BatchNormalization" for n in model.proto.graph.node) == 20


@pytest.mark.slow
def test_torchvision_weights_from_a_state_dict(tmp_path):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(123)
    net = tv.models.squeezenet1_1()
    path = tmp_path / "sq.pt"
    torch.save(net.state_dict(), path)
    model = load_model("torchvision:squeezenet1_1", weights=path)
    first_conv = next(n for n in model.proto.graph.node if n.op_type == "Conv").input[1]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.proto.graph.initializer}
    np.testing.assert_array_equal(weights[first_conv], net.features[0].weight.detach().numpy())
    random = load_model("torchvision:squeezenet1_1")
    assert random.content_hash != model.content_hash


def test_torchvision_wrong_state_dict(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(_ConvBn().state_dict(), path)
    with pytest.raises(ModelLoadError, match="do not fit torchvision squeezenet1_1"):
        load_model("torchvision:squeezenet1_1", weights=path)


def test_torchvision_pretrained_not_in_cache_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="not in the local torch hub cache.*nothing is downloaded"):
        load_model("torchvision:squeezenet1_1", weights="DEFAULT")
    assert not any(tmp_path.rglob("*.pth"))


def test_torchvision_unknown_architecture():
    with pytest.raises(ModelLoadError, match="Unknown torchvision architecture 'resnet19'.*resnet18"):
        load_model("torchvision:resnet19")


def test_sample_name_loads_the_sample_model():
    import workbench

    model = workbench.load_model("digits-cnn")  # sample names resolve above the model sources
    assert model.name == "digits-cnn"
    assert model.inputs[0].shape == ("batch", 1, 8, 8)
