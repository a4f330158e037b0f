"""Merge visualizations: groups from the source, drawing, image input, clips, command line."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageSequence

import tome_jax
from tome_jax import visualize as vis
from tome_jax.visualize import cli
from tome_jax.models.flops import token_counts

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=10)  # 64 patches


@pytest.fixture(scope="module")
def model():
    return tome_jax.create_model("vit_tiny_patch16_224", r=8, **TINY)


def test_one_region_per_final_token_and_one_group_per_pixel(model):
    assert not model.trace_source
    merged = vis.merged_image(model, "astronaut")
    assert model.trace_source is False and model.r == 8  # switched on for the call only
    source = vis.source_after(model, vis.normalize(merged.image, model)[None])[0]
    patch_tokens = int((source[:, model.num_prefix_tokens:].sum(axis=1) > 0).sum())
    assert patch_tokens == token_counts(model)[-1] - model.num_prefix_tokens == merged.num_tokens
    pixels = vis.pixel_labels(merged.labels, merged.image.shape[:2])
    assert pixels.shape == (32, 32)  # exactly one group per pixel, and every group is present
    assert sorted(np.unique(pixels)) == list(range(merged.num_tokens))
    # Each group is filled with its mean colour (outline pixels aside).
    inside = ~vis.boundaries(pixels)
    for g in range(merged.num_tokens):
        mask = pixels == g
        mean = np.round(merged.image[mask].astype(float).mean(axis=0))
        assert np.all(merged.picture[mask & inside] == mean)
    assert np.all(merged.picture[~inside] == vis.OUTLINE)


def test_layers_and_r_values(model):
    assert vis.merged_image(model, "coffee", layer=0).num_tokens == 64
    assert vis.merged_image(model, "coffee", layer=1).num_tokens == 64 - 8
    assert vis.merged_image(model, "coffee", r=0).num_tokens == 64
    fig, results = vis.merge_grid(model, "coffee", r_values=[0, 4, (4, -1)])
    assert [m.num_tokens for m in results] == [64, 64 - 12, token_counts(model, (4, -1.0))[-1] - 1]
    assert len(fig.axes) == 4
    with pytest.raises(ValueError, match="layer must be in"):
        vis.source_after(model, np.zeros((1, 32, 32, 3), np.float32), layer=4)


def test_greyscale_rgba_and_wrong_size_are_converted_with_a_note(model):
    grey = (np.arange(40 * 48) % 256).reshape(40, 48).astype(np.uint8)
    merged = vis.merged_image(model, grey)
    assert merged.image.shape == (32, 32, 3)
    assert any("greyscale" in n for n in merged.notes)
    assert any("centre-cropped 40x48" in n for n in merged.notes) and any("resized" in n for n in merged.notes)
    rgba, notes = vis.to_rgb(np.zeros((32, 32, 4), np.uint8))
    assert rgba.shape == (32, 32, 3) and np.all(rgba == 255) and "alpha" in notes[0]  # transparent -> white
    same, notes = vis.fit_to_model(np.zeros((32, 32, 3), np.uint8), 32)
    assert notes == []


def test_bad_image_input(tmp_path):
    with pytest.raises(ValueError, match="samples: astronaut, brick"):
        vis.load_image("no_such_sample")
    with pytest.raises(ValueError, match="no such image file"):
        vis.load_image(str(tmp_path / "missing.jpg"))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read"):
        vis.load_image(str(junk))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "grey.png")
    image, notes = vis.load_image(str(tmp_path / "grey.png"))
    assert image.shape == (8, 8, 3) and notes == ["converted greyscale to RGB"]


def test_patch_labels_rejects_a_source_that_is_not_a_partition():
    source = np.eye(5)[:4]  # patch 4 (column 4) is in no token
    with pytest.raises(ValueError, match="belongs to 0 output tokens"):
        vis.patch_labels(source, num_prefix_tokens=1, grid=(2, 2))


def synthetic_clip_source():
    """A clip of 4 frames of 2x2 patches (16 patches, time-major) and a class token; the top-left
    patches of all frames are one token, the rest of frame 0 and 1 merge by position."""
    t, h, w = 4, 2, 2
    index = np.arange(t * h * w).reshape(t, h, w)
    groups = [[0]]  # class token
    groups.append(list(1 + index[:, 0, 0]))  # spans all 4 frames
    groups += [list(1 + index[:2, i, j]) for i, j in [(0, 1), (1, 0), (1, 1)]]  # frames 0-1
    groups += [[1 + p] for p in index[2:].reshape(-1) if p not in index[:, 0, 0]]  # alone
    source = np.zeros((len(groups), 1 + t * h * w), np.float32)
    for row, cols in enumerate(groups):
        source[row, cols] = 1
    return source


def test_clip_groups_share_one_colour_across_frames(tmp_path):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    source = synthetic_clip_source()
    frames, labels = vis.draw_clip(clip, source, patch_size=4, num_prefix_tokens=1, outline=None)
    assert frames.shape == (4, 8, 8, 3) and labels.shape == (4, 2, 2)
    assert len(np.unique(labels)) == source.shape[0] - 1
    assert vis.spanning_tokens(labels) == 4  # the all-frames token and the three 2-frame tokens
    assert all(np.all(frames[f, :4, :4] == frames[0, 0, 0]) for f in range(4))  # one colour, 4 frames
    assert not np.all(frames[2, :4, 4:] == frames[0, :4, 4:])
    mean, _ = vis.draw_clip(clip, source, patch_size=4, num_prefix_tokens=1, fill="mean", outline=None)
    expected = np.round(clip[:, :4, :4].reshape(-1, 3).mean(axis=0))
    assert np.all(mean[:, :4, :4] == expected)  # mean colour over all frames of the token
    # Tubelets of 2 frames: a source over 2 x 2 x 2 patches covers a 4-frame clip.
    half = np.zeros((9, 9), np.float32)
    half[np.arange(9), np.arange(9)] = 1
    _, labels = vis.draw_clip(clip, half, patch_size=4, num_prefix_tokens=1, tubelet=2)
    assert np.all(labels[0] == labels[1]) and not np.any(labels[1] == labels[2])
    strip = vis.save_strip(frames, str(tmp_path / "strip.png"))
    gif = vis.save_gif(frames, str(tmp_path / "clip.gif"), scale=2)
    assert Image.open(strip).size == (4 * 8 + 3 * 4, 8)
    with Image.open(gif) as im:
        decoded = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    big = np.repeat(np.repeat(frames, 2, axis=1), 2, axis=2)
    # Frames 0 and 1 are identical (their tokens span both): the GIF keeps one, shown twice as long.
    assert len(decoded) == 3 and all(np.array_equal(d, big[i]) for d, i in zip(decoded, [0, 2, 3]))
    with pytest.raises(ValueError, match="tubelets"):
        vis.draw_clip(clip[:3], source, patch_size=4, num_prefix_tokens=1, tubelet=2)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "merged.png"
    args = ["--image", "chelsea", "--model", "vit_tiny_patch16_224", "--img-size", "32", "--r", "8",
            "--out", str(out)]
    assert cli.main(args) == 0
    assert Image.open(out).size == (64, 64)  # 32x32 at --scale 2
    assert "groups; wrote" in capsys.readouterr().out
    assert cli.main(["--image", "no_such_sample", "--out", str(out)]) == 2
    assert "astronaut" in capsys.readouterr().err


def test_non_square_image_and_grid():
    # draw_groups on a 2 x 3 patch grid of a 16 x 24 image: each patch's pixels get its group's colour.
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    labels = np.array([[0, 0, 1], [2, 1, 1]])
    drawn = vis.draw_groups(image, labels, outline=None)
    assert drawn.shape == (16, 24, 3)
    group1 = np.concatenate([image[:8, 16:].reshape(-1, 3), image[8:, 8:].reshape(-1, 3)])
    assert np.all(drawn[:8, 16:] == np.round(group1.astype(float).mean(axis=0)))
    assert np.all(drawn[8:, :8] == np.round(image[8:, :8].reshape(-1, 3).astype(float).mean(axis=0)))
    # A model with a 32 x 48 input (8 x 12 patches): the picture keeps that shape, every patch in one group.
    model = tome_jax.create_model("vit_tiny_patch16_224", r=8, **{**TINY, "img_size": (32, 48)})
    merged = vis.merged_image(model, "astronaut")  # 512 x 512: centre-cropped to 2:3, then resized
    assert merged.image.shape == merged.picture.shape == (32, 48, 3)
    assert merged.labels.shape == (8, 12)
    assert merged.num_tokens == token_counts(model)[-1] - model.num_prefix_tokens
    assert any("centre-cropped 512x512 to 341x512" in note for note in merged.notes)


def test_library_reachable_from_the_package_without_the_command_line():
    assert tome_jax.visualize is vis and tome_jax.visualize.draw_groups is vis.draw_groups
    code = ("import sys, tome_jax; tome_jax.visualize.draw_groups; "
            "assert 'tome_jax.visualize.cli' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    listed = subprocess.run([sys.executable, "-m", "tome_jax.visualize", "--list-samples"], check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == list(vis.SAMPLES)  # python -m tome_jax.visualize runs the command line
