"""Your own data: an .npz of arrays by input name (optionally `labels`), a folder of images (labels from sub-folder
names, a stated preprocessing), or any iterable of batches (e.g. a torch DataLoader). Validated against the model's
inputs before any work; split into calibration and evaluation sets with a fixed seed; provenance recorded."""
from __future__ import annotations

import hashlib
import io
import math
import os
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ._optional import require
from .cache import file_sha256
from .calibration import CalibrationSet, as_numpy
from .errors import CalibrationError, InputSpecError
from .limits import check_memory
from .models.inputs import batch_axes
from .models.spec import TensorSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_SEED = 0
DEFAULT_IMAGE_SIZE = 224  # for a model whose image height/width are dynamic
# Bounds on user data, checked from headers before anything is decoded or allocated (a 2 MB .npz can expand to
# gigabytes; an image header can claim 900 megapixels).
MAX_DATA_BYTES = 8 << 30  # decompressed arrays of one data source (also bounded by the memory available)
MAX_NPZ_MEMBERS = 1024
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 50_000_000  # per image file, before decoding (PIL's own bomb limit is ~179 megapixels)
MAX_IMAGE_SIDE = 8192  # of the resize target


@dataclass(frozen=True)
class ImagePreprocessing:
    """How image files become model input: RGB (or BGR) colour order, resized (bilinear) to `size` (height, width;
    None: the model's own size, else 224), scaled to [0, 1] by `scale`, then (x - mean) / std per channel, in the
    model's layout (NCHW or NHWC, read from its input shape)."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False
    scale: float = 255.0

    @classmethod
    def parse(cls, text: str) -> "ImagePreprocessing":
        """From `size=224x224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,order=bgr,scale=255` (any subset)."""
        values: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            try:
                if key == "size":
                    h, _, w = value.partition("x")
                    values["size"] = (int(h), int(w or h))
                elif key in ("mean", "std"):
                    values[key] = tuple(float(v) for v in value.split(":"))
                elif key == "order" and value.lower() in ("rgb", "bgr"):
                    values["bgr"] = value.lower() == "bgr"
                elif key == "scale":
                    values["scale"] = float(value)
                else:
                    raise ValueError(key)
            except ValueError:
                raise InputSpecError(f"Image preprocessing {part!r} is not understood: write e.g. size=224x224,"
                                     "mean=0.485:0.456:0.406,std=0.229:0.224:0.225,order=rgb,scale=255.") from None
        return cls(**values)

    def __post_init__(self) -> None:
        """Typed errors naming the argument, before any image is read (one mean/std value serves every channel)."""
        if self.size is not None and (len(self.size) != 2 or not all(
                isinstance(d, int) and 1 <= d <= MAX_IMAGE_SIDE for d in self.size)):
            raise InputSpecError(f"Image preprocessing size={self.size}: give HEIGHTxWIDTH, each 1-{MAX_IMAGE_SIDE} "
                                 "pixels (e.g. size=224x224).")
        for name, low in (("mean", None), ("std", 0.0)):
            values = tuple(getattr(self, name))
            if len(values) not in (1, 3) or not all(math.isfinite(v) and (low is None or v > low) for v in values):
                rule = "finite" if low is None else "finite and above 0 (it divides)"
                raise InputSpecError(f"Image preprocessing {name}={':'.join(f'{v:g}' for v in values)}: give one "
                                     f"value for every channel or three (R:G:B), each {rule}.")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise InputSpecError(f"Image preprocessing scale={self.scale:g}: give a finite number above 0 "
                                 "(pixels are divided by it; 255 for 8-bit images).")

    def describe(self) -> str:
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "the model's size"
        return (f"{'BGR' if self.bgr else 'RGB'}, bilinear resize to {size}, /{self.scale:g}, "
                f"mean {list(self.mean)}, std {list(self.std)}")


@dataclass
class UserData:
    """Model inputs brought by the user (name -> array, samples on axis 0), optional labels, and where they came
    from (`source`: kind "user", path, sha256, format, ...)."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: dict
    class_names: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(next(iter(self.arrays.values())))

    def subset(self, index: np.ndarray, part: str) -> "UserData":
        return UserData({k: v[index] for k, v in self.arrays.items()},
                        None if self.labels is None else self.labels[index], {**self.source, "part": part,
                                                                               "samples": int(len(index))},
                        self.class_names)

    def calibration_set(self, name: str | None = None) -> CalibrationSet:
        return CalibrationSet(name=name or self.source.get("name", "user data"), arrays=self.arrays,
                              description=f"{self.size} samples from {self.source.get('path', 'user data')}")


def load_data(data, inputs: list[TensorSpec], *, preprocessing: ImagePreprocessing | None = None,
              name: str | None = None, classes: int | None = None) -> UserData:
    """Load and validate user data: a path (.npz file or image folder), a mapping name -> array, or an iterable
    of batches (dicts, (inputs, labels) tuples, arrays or torch tensors). `classes`: the model's class count,
    which labels must stay below."""
    if isinstance(data, UserData):
        loaded = data
    elif isinstance(data, (str, Path)):
        path = Path(data).expanduser()
        if not path.exists():
            raise InputSpecError(f"Data {str(path)!r} does not exist: give an .npz file or a folder of images.")
        if path.is_dir():
            loaded = load_image_folder(path, inputs, preprocessing or ImagePreprocessing())
        elif not _is_regular(path):
            raise InputSpecError(f"Data {str(path)!r} is not a regular file (a FIFO, device or socket): give an "
                                 ".npz file or a folder of images.")
        elif path.suffix.lower() == ".npz":
            loaded = load_npz(path)
        else:
            raise InputSpecError(f"Data {str(path)!r} is neither an .npz file nor a folder of images: save the arrays "
                                 "with np.savez(path, **{input_name: array, 'labels': labels}).")
    elif isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items() if k != "labels"}
        labels = np.asarray(data["labels"]) if "labels" in data else None
        loaded = UserData(arrays, labels, {"kind": "user", "format": "arrays", "name": "arrays"})
    elif isinstance(data, Iterable):
        loaded = load_batches(data, inputs)
    else:
        raise InputSpecError(f"Cannot read data from a {type(data).__name__}: give a path (.npz or image folder), a "
                             "dict of arrays or an iterable of batches.")
    if name:
        loaded.source["name"] = name
    validate(loaded, inputs, classes=classes)
    loaded.source.setdefault("sha256", _arrays_hash(loaded.arrays))
    return loaded


def load_npz(path: Path) -> UserData:
    """Arrays by input name; an array named `labels` holds one integer label per sample. Never unpickles."""
    contents = read_npz(path)
    labels = contents.pop("labels", None)
    return UserData(contents, labels, {"kind": "user", "format": "npz", "path": str(path),
                                       "sha256": file_sha256(path), "name": path.name})


def read_npz(source: str | os.PathLike | bytes, *, label: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of an .npz (a path or its bytes), after checking every member's header: no object (pickled)
    arrays, at most MAX_NPZ_MEMBERS members, and decompressed sizes within MAX_DATA_BYTES and the memory available,
    all before anything is decompressed. InputSpecError otherwise."""
    where = label or (f"Data file {str(source)!r}" if not isinstance(source, bytes) else "The .npz")
    fix = "Save it with np.savez(path, **{input_name: array}) (object arrays are not read)"
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".npy")]
            if len(members) > MAX_NPZ_MEMBERS:
                raise InputSpecError(f"{where} holds {len(members)} arrays, more than {MAX_NPZ_MEMBERS}: {fix}.")
            total = 0
            for info in members:
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f"npy format version {version}")
                    shape, _, dtype = read_header(member, max_header_size=10_000)
                if dtype.hasobject:
                    raise InputSpecError(f"{where}: {info.filename[:-4]!r} is an object (pickled) array, which is "
                                         f"never read: {fix}.")
                total += math.prod(shape) * dtype.itemsize
            what = f"{where} (its arrays decompressed)"
            if total > MAX_DATA_BYTES:
                raise InputSpecError(f"{what} needs {_size(total)}, more than the {_size(MAX_DATA_BYTES)} a data set "
                                     "may take here: use fewer samples (a few hundred calibrate well).")
            check_memory(total, what, "use fewer samples (a few hundred calibrate well)")
        with np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except InputSpecError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise InputSpecError(f"{where} is not a readable .npz ({type(exc).__name__}). {fix}.") from exc


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes} bytes"


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def load_image_folder(path: Path, inputs: list[TensorSpec], preprocessing: ImagePreprocessing) -> UserData:
    """Images under `path`; with sub-folders, each sub-folder name is a class (sorted names -> label 0, 1, ...)."""
    Image = require("PIL.Image", pip="pillow", purpose="folders of images as data")
    UnidentifiedImageError = Image.UnidentifiedImageError

    if len(inputs) != 1:
        raise InputSpecError(f"A folder of images feeds a model with one input; this one has "
                             f"{[s.name for s in inputs]}: save the arrays as an .npz by input name instead.")
    spec = inputs[0]
    layout = _image_layout(spec)
    channels = spec.shape[layout[0]]
    size = preprocessing.size or tuple(d if isinstance(d, int) else DEFAULT_IMAGE_SIZE
                                       for d in (spec.shape[layout[1]], spec.shape[layout[2]]))
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [(f, None) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    for label, cls in enumerate(classes):
        files += [(f, label) for f in sorted((path / cls).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InputSpecError(f"Image folder {str(path)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                             "directly or in class sub-folders.")
    if classes and any(label is None for _, label in files):
        raise InputSpecError(f"Image folder {str(path)!r} mixes images at its top level with class sub-folders "
                             f"{classes}: move every image into a class folder (or remove the sub-folders).")
    if len(files) > MAX_IMAGES:
        raise InputSpecError(f"Image folder {str(path)!r} holds {len(files):,} images, more than {MAX_IMAGES:,}: "
                             "use a smaller folder (a few hundred images calibrate well).")
    special = next((f for f, _ in files if not _is_regular(f)), None)
    if special is not None:
        raise InputSpecError(f"{str(special)!r} in the image folder is not a regular file (a FIFO, device or "
                             "socket): remove it.")
    check_memory(len(files) * size[0] * size[1] * channels * 4, f"{len(files)} images at {size[0]}x{size[1]}",
                 "use fewer images or a smaller size=")
    mean = np.asarray(preprocessing.mean[:channels], np.float32).reshape(1, 1, -1)
    std = np.asarray(preprocessing.std[:channels], np.float32).reshape(1, 1, -1)
    images = []
    digest = hashlib.sha256()
    for file, _ in files:
        try:
            with Image.open(file) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:  # known from the header, before decoding
                    raise InputSpecError(f"Image {str(file)!r} has {image.width * image.height:,} pixels "
                                         f"({image.width}x{image.height}), more than {MAX_IMAGE_PIXELS:,}: "
                                         "downscale it or remove it.")
                image = image.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]),
                                                                               Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32).reshape(size[0], size[1], -1)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InputSpecError(f"Image {str(file)!r} cannot be read ({type(exc).__name__}): remove or replace "
                                 "it.") from exc
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
        if preprocessing.bgr and channels == 3:
            pixels = pixels[..., ::-1]
        pixels = (pixels / preprocessing.scale - mean) / std
        images.append(pixels if layout[0] == len(spec.shape) - 1 else np.moveaxis(pixels, -1, 0))
    array = np.stack(images).astype(spec.dtype)
    labels = np.asarray([label for _, label in files], np.int64) if classes else None
    stated = replace(preprocessing, size=tuple(size), mean=preprocessing.mean[:channels],
                     std=preprocessing.std[:channels])
    return UserData({spec.name: array}, labels, {
        "kind": "user", "format": "images", "path": str(path), "sha256": digest.hexdigest(), "name": path.name,
        "preprocessing": stated.describe(), "classes": classes}, classes)


def load_batches(batches: Iterable, inputs: list[TensorSpec]) -> UserData:
    """Any iterable of batches: dicts name -> array (optionally `labels`), (inputs[, labels]) tuples, arrays."""
    names = [s.name for s in inputs]
    collected: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels: list[np.ndarray] = []
    for batch in batches:
        if isinstance(batch, Mapping):
            missing = [n for n in names if n not in batch]
            if missing:
                raise InputSpecError(f"A batch has keys {sorted(batch)}, the model's inputs are {names}: name "
                                     "each batch entry after a model input.")
            parts = [batch[n] for n in names]
            label = batch.get("labels")
        elif isinstance(batch, (tuple, list)):
            parts = list(batch[:len(names)])
            label = batch[len(names)] if len(batch) > len(names) else None
        else:
            parts, label = [batch], None
        for n, value in zip(names, parts):
            collected[n].append(as_numpy(value))
        if label is not None:
            labels.append(as_numpy(label).reshape(-1))
    if not collected[names[0]]:
        raise InputSpecError("The data iterable gave no batches: give at least one batch of samples.")
    arrays = {n: np.concatenate(v) for n, v in collected.items()}
    label_array = np.concatenate(labels) if labels and len(labels) == len(collected[names[0]]) else None
    return UserData(arrays, label_array, {"kind": "user", "format": "iterable", "name": "batches"})


def validate(data: UserData, inputs: list[TensorSpec], *, classes: int | None = None) -> None:
    """Names, dtypes, shapes, NaN/Inf, empty and labels (within `classes`, when known): an error naming the input
    and what was expected."""
    where = data.source.get("path", data.source.get("name", "the data"))
    if not data.arrays:
        raise InputSpecError(f"{where} holds no input arrays; the model expects {[s.name for s in inputs]}.")
    axes = batch_axes(inputs)
    shared = {spec.name for spec in inputs if axes[spec.name] is None and spec.name in data.arrays
              and data.arrays[spec.name].ndim == len(spec.shape)}  # one value for every sample (e.g. a rate)
    sizes = [len(arr) for name, arr in data.arrays.items() if name not in shared and arr.ndim]
    empty = [name for name, arr in data.arrays.items() if name not in shared and (arr.ndim == 0 or len(arr) == 0)]
    if empty or not sizes:
        raise InputSpecError(f"{where}: input(s) {empty or sorted(data.arrays)} hold no samples: give arrays with "
                             "samples on axis 0.")
    for name in shared:
        data.arrays[name] = np.broadcast_to(data.arrays[name], (sizes[0], *data.arrays[name].shape))
    for spec in inputs:  # string inputs: numpy's fixed-width strings (what .npz stores) as the engine's objects
        if spec.dtype == "object" and spec.name in data.arrays and data.arrays[spec.name].dtype.kind in "US":
            data.arrays[spec.name] = data.arrays[spec.name].astype(str).astype(object)
    try:
        CalibrationSet(name=str(data.source.get("name", where)), arrays=data.arrays).validate(inputs)
    except CalibrationError as exc:
        raise InputSpecError(str(exc).replace("Calibration set", "Data")) from None
    if data.labels is not None:
        if data.labels.ndim < 1 or len(data.labels) != data.size or data.labels.dtype.kind not in "iubU":
            raise InputSpecError(f"{where}: 'labels' must be one integer per sample ({data.size}) (or a class name; "
                                 f"per pixel [samples, height, width] for segmentation); got {data.labels.dtype}"
                                 f"{list(data.labels.shape)}.")
        if classes is not None and data.labels.dtype.kind in "iub" and data.labels.size:
            low, high = int(data.labels.min()), int(data.labels.max())
            if low < 0 or high >= classes:
                raise InputSpecError(f"{where}: labels run {low}-{high}, but the model has {classes} classes (labels "
                                     f"0-{classes - 1}): give the label indices the model's outputs use.")


def split(data: UserData, *, eval_fraction: float = 0.5, seed: int = SPLIT_SEED) -> tuple[UserData, UserData]:
    """(calibration, evaluation) halves of a shuffled (fixed seed) copy; a single sample serves as both."""
    if data.size == 1:
        return data.subset(np.arange(1), "calibration and evaluation (1 sample)"), data.subset(np.arange(1), "eval")
    order = np.random.default_rng(seed).permutation(data.size)
    n_eval = min(max(1, round(data.size * eval_fraction)), data.size - 1)
    return (data.subset(np.sort(order[n_eval:]), "calibration"), data.subset(np.sort(order[:n_eval]), "evaluation"))


def _image_layout(spec: TensorSpec) -> tuple[int, int, int]:
    """(channel, height, width) axes of a rank-4 image input."""
    if len(spec.shape) == 4 and spec.shape[1] in (1, 3):
        return 1, 2, 3
    if len(spec.shape) == 4 and spec.shape[3] in (1, 3):
        return 3, 1, 2
    raise InputSpecError(f"Input {spec.name!r} {list(spec.shape)} is not an image input (rank 4 with 1 or 3 "
                         "channels, NCHW or NHWC): give the data as an .npz instead of a folder of images.")


def _arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    return CalibrationSet(name="hash", arrays=dict(arrays)).content_hash

