"""Image backends on real photographs: OpenCV within 1/255 of PIL; uint8 + on-device normalize = old float path."""

import io
import logging
import sys
import warnings

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tome_jax import data
from tome_jax.data import codecs, transforms

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # Color photographs shipped with scikit-image.


@pytest.fixture(scope="module")
def jpegs():
    """ImageNet-like JPEGs (q90, ~0.1-0.2 MP) cut from real photographs."""
    out, rng = [], np.random.default_rng(0)
    for k, name in enumerate(PHOTOS * 2):
        photo = getattr(skimage.data, name)()
        h, w = photo.shape[:2]
        y, x = rng.integers(0, h // 4), rng.integers(0, w // 4)
        crop = Image.fromarray(photo[y : y + 3 * h // 4, x : x + 3 * w // 4])
        side = int(rng.integers(300, 420))
        crop = crop.resize((side, int(side * rng.uniform(0.7, 1.0))) if k % 2 else (int(side * 0.8), side))
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def crops(backend, files, boxes_fn, size):
    handles = [backend.decode(f) for f in files]
    hw = np.asarray([backend.size(h) for h in handles])
    boxes = transforms.snap_boxes(boxes_fn(hw[:, 0], hw[:, 1]), hw[:, 0], hw[:, 1])
    return np.stack([backend.crop_resize(h, b, size) for h, b in zip(handles, boxes)]).astype(np.float64)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_opencv_matches_pil_within_one_level_on_average_on_photographs(jpegs, interpolation):
    pytest.importorskip("cv2")
    fast, ref = (codecs.make_backend(n, 3, interpolation) for n in ("opencv", "pil"))
    n = len(jpegs)
    u = transforms.uniforms(0, np.zeros(3 * n), np.arange(3 * n), 4)
    files = jpegs * 3  # Three random crops per photo: down- and upsampling to 224.
    train_fn = lambda h, w: transforms.random_resized_crop_boxes(u, h, w, (0.08, 1.0), (3 / 4, 4 / 3))  # noqa: E731
    eval_fn = lambda h, w: transforms.center_crop_boxes(h, w, 0.875)  # noqa: E731
    for boxes_fn, files_ in ((train_fn, files), (eval_fn, jpegs)):
        diff = np.abs(crops(fast, files_, boxes_fn, 224) - crops(ref, files_, boxes_fn, 224))
        per_image = diff.mean(axis=(1, 2, 3))
        assert per_image.mean() <= 1.0, per_image  # <= 1/255 on average (measured ~0.4 for bicubic).
        assert per_image.max() <= 2.0, per_image


def test_uint8_batches_normalized_on_device_equal_the_old_float_path(jpegs, tmp_path):
    """Old: PIL resize -> float32 / 255 -> np.where flip -> host (x - mean) / std. Same boxes."""
    for k, blob in enumerate(jpegs):  # One class per photo: the label is the record id.
        (tmp_path / f"c{k}").mkdir()
        (tmp_path / f"c{k}" / "a.jpg").write_bytes(blob)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    cfg = dict(
        name="imagefolder", data_dir=str(tmp_path), image_size=32, mean=mean, std=std, hflip=True,
        interpolation="bicubic", crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), image_backend="pil",
    )
    batch = next(iter(data.make_dataset(cfg, "", global_batch_size=8, train=True, seed=3, shard_index=0, shard_count=1)))
    ids = batch["label"]
    assert sorted(ids) == list(range(8)) and batch["image"].dtype == np.uint8
    u = transforms.uniforms(3, np.zeros(8, np.int64), ids, 5)
    images = [Image.open(io.BytesIO(jpegs[i])).convert("RGB") for i in ids]
    height, width = np.asarray([im.height for im in images]), np.asarray([im.width for im in images])
    boxes = transforms.snap_boxes(
        transforms.random_resized_crop_boxes(u[:, :4], height, width, (0.08, 1.0), (3 / 4, 4 / 3)), height, width
    )
    old = np.stack([
        np.asarray(im.resize((32, 32), Image.Resampling.BICUBIC, box=tuple(float(v) for v in b[[1, 0, 3, 2]])),
                   np.float32) * (1.0 / 255.0)
        for im, b in zip(images, boxes)
    ])
    flip = u[:, 4] < 0.5
    assert flip.any() and not flip.all()
    old = np.where(flip[:, None, None, None], old[:, :, ::-1], old)
    old = np.stack([(old[..., c] - np.float32(mean[c])) * np.float32(1.0 / std[c]) for c in range(3)], -1)
    new = np.asarray(data.normalize(batch["image"], mean, std))
    np.testing.assert_allclose(new, old, rtol=0, atol=1e-6)


def test_opencv_backend_reads_gray_and_rgba_arrays_and_masks_garbage(caplog):
    pytest.importorskip("cv2")
    rgb, gray = codecs.make_backend("opencv", 3, "bilinear"), codecs.make_backend("opencv", 1, "bilinear")
    g = np.full((5, 6, 1), 40, np.uint8)
    assert rgb.decode(g).shape == (5, 6, 3) and (rgb.decode(g) == 40).all()
    rgba = np.concatenate([np.full((5, 6, 3), 200, np.uint8), np.zeros((5, 6, 1), np.uint8)], -1)
    assert rgb.decode(rgba).shape == (5, 6, 3) and gray.decode(rgba).shape == (5, 6, 1)
    buffer = io.BytesIO()
    Image.new("RGB", (7, 4), (10, 20, 30)).save(buffer, "GIF")  # A format OpenCV may not read: PIL fallback.
    assert rgb.decode(buffer.getvalue()).shape == (4, 7, 3)
    with caplog.at_level(logging.WARNING):
        assert codecs.decode_or_none(rgb, b"not an image", "record 7") is None
    assert "record 7" in caplog.text


def test_auto_backend_says_once_that_it_falls_back_to_pil(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # OpenCV not installed: `import cv2` raises ImportError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own rule: a warning is shown once per place
        backends = [codecs.make_backend("auto", 3, "bilinear") for _ in range(3)]
    assert all(isinstance(b, codecs.PilBackend) for b in backends)
    assert len(caught) == 1 and "'auto' decodes with PIL: OpenCV is not installed" in str(caught[0].message)
