"""choose_r: the smallest r meeting a FLOP or a measured-speed target."""

import warnings

import pytest
from flax import nnx

import tome_jax
from tome_jax.choose import candidates, parse_target, search_speedup
from tome_jax.models.flops import token_counts

TINY = dict(img_size=32, patch_size=4, embed_dim=32, depth=3, num_heads=2, num_classes=10)  # 64 patches


@pytest.fixture(scope="module")
def model():
    return tome_jax.create_model("vit_tiny_patch16_224", r=2, **TINY)


@pytest.mark.parametrize("target", [0.9, 0.7, 0.5])
@pytest.mark.parametrize("schedule", ["constant", "decreasing"])
def test_flops_target_is_met_by_r_and_not_by_r_minus_one(model, target, schedule):
    choice = tome_jax.choose_r(model, target_flops_ratio=target, schedule=schedule)
    r = choice.r if schedule == "constant" else choice.r[0]
    assert choice.r == (r if schedule == "constant" else (r, -1.0))
    base = tome_jax.count_flops(model, r=0)
    assert choice.flops_ratio == tome_jax.count_flops(model, r=choice.r) / base <= target
    previous = r - 1 if schedule == "constant" else (r - 1, -1.0)
    assert tome_jax.count_flops(model, r=previous) / base > target
    assert model.r == 2  # untouched


def test_vit_b_halves_flops_at_r16():
    model = nnx.eval_shape(lambda: tome_jax.create_model("vit_base_patch16_224"))  # FLOPs need no parameters
    choice = tome_jax.choose_r(model, target_flops_ratio=0.5)
    assert choice.r == 16 and choice.flops_ratio == pytest.approx(8.8 / 17.6, abs=0.01)


def test_unreachable_targets_name_the_best_value(model):
    with pytest.raises(ValueError, match=r"best reachable is 0\.\d+ at r=\d+"):
        tome_jax.choose_r(model, target_flops_ratio=0.01)
    with pytest.raises(ValueError, match="exactly one"):
        tome_jax.choose_r(model)
    with pytest.raises(ValueError, match="schedule must be"):
        tome_jax.choose_r(model, target_flops_ratio=0.5, schedule="increasing")
    assert tome_jax.choose_r(model, target_speedup=1.0).r == 0


def test_candidates_stop_where_more_r_changes_nothing(model):
    values = candidates(model)
    assert values[0] == 0 and token_counts(model, values[-1]) == token_counts(model, 1000)
    assert token_counts(model, values[-2]) != token_counts(model, values[-1])


def test_speed_search_bisects_and_warns_when_tome_is_slower():
    speedups = {r: 0.4 + 0.1 * r for r in range(1, 11)}  # r < 6 slower than r=0; r=9 the first >= 1.3
    calls = []

    def measure(r):
        calls.append(r)
        return speedups[r], 100 * speedups[r], 100.0

    with pytest.warns(UserWarning, match="slower than r=0 at batch 8"):
        choice = search_speedup(list(range(1, 11)), measure, 1.3 - 1e-9, flops_ratio=lambda r: 1 / r,
                                           batch_size=8)
    assert choice.r == 9 and choice.speedup == pytest.approx(1.3) and choice.baseline_images_per_sec == 100
    assert len(calls) <= 5 and calls[0] == 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"best reachable is 1\.40x at r=10"):
            search_speedup(list(range(1, 11)), measure, 2.5, flops_ratio=lambda r: 1.0, batch_size=8)


def test_speed_target_measures_compiled_forwards(model):
    model.trace_source = True
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"best reachable is \d+\.\d\dx at r=\d+"):
        warnings.simplefilter("ignore")  # a tiny model at batch 4 may well be slower with ToMe: that warns
        tome_jax.choose_r(model, target_speedup=1000.0, batch_size=4, repeats=1)
    assert model.r == 2 and model.trace_source is True  # restored
    model.trace_source = False


def test_parse_target():
    assert parse_target("flops=0.5") == {"target_flops_ratio": 0.5}
    assert parse_target("speedup=2") == {"target_speedup": 2.0}
    with pytest.raises(ValueError, match="flops=RATIO"):
        parse_target("fast")


# Each family makes its own example input: images, [B, T, H, W, C] clips, [B, time, freq, 1]
# spectrograms, and MAE's (images, key). Before `example_inputs`, choose_r built a square image batch.
FAMILIES = {
    "audio": ("vit_tiny_patch16_audio", dict(img_size=(64, 32), embed_dim=32, depth=2, num_heads=2,
                                              num_classes=5), (2, 64, 32, 1)),
    "video": ("video_vit_base_patch16", dict(num_frames=4, img_size=16, patch_size=4, tubelet_size=2,
                                             embed_dim=32, depth=2, num_heads=2, num_classes=5), (2, 4, 16, 16, 3)),
    "mae": ("mae_vit_tiny_patch16", dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                         decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2), (2, 16, 16, 3)),
    "vit": ("vit_tiny_patch16_224", dict(img_size=(16, 32), patch_size=4, embed_dim=32, depth=2, num_heads=2,
                                         num_classes=5), (2, 16, 32, 3)),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_speed_target_runs_on_every_family_with_its_own_input(family):
    name, kwargs, shape = FAMILIES[family]
    model = tome_jax.create_model(name, **kwargs)
    inputs = model.example_inputs(2)
    assert inputs[0].shape == shape and inputs[0].dtype == "float32"
    assert len(inputs) == (2 if family == "mae" else 1)  # MAE's forward also takes its masking key
    with warnings.catch_warnings(), pytest.raises(ValueError, match=r"best reachable is \d+\.\d\dx at r=\d+"):
        warnings.simplefilter("ignore")  # tiny models may be slower with ToMe: that warns
        tome_jax.choose_r(model, target_speedup=1000.0, batch_size=2, repeats=1)  # compiled and timed
    assert model.r == 0
