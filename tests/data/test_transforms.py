"""Host-side transforms: counter-based randomness, crop boxes, PIL-exact resampling, uint8 helpers."""

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


def test_random_resized_crop_boxes_stay_inside_with_requested_area():
    u = np.random.default_rng(0).random((1000, 4))
    height, width = np.full(1000, 40.0), np.full(1000, 60.0)
    boxes = transforms.random_resized_crop_boxes(u, height, width, (0.3, 0.9), (0.75, 1.33))
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 40 + 1e-9).all() and (boxes[:, 3] <= 60 + 1e-9).all()
    area = h * w / (40 * 60)
    assert area.min() >= 0.3 * 0.9 and area.max() <= 0.9 + 1e-9  # Clipping can only shrink.
    assert (w / h).min() >= 0.75 * 0.9 and (w / h).max() <= 1.33 / 0.9


def test_zoom_out_boxes_hold_the_whole_image_at_a_random_place():
    u = np.random.default_rng(0).random((1000, 4))
    height, width = np.full(1000, 8.0), np.full(1000, 8.0)
    boxes = transforms.random_resized_crop_boxes(u, height, width, (1.2, 1.6), (1.0, 1.0))
    assert (boxes[:, :2] <= 0).all() and (boxes[:, 2] >= 8).all() and (boxes[:, 3] >= 8).all()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 64
    assert area.min() >= 1.2 - 1e-9 and area.max() <= 1.6 + 1e-9
    assert boxes[:, 0].std() > 0.1 and boxes[:, 1].std() > 0.1  # the image's place varies


@pytest.mark.parametrize("box, size", [((-3.0, -1.5, 17.0, 24.0), 16), ((-0.4, 2.0, 21.0, 31.5), 40)])
def test_crop_resize_repeats_the_border_outside_the_image(box, size):
    """A box past the border equals PIL's resize of the image on a canvas that repeats its edge pixels."""
    image = np.random.default_rng(1).random((1, 20, 30, 1)).astype(np.float32)
    ours = transforms.crop_resize(image, np.asarray([box], float), size)[0, ..., 0]
    pad = 8
    canvas = np.pad(image[0, ..., 0], pad, mode="edge")
    y0, x0, y1, x1 = (v + pad for v in box)
    pil = Image.fromarray(canvas, "F").resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
    np.testing.assert_allclose(ours, np.asarray(pil), atol=1e-5)


@pytest.mark.parametrize("size", [8, 16])
def test_each_crop_is_pil_on_its_own_canvas_whatever_else_is_in_the_batch(size):
    """Boxes inside the image: PIL on the image; boxes past its edge (on either axis, or one side only):
    PIL on a canvas repeating the border. Batched together (the inside box downsamples most, so the
    batch's padding grows) or alone, each crop is the same."""
    image = np.random.default_rng(2).random((1, 20, 30, 1)).astype(np.float32)
    boxes = np.asarray([[0.0, 0.0, 20.0, 30.0], [2.5, 3.25, 17.5, 21.0], [-3.0, -1.5, 17.0, 24.0],
                        [1.0, 4.0, 19.0, 33.5], [0.0, -2.0, 20.0, 22.0]])
    edge_canvas = Image.fromarray(np.pad(image[0, ..., 0], 40, mode="edge"), "F")
    plain = Image.fromarray(image[0, ..., 0], "F")
    batch = transforms.crop_resize(np.repeat(image, len(boxes), 0), boxes, size)[..., 0]
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        inside = y0 >= 0 and x0 >= 0 and y1 <= 20 and x1 <= 30
        canvas, shift = (plain, 0) if inside else (edge_canvas, 40)
        pil = canvas.resize((size, size), Image.Resampling.BILINEAR, box=(x0 + shift, y0 + shift, x1 + shift, y1 + shift))
        np.testing.assert_allclose(batch[k], np.asarray(pil), atol=1e-5, err_msg=f"box {k}")
        alone = transforms.crop_resize(image, boxes[k:k + 1], size)[0, ..., 0]
        np.testing.assert_allclose(batch[k], alone, atol=1e-6, err_msg=f"box {k}")


def test_center_crop_boxes_are_square_centered_fraction_of_short_side():
    boxes = transforms.center_crop_boxes(np.array([100.0]), np.array([200.0]), 0.875)
    np.testing.assert_allclose(boxes, [[6.25, 56.25, 93.75, 143.75]])


def test_snap_boxes_are_whole_pixels_inside_the_image_and_at_least_one_pixel():
    boxes = np.asarray([[0.4, 1.6, 10.4, 8.5], [-0.3, 5.0, 0.1, 9.9], [3.7, 2.2, 12.6, 12.0]])
    snapped = transforms.snap_boxes(boxes, np.array([12, 12, 12]), np.array([10, 10, 10]))
    assert snapped.dtype == np.int64
    np.testing.assert_array_equal(snapped[0], [0, 2, 10, 9])  # h = 10, w = rint(6.9) = 7.
    np.testing.assert_array_equal(snapped[1], [0, 5, 1, 10])  # h clipped up to 1 px.
    np.testing.assert_array_equal(snapped[2], [3, 0, 12, 10])  # Shifted back inside (y), w = H clip.
    u = np.random.default_rng(0).random((500, 4))
    rand = transforms.snap_boxes(
        transforms.random_resized_crop_boxes(u, np.full(500, 37), np.full(500, 53), (0.08, 1), (0.75, 1.33)),
        np.full(500, 37),
        np.full(500, 53),
    )
    assert (rand[:, :2] >= 0).all() and (rand[:, 2] <= 37).all() and (rand[:, 3] <= 53).all()
    assert (rand[:, 2:] - rand[:, :2] >= 1).all()


def test_to_uint8_rounds_and_clips():
    out = transforms.to_uint8(np.asarray([-0.1, 0.0, 0.5 / 255 + 1e-4, 0.2, 1.0, 1.3], np.float32))
    np.testing.assert_array_equal(out, [0, 0, 1, 51, 255, 255])
    assert out.dtype == np.uint8


def test_hflip_mirrors_only_selected_images_in_uint8():
    x = np.arange(3 * 2 * 3 * 1, dtype=np.uint8).reshape(3, 2, 3, 1)
    before = x.copy()
    out = transforms.hflip(x, np.array([True, False, True]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0, :, 0], [2, 1, 0])
    np.testing.assert_array_equal(out[[0, 2]], before[[0, 2], :, ::-1])
    np.testing.assert_array_equal(out[1], before[1])
