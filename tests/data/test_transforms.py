"""Host-side transforms: counter-based randomness, crop boxes, PIL-exact resampling, normalization."""

import numpy as np
import pytest
from PIL import Image

from tome_jax.data import transforms


def test_uniforms_depend_only_on_seed_epoch_and_id():
    ids, epoch = np.arange(50), np.zeros(50, np.int64)
    u = transforms.uniforms(3, epoch, ids, 5)
    assert u.shape == (50, 5) and u.min() >= 0 and u.max() < 1
    np.testing.assert_array_equal(transforms.uniforms(3, epoch[7:9], ids[7:9], 5), u[7:9])
    assert not np.allclose(transforms.uniforms(4, epoch, ids, 5), u)
    assert not np.allclose(transforms.uniforms(3, epoch + 1, ids, 5), u)
    assert abs(u.mean() - 0.5) < 0.05


@pytest.mark.parametrize(
    "box, size", [((0, 0, 20, 30), 64), ((2.5, 3.25, 17.5, 21.0), 11), ((0, 0, 20, 30), 7)]
)
def test_crop_resize_matches_pil_bilinear_up_and_down(box, size):
    image = np.random.default_rng(0).random((1, 20, 30, 1)).astype(np.float32)
    ours = transforms.crop_resize(image, np.asarray([box], float), size)[0, ..., 0]
    y0, x0, y1, x1 = box
    pil = Image.fromarray(image[0, ..., 0], "F").resize(
        (size, size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1)
    )
    np.testing.assert_allclose(ours, np.asarray(pil), atol=1e-5)


def test_crop_resize_pil_masks_nothing_and_matches_array_path():
    image = (np.random.default_rng(1).random((12, 9, 3)) * 255).astype(np.uint8)
    boxes = np.asarray([[1.0, 2.0, 11.0, 9.0], [0.0, 0.0, 12.0, 9.0]])
    ours = transforms.crop_resize_pil([Image.fromarray(image), None], boxes, 16, "bilinear")
    assert ours.shape == (2, 16, 16, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours[1], 0.0)
    from_array = transforms.crop_resize(image[None] / 255.0, boxes[:1], 16)[0]
    np.testing.assert_allclose(ours[0], from_array, atol=1.5 / 255)  # PIL rounds to uint8.


def test_random_resized_crop_boxes_stay_inside_with_requested_area():
    u = np.random.default_rng(0).random((1000, 4))
    height, width = np.full(1000, 40.0), np.full(1000, 60.0)
    boxes = transforms.random_resized_crop_boxes(u, height, width, (0.3, 0.9), (0.75, 1.33))
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 40 + 1e-9).all() and (boxes[:, 3] <= 60 + 1e-9).all()
    area = h * w / (40 * 60)
    assert area.min() >= 0.3 * 0.9 and area.max() <= 0.9 + 1e-9  # Clipping can only shrink.
    assert (w / h).min() >= 0.75 * 0.9 and (w / h).max() <= 1.33 / 0.9


def test_center_crop_boxes_are_square_centered_fraction_of_short_side():
    boxes = transforms.center_crop_boxes(np.array([100.0]), np.array([200.0]), 0.875)
    np.testing.assert_allclose(boxes, [[6.25, 56.25, 93.75, 143.75]])


def test_normalize_turns_gray_into_rgb_per_channel():
    gray = np.full((2, 4, 4, 1), 0.5, np.float32)
    out = transforms.normalize(gray, (0.5, 0.25, 0.0), (0.5, 0.25, 0.5))
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, 1.0])
    rgb = np.random.default_rng(0).random((2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(
        transforms.normalize(rgb, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)),
        (rgb - [0.1, 0.2, 0.3]) / [0.5, 0.6, 0.7],
        atol=1e-6,
    )


def test_hflip_mirrors_only_selected_images():
    x = np.arange(2 * 1 * 3 * 1, dtype=np.float32).reshape(2, 1, 3, 1)
    out = transforms.hflip(x, np.array([True, False]))
    np.testing.assert_array_equal(out[0, 0, :, 0], [2, 1, 0])
    np.testing.assert_array_equal(out[1], x[1])
