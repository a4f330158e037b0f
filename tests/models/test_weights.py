"""Weight loading: timm, MAE, big_vision and torchvision checkpoints; round trips; clear errors."""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import tome_jax
from tests.models.test_vit import FIXTURES, SMALL, fixture, forward, load_small, rel_err
from tome_jax.models.weight_rules import resample_grid
from tome_jax.models.weights import (
    CheckpointLayout,
    CheckpointMismatchError,
    LoadReport,
    checkpoint_layout,
    resample_pos_embed,
)


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    source = load_small("vit_avg")
    path = tmp_path / "model.safetensors"
    tome_jax.save_timm(source, path)
    target = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, global_pool="avg", fc_norm=True,
                                   init_values=0.1, rngs=__import__("flax").nnx.Rngs(7))
    report = tome_jax.load_timm(target, path)
    assert report == {"missing": [], "unused": [], "resampled": [], "ignored": [], "initialized": []}
    images = jnp.asarray(fixture("vit_avg")["images"])
    np.testing.assert_array_equal(forward(target, images), forward(source, images))


def test_in_memory_dict_and_npz_load(tmp_path):
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    np.savez(tmp_path / "w.npz", **state)
    images = jnp.asarray(fixture("vit_cls")["images"])
    expected = fixture("vit_cls")["logits_r0"]
    for source in (state, tmp_path / "w.npz"):
        model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
        tome_jax.load_timm(model, source)
        assert rel_err(forward(model, images), expected) < 1e-4


def test_mae_checkpoint_wrapped_in_model_key():
    state = load_file(os.path.join(FIXTURES, "vit_avg.safetensors"))
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, global_pool="avg", fc_norm=True, init_values=0.1)
    tome_jax.load_timm(model, {"model": state})
    io = fixture("vit_avg")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits_r0"]) < 1e-4


@pytest.mark.accelerator
def test_big_vision_npz_checkpoint():
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    tome_jax.load_timm(model, os.path.join(FIXTURES, "bigvision_vit.npz"))
    io = fixture("bigvision_vit")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits"]) < 1e-4


@pytest.mark.accelerator
def test_torchvision_checkpoint():
    model = tome_jax.create_model("vit_tiny_patch16_224", img_size=32, patch_size=4, embed_dim=48, depth=2,
                                  num_heads=3, num_classes=10)
    tome_jax.load_timm(model, os.path.join(FIXTURES, "torchvision_vit.safetensors"))
    io = fixture("torchvision_vit")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits"]) < 1e-4


@pytest.mark.accelerator
def test_pos_embed_resampling_matches_timm():
    data = np.load(os.path.join(FIXTURES, "posembed_resample.npz"))
    for grid, key in ((12, "out_12x12"), (6, "out_6x6")):
        out = resample_pos_embed(data["pos_embed"], grid, num_prefix_tokens=1)
        np.testing.assert_allclose(out, data[key], atol=1e-5)


def test_loading_into_another_resolution_resamples():
    model = tome_jax.create_model("vit_tiny_patch16_224", **{**SMALL, "img_size": 48}, r=8)
    report = tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"))
    assert report["resampled"] == ["pos_embed"]
    assert model.pos_embed.shape == (1, 1 + 12 * 12, 48)
    assert np.isfinite(np.asarray(forward(model, jnp.zeros((2, 48, 48, 3))))).all()


def test_errors_name_the_offending_keys(tmp_path):
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    before = np.asarray(model.pos_embed[...]).copy()

    wrong = dict(state, **{"blocks.1.mlp.fc1.weight": np.zeros((10, 48), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.mlp\.fc1\.weight"):
        tome_jax.load_timm(model, wrong)
    missing = {k: v for k, v in state.items() if k != "blocks.2.norm1.bias"}
    with pytest.raises(CheckpointMismatchError, match=r"missing keys \['blocks\.2\.norm1\.bias'\]"):
        tome_jax.load_timm(model, missing)
    extra = dict(state, **{"decoder_embed.weight": np.zeros((3, 3), np.float32)})
    with pytest.raises(CheckpointMismatchError, match=r"unused keys \['decoder_embed\.weight'\]"):
        tome_jax.load_timm(model, extra)
    np.testing.assert_array_equal(model.pos_embed[...], before)  # a failed load changes nothing

    report = tome_jax.load_timm(model, extra, strict=False)
    assert report["unused"] == ["decoder_embed.weight"]


def test_new_head_for_fine_tuning():
    model = tome_jax.create_model("vit_tiny_patch16_224", **{**SMALL, "num_classes": 5})
    with pytest.raises(CheckpointMismatchError, match="head.weight"):
        tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"))
    report = tome_jax.load_timm(model, os.path.join(FIXTURES, "vit_cls.safetensors"), skip=("head",))
    assert report["missing"] == [] and report["unused"] == []


def test_missing_file_and_pth_without_torch(tmp_path):
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tome_jax.load_timm(model, tmp_path / "nope.safetensors")
    if importlib.util.find_spec("torch") is None:
        (tmp_path / "w.pth").write_bytes(b"not really a pickle")
        with pytest.raises(ImportError, match="safetensors"):
            tome_jax.load_timm(model, tmp_path / "w.pth")


def test_a_checkpoint_trained_with_another_gelu_is_refused_with_the_fix():
    """The GELU is decided before the model is built (checkpoint_layout), never switched by loading."""
    from tests.models.test_weights_layouts import big_vision_params

    params = big_vision_params()  # today's big_vision names: trained with the tanh GELU
    assert checkpoint_layout(params) == CheckpointLayout("big_vision", gelu="tanh")
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    fix = r"gelu=tome_jax\.checkpoint_layout\(path\)\.gelu"
    with pytest.raises(CheckpointMismatchError, match=r"tanh GELU.*exact one.*" + fix):
        tome_jax.load_timm(model, params)
    assert tome_jax.load_timm(model, params, strict=False)["missing"] == []  # loaded as asked
    assert model.gelu == "exact"  # ... and the model's GELU is still the one it was built with


def test_checkpoint_layout_reads_only_the_names():
    fixtures = {"vit_cls.safetensors": CheckpointLayout("timm", "exact"),
                "torchvision_vit.safetensors": CheckpointLayout("torchvision", "exact"),
                "bigvision_vit.npz": CheckpointLayout("augreg", "exact")}
    for name, layout in fixtures.items():
        assert checkpoint_layout(os.path.join(FIXTURES, name)) == layout, name
    state = load_file(os.path.join(FIXTURES, "torchvision_vit.safetensors"))
    assert checkpoint_layout({"model": {f"module.{k}": v for k, v in state.items()}}).name == "torchvision"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint_layout(os.path.join(FIXTURES, "nope.npz"))


def test_every_load_report_has_the_same_keys():
    keys = set(LoadReport.__annotations__)
    assert keys == {"missing", "unused", "resampled", "ignored", "initialized"}
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    model = tome_jax.create_model("vit_tiny_patch16_224", **{**SMALL, "img_size": 48})
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.3.")}
    report = tome_jax.load_timm(model, dict(partial, extra=np.zeros(2)), strict=False)
    assert set(report) == keys and report["unused"] == ["extra"] and report["resampled"] == ["pos_embed"]
    assert report["missing"] == sorted(k for k in state if k.startswith("blocks.3."))


def test_one_grid_resampler_serves_images_spectrograms_and_clips():
    rng = np.random.default_rng(0)
    clip = rng.normal(size=(1, 4 * 3 * 2, 8)).astype(np.float32)  # a (time, H, W) = (4, 3, 2) grid
    np.testing.assert_array_equal(resample_grid(clip, (4, 3, 2), (4, 3, 2)), clip)  # same grid: unchanged
    longer = resample_grid(clip, (4, 3, 2), (6, 3, 2), method="linear")
    for h, w in np.ndindex(3, 2):  # only time changes: each (h, w) position is its own 1-D resample
        column = clip.reshape(4, 3, 2, 8)[:, h, w][None]
        np.testing.assert_allclose(longer.reshape(6, 3, 2, 8)[:, h, w],
                                   resample_grid(column, (4,), (6,), method="linear")[0], atol=1e-6)
    image = rng.normal(size=(1, 1 + 4 * 4, 8)).astype(np.float32)
    wide = resample_pos_embed(image, (4, 8), num_prefix_tokens=1)  # square -> rectangular, class row kept
    assert wide.shape == (1, 1 + 32, 8)
    np.testing.assert_array_equal(wide[:, 0], image[:, 0])
    with pytest.raises(CheckpointMismatchError, match="not a square grid"):
        resample_pos_embed(image[:, :-1], 4, num_prefix_tokens=1)


def test_a_family_extends_the_checkpoint_rules_with_super():
    """A family with its own names adapts them and keeps the shared rules (here: resampling)."""
    from flax import nnx

    from tome_jax.models.vit import VisionTransformer

    class ClassifierNamedViT(VisionTransformer):
        def adapt_state_dict(self, state_dict):
            renamed = {k.replace("classifier.", "head."): v for k, v in state_dict.items()}
            return super().adapt_state_dict(renamed)

    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    state = {k.replace("head.", "classifier."): v for k, v in state.items()}
    model = ClassifierNamedViT(**SMALL, rngs=nnx.Rngs(0))
    assert tome_jax.load_timm(model, state)["unused"] == []
    io = fixture("vit_cls")
    assert rel_err(forward(model, jnp.asarray(io["images"])), io["logits_r0"]) < 1e-4
    bigger = ClassifierNamedViT(**{**SMALL, "img_size": 48}, rngs=nnx.Rngs(0))
    assert tome_jax.load_timm(bigger, state)["resampled"] == ["pos_embed"]


def test_checkpoint_layers_import_downward():
    """weight_rules < weight_files, weight_layouts < encoder and families < weights (the loader):
    no family imports the loader, and the loader knows `Encoder`, not a family."""
    import ast

    import tome_jax.models as models

    def imports(module):
        tree = ast.parse(open(os.path.join(os.path.dirname(models.__file__), f"{module}.py")).read())
        return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}

    for family in ("encoder", "vit", "mae", "video", "audio", "weight_rules", "weight_files", "weight_layouts"):
        assert "tome_jax.models.weights" not in imports(family), family
    assert not {m for m in imports("weight_rules") if m.startswith("tome_jax")}
    loader = {m for m in imports("weights") if m.startswith("tome_jax.models.")}
    assert loader == {"tome_jax.models.encoder", "tome_jax.models.weight_files", "tome_jax.models.weight_layouts",
                      "tome_jax.models.weight_rules"}


def test_torch_and_flax_layouts_are_inverse_for_every_kernel_rank():
    """One layout rule for loading, saving and reading workdirs: linear, conv (2-D) and tubelet (3-D) kernels."""
    from tome_jax.models.weight_rules import to_model_layout, to_torch_layout

    rng = np.random.default_rng(0)
    for shape in ((5, 3), (8, 3, 4, 4), (8, 3, 2, 4, 4)):  # torch: [out, in], OIHW, OITHW
        value = rng.normal(size=shape)
        flax = to_model_layout(value, ("proj", "kernel"))
        assert flax.shape[-2:] == (shape[1], shape[0])  # [..., in, out]
        np.testing.assert_array_equal(to_torch_layout(flax, ("proj", "kernel")), value)
    bias = rng.normal(size=(4,))
    assert to_model_layout(bias, ("proj", "bias")) is bias and to_torch_layout(bias, ("proj", "bias")) is bias
