"""Image-folder and TFDS sources, through make_dataset: skipping bad files, clear missing-data errors."""

import importlib.util
import logging
import sys

import numpy as np
import pytest
from PIL import Image

from tome_jax import data

COLORS = {"cat": (255, 0, 0), "ant": (0, 0, 255)}  # "ant" < "cat": label 0 is blue.


@pytest.fixture(params=["opencv", "pil"])
def backend(request):
    return request.param


@pytest.fixture
def image_folder(tmp_path):
    """tmp/train/{ant,cat}/*.png of different sizes, one solid color per class, plus junk."""
    for name, color in COLORS.items():
        (tmp_path / "train" / name).mkdir(parents=True)
        for k, size in enumerate([(9, 7), (12, 12), (5, 16)]):
            Image.new("RGB", size, color).save(tmp_path / "train" / name / f"{k}.png")
    (tmp_path / "train" / "cat" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image, ignored")
    return tmp_path


def folder_cfg(root, **kw):
    return dict(name="imagefolder", data_dir=str(root), image_size=8, mean=(0, 0, 0), std=(1, 1, 1)) | kw


def test_gray_config_decodes_files_to_one_channel(image_folder, backend):
    cfg = folder_cfg(image_folder, mean=(0.5,), std=(0.5,), image_backend=backend, options=dict(verify=False))
    batch = next(
        iter(data.make_dataset(cfg, "train", global_batch_size=8, train=False, shard_index=0, shard_count=1))
    )
    assert batch["image"].shape == (8, 8, 8, 1) and batch["mask"].sum() == 6
    luma = {"ant": 29, "cat": 76}  # ITU-R 601 luma of pure blue / red, as PIL's convert("L").
    for image, label in zip(batch["image"][batch["mask"]], batch["label"][batch["mask"]]):
        assert abs(int(image.mean()) - luma[("ant", "cat")[label]]) <= 1


def test_image_folder_skips_corrupt_file_with_warning_and_count(image_folder):
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        source = data.make_source(folder_cfg(image_folder), "train")
    assert source.classes == ("ant", "cat") and source.num_classes == 2
    assert len(source) == 6 and source.num_skipped == 1 and source.skipped[0].endswith("corrupt.png")
    np.testing.assert_array_equal(source.labels, [0, 0, 0, 1, 1, 1])


def test_image_folder_batches_decode_resize_and_label(image_folder, backend):
    with pytest.warns(UserWarning):
        source = data.make_source(folder_cfg(image_folder), "train")
    batches = list(
        data.make_dataset(
            folder_cfg(image_folder, image_backend=backend),
            "train",
            global_batch_size=4,
            train=False,
            shard_index=0,
            shard_count=1,
            source=source,
        )
    )
    assert [b["mask"].sum() for b in batches] == [4, 2]
    for b in batches:
        assert b["image"].shape == (4, 8, 8, 3) and b["image"].dtype == np.uint8
        for image, label in zip(b["image"][b["mask"]], b["label"][b["mask"]]):
            np.testing.assert_array_equal(image, np.broadcast_to(COLORS[source.classes[label]], (8, 8, 3)))
    train = next(
        iter(
            data.make_dataset(
                folder_cfg(image_folder, hflip=True),
                "train",
                global_batch_size=6,
                train=True,
                shard_index=0,
                shard_count=1,
                source=source,
            )
        )
    )
    assert train["image"].shape == (6, 8, 8, 3) and sorted(train["label"]) == [0, 0, 0, 1, 1, 1]


def test_unverified_corrupt_file_is_masked_at_load_time(image_folder, backend, caplog):
    source = data.make_source(folder_cfg(image_folder, options=dict(verify=False)), "train")
    assert len(source) == 7
    with caplog.at_level(logging.WARNING):
        batches = list(
            data.make_dataset(
                folder_cfg(image_folder, image_backend=backend),
                "train",
                global_batch_size=8,
                train=False,
                shard_index=0,
                shard_count=1,
                source=source,
            )
        )
    assert batches[0]["mask"].sum() == 6 and "corrupt.png" in caplog.text


def test_zoom_out_crops_of_files_are_refused_up_front(image_folder):
    with pytest.raises(ValueError, match="zoom out.*in-memory images.*keep crop_scale <= 1"):
        data.make_dataset(folder_cfg(image_folder, crop_scale=(0.8, 1.3), options=dict(verify=False)), "train", global_batch_size=8,
                          train=True, shard_index=0, shard_count=1)


def test_missing_image_folder_points_to_layout_and_runlocal(tmp_path):
    with pytest.raises(FileNotFoundError, match="runlocal"):
        data.make_source(folder_cfg(tmp_path), "train")


def test_missing_tfds_dataset_says_how_to_prepare_it(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.make_dataset(
            dict(name="imagenet2012", data_dir=str(tmp_path)),
            "train",
            global_batch_size=8,
            train=True,
            shard_index=0,
            shard_count=1,
        )
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needle in (
        "'imagenet2012'",
        str(tmp_path),
        "tfds build imagenet2012",
        "--file_format=array_record",
        "downloads/manual",
        "ILSVRC2012_img_train.tar",
        ":runlocal",
    ):
        assert needle in message, needle
    assert not list(tmp_path.iterdir())  # Nothing downloaded or created.


def test_unknown_tfds_name_is_a_clear_error(tmp_path):
    with pytest.raises(
        data.DatasetNotFoundError, match="(?s)no dataset registered as 'no_such_dataset'.*runlocal"
    ):
        data.make_source(dict(name="no_such_dataset", data_dir=str(tmp_path)), "train")


def _prepare_tiny_tfds(data_dir):
    """A 2-split ArrayRecord TFDS dataset, written locally with no network and no TensorFlow."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(10), "test": self._generate_examples(5)}

        def _generate_examples(self, n):
            for i in range(n):  # Gray level encodes the label; PIL images avoid TF's encoder.
                yield i, {"image": Image.new("L", (6 + i, 9), 100 * (i % 3)), "label": i % 3}

    TinyShapes(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


def test_tfds_array_record_dataset_reads_without_tensorflow(tmp_path):
    _prepare_tiny_tfds(tmp_path)
    cfg = dict(name="tiny_shapes", data_dir=str(tmp_path), image_size=4, mean=(0, 0, 0), std=(1, 1, 1))
    source = data.make_source(cfg, "test")
    assert len(source) == 5 and source.num_classes == 3
    batches = list(
        data.make_dataset(
            cfg, "test", global_batch_size=4, train=False, shard_index=0, shard_count=1, source=source
        )
    )
    assert [b["mask"].sum() for b in batches] == [4, 1]
    for b in batches:
        valid = b["mask"]
        np.testing.assert_array_equal(b["image"][valid].mean(axis=(1, 2, 3)), 100 * b["label"][valid])
    train = next(
        iter(
            data.make_dataset(
                cfg, "train[:50%]", global_batch_size=5, train=True, shard_index=0, shard_count=1
            )
        )
    )
    assert train["image"].shape == (5, 4, 4, 3)
    if importlib.util.find_spec("tensorflow") is None:  # As in the pinned venv: no TF at all.
        assert "tensorflow" not in sys.modules
