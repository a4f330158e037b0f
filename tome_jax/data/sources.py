"""Random-access (example, label) sources: in-memory arrays, embedded digits, an image folder, TFDS.

Every source has `len(source)`, `source.num_classes` and `source.load(ids) -> (examples, labels)`:
- `ArraySource.load` returns one array `[b, ...]` (uint8 or float32; images `[b, H, W, C]`, float
  in [0, 1]; or any per-example array for `data.kind="array"`);
- the file-backed sources return a list with one entry per id: the encoded file (`bytes`), a decoded
  uint8 array `[H, W, C]`, or `None` where the record could not be read. The pipeline decodes
  (`codecs`) and masks out what fails. They may name a record for log messages (`record_name(i)`).
Labels are int32 `[b]`. Sources know nothing about batching, augmentation or sharding.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from PIL import Image

from tome_jax.data.config import DataConfig, resolve_config

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_SPLITS = ("train", "test")
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class Source(Protocol):
    """What the pipeline needs from a source."""

    num_classes: int

    def __len__(self) -> int: ...

    def load(self, ids: np.ndarray) -> tuple[np.ndarray | list[bytes | np.ndarray | None], np.ndarray]: ...


class DatasetNotFoundError(FileNotFoundError):
    """A dataset the config names is not on disk (or not in a readable format)."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySource:
    """In-memory examples, uint8 or float32 [N, ...]; labels: int [N].

    With `data.kind="image"`: images [N, H, W, C], C in {1, 3}, float32 in [0, 1] or uint8.
    With `data.kind="array"`: any [N, ..., C] (a spectrogram [N, H, W, C], a clip [N, T, H, W, C]),
    batched as is; `len(data.mean)` must equal C.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray) or images.dtype not in (np.uint8, np.float32):
            raise TypeError(
                "ArraySource.images must be a uint8 or float32 NumPy array, got "
                f"{getattr(images, 'dtype', type(images))}; convert it with np.asarray(x, np.float32)."
            )
        if images.ndim < 2 or len(images) != len(self.labels):
            raise ValueError(
                f"ArraySource needs images [N, ..., C] and labels [N]; got shapes {images.shape} and "
                f"{np.shape(self.labels)}."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ids: int [b] -> (examples [b, ...] in the stored dtype, labels int32 [b])."""
        return self.images[ids], np.asarray(self.labels[ids], np.int32)


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
    return ArraySource(images=images, labels=labels[keep], num_classes=10)


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


def make_source(cfg: DataConfig | Mapping[str, Any] | None, split: str) -> Source:
    """The source named by `cfg.name` for `split` (digits | imagefolder | synthetic_audio | audiofolder |
    any TFDS name).

    imagefolder reads `os.path.join(cfg.data_dir, split)`; split "" reads `cfg.data_dir` itself.
    """
    cfg = resolve_config(cfg)
    if cfg.name in ("synthetic_audio", "audiofolder"):  # non-image arrays: tome_jax/data/audio.py
        from tome_jax.data import audio  # pylint: disable=g-import-not-at-top

        return audio.make_audio_source(cfg.name, cfg.data_dir, split, cfg.audio)
    if cfg.name == "digits":
        return load_digits(split)
    if cfg.name.partition(":")[0] in ("moving_digits", "clipfolder"):  # clips [T, H, W, C]: data/clips.py
        from tome_jax.data import clips  # pylint: disable=g-import-not-at-top  # (imports this module)

        return clips.make_clip_source(cfg, split)
    if cfg.name == "imagefolder":
        if not cfg.data_dir:
            raise ValueError("data.name='imagefolder' needs data.data_dir (the folder holding the splits).")
        return ImageFolderSource(os.path.join(cfg.data_dir, split), verify=cfg.verify_images)
    return TfdsSource(
        cfg.name, split, data_dir=cfg.data_dir or None, image_key=cfg.image_key, label_key=cfg.label_key
    )
