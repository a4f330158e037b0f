"""Image sources: in-memory images (the embedded digits), an image folder, TFDS; and their batches.

Every image source turns record ids into uint8 `[b, S, S, C]` batches (S = data.image_size, C =
len(data.mean)): train batches are random-resized-cropped (and flipped with data.hflip) with
randomness keyed on (seed, epoch, id), eval batches center-cropped (data.crop_pct). In-memory images
(`ImageArraySource`, float in [0, 1] or uint8) are resampled as floats, vectorized over the batch, at
exact float boxes; files (`ImageFolderSource`, `TfdsSource`) are decoded and resampled one by one at
whole-pixel boxes (`codecs`), and a file that fails to decode is masked out. Normalization runs on
device (`tome_jax.data.normalize`).

Registered names: "digits" (sklearn's 8x8 digits, no download), "imagefolder"
(`data_dir/<split>/<class>/*.jpg`), "tfds" (used for every name not registered: a TFDS dataset
prepared in ArrayRecord format).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import warnings

import numpy as np
from PIL import Image

from tome_jax.data import codecs, transforms
from tome_jax.data.config import DataConfig
from tome_jax.data.registry import Batch, DatasetNotFoundError, register_source

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


# ----------------------------------------------------------------------------- crops shared by the readers


def _crops(cfg: DataConfig, ids: np.ndarray, epoch: np.ndarray | None, seed: int):
    """(boxes_fn(height [b], width [b]) -> float boxes [b, 4], flip bool [b] or None) for one batch:
    random-resized crops and flips from (seed, epoch, id) for train (epoch given), center crops for eval."""
    if epoch is None:
        return functools.partial(transforms.center_crop_boxes, crop_pct=cfg.crop_pct), None
    u = transforms.uniforms(seed, epoch, ids, 5)
    boxes_fn = functools.partial(
        transforms.random_resized_crop_boxes, u[:, :4], scale=cfg.crop_scale, ratio=cfg.crop_ratio
    )
    return boxes_fn, (u[:, 4] < 0.5 if cfg.hflip else None)


def _check_image_channels(cfg: DataConfig) -> None:
    if cfg.channels not in (1, 3):
        raise ValueError(
            f"image sources have 1 (gray) or 3 (RGB) channels, i.e. len(data.mean) in (1, 3); got "
            f"mean={cfg.mean}. For other arrays use an ArraySource (batched as stored)."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ImageArraySource:
    """In-memory images [N, H, W, C], C in {1, 3}, float32 in [0, 1] or uint8; labels: int [N].

    Batches are resampled as floats at exact (possibly zoom-out) boxes, then rounded to uint8; gray
    images are repeated to 3 channels when len(data.mean) is 3."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray) or images.dtype not in (np.uint8, np.float32):
            raise TypeError(
                "ImageArraySource.images must be a uint8 or float32 NumPy array, got "
                f"{getattr(images, 'dtype', type(images))}; convert it with np.asarray(x, np.float32)."
            )
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) != len(self.labels):
            raise ValueError(
                f"ImageArraySource needs images [N, H, W, 1 or 3] and labels [N]; got shapes {images.shape} "
                f"and {np.shape(self.labels)}. Use an ArraySource for other arrays (batched as stored)."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def batch_reader(self, cfg: DataConfig) -> InMemoryImages:
        return InMemoryImages(self, cfg)


class InMemoryImages:
    """ImageArraySource ids -> uint8 [b, S, S, C]: vectorized float crop/resize (zoom-out allowed)."""

    def __init__(self, source: ImageArraySource, cfg: DataConfig):
        _check_image_channels(cfg)
        if source.images.shape[-1] == 3 and cfg.channels == 1:
            raise ValueError(
                f"in-memory RGB images {source.images.shape} with len(data.mean)=1: set data.mean/std to "
                "one value per channel (3)."
            )
        self.source, self.cfg = source, cfg

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        cfg, examples = self.cfg, self.source.images[ids]
        boxes_fn, flip = _crops(cfg, ids, epoch, seed)
        height = np.full(len(ids), examples.shape[1])
        width = np.full(len(ids), examples.shape[2])
        resized = transforms.crop_resize(examples, boxes_fn(height, width), cfg.image_size)
        images = transforms.to_uint8(resized, 1.0 if examples.dtype == np.uint8 else 255.0)
        if images.shape[-1] != cfg.channels:  # Gray -> RGB.
            images = np.repeat(images, cfg.channels, axis=-1)
        if flip is not None:
            images = transforms.hflip(images, flip)
        labels = np.asarray(self.source.labels[ids], np.int32)
        return {"image": images, "label": labels, "mask": np.ones(len(ids), bool)}


class DecodedImages:
    """File-backed source ids -> uint8 [b, S, S, C]: decode and resample one by one at whole-pixel
    boxes; records that fail to decode are zeros with mask False.

    The source gives `load(ids) -> (encoded files or uint8 [H, W, C] arrays, None where unreadable;
    labels [b])` and `record_name(i)` for log messages."""

    def __init__(self, source, cfg: DataConfig):
        _check_image_channels(cfg)
        if cfg.crop_scale[1] > 1:
            raise ValueError(
                f"data.crop_scale={cfg.crop_scale}: an area fraction above 1 (zoom out) needs in-memory images "
                f"(e.g. digits); {type(source).__name__} decodes files, so keep crop_scale <= 1."
            )
        self.source, self.cfg = source, cfg
        self.backend = codecs.make_backend(cfg.image_backend, cfg.channels, cfg.interpolation)

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        cfg = self.cfg
        boxes_fn, flip = _crops(cfg, ids, epoch, seed)
        examples, labels = self.source.load(ids)
        handles = [codecs.decode_or_none(self.backend, e, self.source.record_name(int(i)))
                   for e, i in zip(examples, ids)]
        decoded = np.asarray([h is not None for h in handles], bool)
        sizes = np.asarray([self.backend.size(h) if h is not None else (1, 1) for h in handles]).reshape(-1, 2)
        boxes = transforms.snap_boxes(boxes_fn(sizes[:, 0], sizes[:, 1]), sizes[:, 0], sizes[:, 1])
        size = cfg.image_size
        images = np.zeros((len(ids), size, size, cfg.channels), np.uint8)
        flip = np.zeros(len(ids), bool) if flip is None else flip
        for k, handle in enumerate(handles):
            if handle is not None:
                images[k] = self.backend.crop_resize(handle, boxes[k], size, bool(flip[k]))
        return {"image": images, "label": np.asarray(labels, np.int32), "mask": decoded}


# ----------------------------------------------------------------------------- sources


def load_digits(split: str) -> ArraySource:
    """sklearn's 8x8 handwritten digits (1797 images, 10 classes; shipped inside scikit-learn).

    Deterministic stratified split: per class, a permutation drawn with seed `DIGITS_SPLIT_SEED`
    puts round(20%) of the class in "test" and the rest in "train" (1438 train / 359 test).
    Returns images float32 [N, 8, 8, 1] in [0, 1] (ink density / 16); the pipeline resizes them.
    """
    if split not in DIGITS_SPLITS:
        raise ValueError(f"digits has splits {DIGITS_SPLITS}, got {split!r}.")
    from sklearn import datasets  # pylint: disable=g-import-not-at-top  # 1 s import, only when used.

    digits = datasets.load_digits()
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    is_test = np.zeros(len(labels), bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        is_test[members[: round(DIGITS_TEST_FRACTION * len(members))]] = True
    keep = is_test if split == "test" else ~is_test
    images = (digits.images[keep] / 16.0).astype(np.float32)[..., None]
    return ImageArraySource(images=images, labels=labels[keep], num_classes=10)


class ImageFolderSource:
    """`root/<class_name>/<image file>`; classes sorted alphabetically -> label 0, 1, ...

    Unreadable files are handled in two places. At index time (`verify=True`, the default) each file
    is opened and `PIL.Image.verify()`-ed (reads the file, no full decode); failures are skipped,
    counted in `num_skipped` / `skipped` and reported with one warning. `load` returns the encoded
    bytes; a file that still fails to decode (e.g. a truncated JPEG passes verify, or `verify=False`
    for a huge folder) is logged by the pipeline with its path and masked out instead of crashing.
    """

    def __init__(self, root: str, *, verify: bool = True):
        if not os.path.isdir(root):
            raise DatasetNotFoundError(
                f"Image folder {root!r} does not exist. Expected layout: <data_dir>/<split>/<class_name>/"
                "<image>.jpg (set data.data_dir and data.split_train/split_eval), or use the ':runlocal' "
                "config variant, which trains on the embedded digits data."
            )
        self.root = root
        self.classes = tuple(
            sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        )
        paths, labels, skipped = [], [], []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(root, name)
            for file in sorted(os.listdir(class_dir)):
                path = os.path.join(class_dir, file)
                if not file.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                if verify and not _is_readable(path):
                    skipped.append(path)
                    continue
                paths.append(path)
                labels.append(label)
        if not paths:
            raise DatasetNotFoundError(f"No readable images under {root!r} (classes found: {self.classes}).")
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, np.int32)
        self.skipped = tuple(skipped)
        self.num_classes = len(self.classes)
        if skipped:
            warnings.warn(
                f"ImageFolderSource({root!r}): skipped {len(skipped)} unreadable image file(s), "
                f"e.g. {skipped[:3]}.",
                stacklevel=2,
            )

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.paths)

    def batch_reader(self, cfg: DataConfig) -> DecodedImages:
        return DecodedImages(self, cfg)

    def load(self, ids: np.ndarray) -> tuple[list[bytes | None], np.ndarray]:
        """ids: int [b] -> (b encoded files, None where reading failed; labels int32 [b])."""
        return [self._read(self.paths[i]) for i in ids], self.labels[ids]

    def record_name(self, i: int) -> str:
        return self.paths[i]

    @staticmethod
    def _read(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            logging.warning("Could not read %s (%s); masking it out of its batch.", path, e)
            return None


def _is_readable(path: str) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # pylint: disable=broad-except  # PIL raises many types for corrupt files.
        return False


class TfdsSource:
    """A TFDS dataset prepared in ArrayRecord format, read with `tfds.data_source` (no TensorFlow).

    Image features are read undecoded (`tfds.decode.SkipDecoding`): the encoded bytes go to the
    pipeline's decoder, like the files of an image folder. Other features are decoded by TFDS.
    """

    def __init__(self, name: str, split: str, *, data_dir: str | None, image_key: str, label_key: str):
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  # only when used.

        self.name, self.split = name, split
        self.image_key, self.label_key = image_key, label_key
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            raise DatasetNotFoundError(_tfds_missing_message(name, _root(data_dir), None)) from e
        if not builder.is_prepared():
            raise DatasetNotFoundError(_tfds_missing_message(name, str(builder.data_dir_root), builder))
        features = builder.info.features
        decoders = None
        if isinstance(features[image_key], tfds.features.Image):
            decoders = {image_key: tfds.decode.SkipDecoding()}
        try:
            self._ds = builder.as_data_source(split=split, decoders=decoders)
        except NotImplementedError as e:  # Prepared, but as TFRecord: no random access.
            raise DatasetNotFoundError(
                f"TFDS dataset {name!r} in {builder.data_dir} is stored as TFRecord, which has no random "
                "access. Re-prepare it in ArrayRecord format:\n"
                f"  tfds build {name} --data_dir={builder.data_dir_root} --file_format=array_record\n"
                "or use the ':runlocal' config variant, which trains on the embedded digits data."
            ) from e
        self.num_classes = int(features[label_key].num_classes)

    def __len__(self) -> int:
        return len(self._ds)

    def batch_reader(self, cfg: DataConfig) -> DecodedImages:
        return DecodedImages(self, cfg)

    def load(self, ids: np.ndarray) -> tuple[list[bytes | np.ndarray], np.ndarray]:
        """ids: int [b] -> (b encoded images (or uint8 [H, W, C] arrays), labels int32 [b])."""
        examples = self._ds.__getitems__([int(i) for i in ids])
        images = [ex[self.image_key] for ex in examples]
        labels = np.asarray([ex[self.label_key] for ex in examples], np.int32)
        return images, labels

    def record_name(self, i: int) -> str:
        return f"{self.name}[{self.split}] record {i}"


def _root(data_dir: str | None) -> str:
    return data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")


def _tfds_missing_message(name: str, root: str, builder) -> str:
    runlocal = (
        "Or run the same recipe on the embedded digits data with the ':runlocal' config variant, e.g. "
        "`--config configs/<recipe>.py:runlocal`."
    )
    if builder is None:
        return (
            f"TFDS has no dataset registered as {name!r} and none is prepared under data_dir={root}: "
            f"check data.name and data.data_dir.\n{runlocal}"
        )
    lines = [
        f"TFDS dataset {name!r} is not prepared in data_dir={root} (looked in {builder.data_dir}).",
        "Prepare it once in ArrayRecord format (reading it afterwards needs no TensorFlow; preparing "
        "some datasets does, `pip install tensorflow`):",
        f"  tfds build {name} --data_dir={root} --file_format=array_record",
    ]
    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if manual:
        manual_dir = os.path.join(root, "downloads", "manual")
        lines.append(
            f"{name} needs a manual download into {manual_dir} first:\n  " + " ".join(manual.split())
        )
    lines.append(runlocal)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- registrations


@dataclasses.dataclass(frozen=True)
class ImageFolderOptions:
    verify: bool = True  # PIL verify() each file at index time and skip bad ones.


@dataclasses.dataclass(frozen=True)
class TfdsOptions:
    image_key: str = "image"  # feature names
    label_key: str = "label"


@register_source("digits")
def _digits(cfg: DataConfig, split: str) -> ImageArraySource:
    return load_digits(split)


@register_source("imagefolder", options=ImageFolderOptions)
def _image_folder(cfg: DataConfig, split: str) -> ImageFolderSource:
    """Reads `os.path.join(cfg.data_dir, split)`; split "" reads `cfg.data_dir` itself."""
    if not cfg.data_dir:
        raise ValueError("data.name='imagefolder' needs data.data_dir (the folder holding the splits).")
    return ImageFolderSource(os.path.join(cfg.data_dir, split), verify=cfg.options.verify)


@register_source("tfds", options=TfdsOptions)
def _tfds(cfg: DataConfig, split: str) -> TfdsSource:
    """The TFDS dataset `cfg.name` (the source of every name not registered)."""
    return TfdsSource(cfg.name, split, data_dir=cfg.data_dir or None, image_key=cfg.options.image_key,
                      label_key=cfg.options.label_key)
