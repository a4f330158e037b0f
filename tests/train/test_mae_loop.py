"""MAE end to end in the train loop: pre-training, its encoder into fine-tuning, resume, bad init."""

import os

import numpy as np
import pytest
from etils import epath

import tome_jax
from configs import mae_finetune_tome, mae_pretrain
from tests.train.test_faults import assert_same_params
from tests.train.test_loop import final_params, kill_after_first_checkpoint_and_resume, losses, run_train
from tome_jax.models.weights import CheckpointMismatchError
from tome_jax.train import train_and_evaluate
from tome_jax.train.loop import build_model
from tome_jax.train.metrics import read_metrics

# A very small MAE / ViT pair: 16x16 digits, 4x4 patches (16 patches, 4 visible), 2 blocks.
TINY = {"model.patch_size": 4, "model.embed_dim": 32, "model.depth": 2, "model.num_heads": 2, "batch_size": 16,
        "log_every_steps": 1, "eval_every_steps": 1000}
TINY_PRETRAIN = {**TINY, "model.decoder_embed_dim": 16, "model.decoder_num_heads": 2}
TINY_FLAGS = [f"--config.{k}={v}" for k, v in TINY_PRETRAIN.items()]


def configure(config, overrides):
    """Dotted overrides ("model.depth": 2) applied by ml_collections itself."""
    config.update_from_flattened_dict(overrides)
    return config


def pretrain_config(**overrides):
    return configure(mae_pretrain.get_config("runlocal"), {**TINY_PRETRAIN, "total_steps": 4, "warmup_steps": 1,
                                                           "checkpoint_every_steps": 4, **overrides})


def finetune_config(arg="runlocal", **overrides):
    return configure(mae_finetune_tome.get_config(arg), {**TINY, "tome.r": 2, "total_steps": 4, "warmup_steps": 1,
                                                         "checkpoint_every_steps": 4, **overrides})


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny MAE pre-training run (4 steps, one checkpoint): its local workdir and summary."""
    workdir = tmp_path_factory.mktemp("mae") / "pt"
    return workdir, train_and_evaluate(pretrain_config(), str(workdir))


@pytest.fixture(scope="module")
def finetuned(pretrained, tmp_path_factory):
    """A tiny fine-tuning run with ToMe (4 steps) initialised from `pretrained`: its workdir and summary."""
    workdir = tmp_path_factory.mktemp("mae") / "ft"
    return workdir, train_and_evaluate(finetune_config(f"runlocal,init={pretrained[0]}"), str(workdir))


def test_pretraining_workdir_moves_its_encoder_into_the_finetuning_model(pretrained, finetuned):
    pt, summary = pretrained
    assert summary["task"] == "reconstruction" and np.isfinite(summary["eval_loss"])
    assert np.isfinite(losses(pt)).all()
    _, saved = final_params(str(pt))

    config = finetune_config(f"runlocal,init={pt}")
    model = build_model(config)
    leaf = lambda tree: np.asarray(tree.get("value", tree))  # noqa: E731  (orbax may keep Variable values)
    np.testing.assert_array_equal(model.blocks[1].attn.qkv.kernel[...], leaf(saved["blocks"]["1"]["attn"]["qkv"]["kernel"]))
    np.testing.assert_array_equal(model.pos_embed[...], leaf(saved["pos_embed"]))
    np.testing.assert_array_equal(model.patch_embed.proj.kernel[...], leaf(saved["patch_embed"]["proj"]["kernel"]))
    report = tome_jax.load_timm(model, str(pt), skip=("head",))
    assert report["missing"] == report["unused"] == []
    assert report["initialized"] == ["fc_norm.bias", "fc_norm.weight"]
    assert "decoder_pred.weight" in report["ignored"] and "mask_token" in report["ignored"]
    # ... and the fine-tuning run with ToMe trains from it.
    ft, summary = finetuned
    # 4 steps of this tiny fine-tuning stay at chance (10.0% top-1; lr=0: 9.5%; even 32 steps at lr=1e-2
    # reach only 11-15%), so what is checked is that it trained with ToMe and reports its logged final eval.
    final_eval = [m for m in read_metrics(ft) if "eval/top1" in m][-1]
    assert summary["tome_r"] == 2 and summary["eval_top1"] == final_eval["eval/top1"] and final_eval["step"] == 4
    assert np.isfinite(losses(ft)).all() and len(losses(ft)) == 4


def test_finetuning_reads_the_pretraining_workdir_from_a_bucket(gcs, pretrained, finetuned, tmp_path):
    """The pre-training workdir copied to gs://bucket/mae/pt on the loopback storage server
    (tests/train/conftest.py): a fine-tuning run initialised from it (orbax reads the checkpoint from the
    bucket; the run's own workdir is local, as writing to a bucket is test_bucket's) ends with the
    parameters of the run initialised from the local copy."""
    for file in sorted(p for p in pretrained[0].rglob("*") if p.is_file()):
        (epath.Path("gs://bucket/mae/pt") / str(file.relative_to(pretrained[0]))).write_bytes(file.read_bytes())
    gcs.proxy.clear()
    summary = train_and_evaluate(finetune_config("runlocal,init=gs://bucket/mae/pt"), str(tmp_path / "ft"))
    assert any(r.startswith("GET") and "mae/pt/checkpoints/4/state/" in r for r in gcs.proxy.requests)
    assert summary["eval_top1"] == finetuned[1]["eval_top1"]
    assert_same_params(final_params(str(tmp_path / "ft"))[1], final_params(str(finetuned[0]))[1])


def test_bad_init_and_bad_mask_ratio_fail_at_start_and_keep_the_workdir(tmp_path):
    from safetensors.numpy import save_file

    train_and_evaluate(finetune_config(**{"tome.r": 0, "total_steps": 2, "checkpoint_every_steps": 2}),
                       str(tmp_path / "ft"))
    before = sorted(os.listdir(tmp_path / "ft" / "checkpoints")), os.path.getsize(tmp_path / "ft" / "metrics.jsonl")
    # Weights that are not an MAE encoder: the wrong keys are listed.
    save_file({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32), "layer1.0.bn1.weight": np.zeros(8, np.float32)},
              str(tmp_path / "resnet.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"unknown checkpoint layout.*Found: conv1.weight .*"
                                                      r"layer1.0.bn1.weight"):
        train_and_evaluate(finetune_config(f"runlocal,init={tmp_path / 'resnet.safetensors'}"), str(tmp_path / "ft"))
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        train_and_evaluate(finetune_config(f"runlocal,init={tmp_path}"), str(tmp_path / "ft"))
    with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
        train_and_evaluate(pretrain_config(**{"model.mask_ratio": 1.0}), str(tmp_path / "ft"))
    assert (sorted(os.listdir(tmp_path / "ft" / "checkpoints")),
            os.path.getsize(tmp_path / "ft" / "metrics.jsonl")) == before
    with pytest.raises(ValueError, match="decoder config does not fit"):
        train_and_evaluate(pretrain_config(**{"model.decoder_embed_dim": 18}), str(tmp_path / "new"))
    assert not os.path.exists(tmp_path / "new")


def run_pretrain(workdir, *extra, wait=True):
    return run_train(workdir, *extra, wait=wait, recipe="configs/mae_pretrain.py:runlocal", flags=TINY_FLAGS)


def test_killed_pretraining_resumes_to_identical_parameters(tmp_path):
    """The loop's resume test (tests/train/test_loop.py) on MAE pre-training: the masks come from
    (seed, step), so a run killed after a checkpoint and resumed ends with the same parameters."""
    kill_after_first_checkpoint_and_resume(run_pretrain, tmp_path, total=20, every=5)
    np.testing.assert_array_equal(losses(tmp_path / "straight")[-5:], losses(tmp_path / "killed")[-5:])


def test_mae_recipes_give_the_paper_settings_and_runlocal_adds_no_fields():
    for variant, r, decay in (("B", 16, 0.65), ("L", 8, 0.75), ("H", 7, 0.75)):
        config = mae_finetune_tome.get_config(f"variant={variant}")
        assert config.tome.r == r and config.optimizer.layer_decay == decay and not config.tome.prop_attn
        assert config.model_name.endswith(".mae") and tuple(config.init.skip) == ("head",)
    assert mae_finetune_tome.get_config("runlocal,r=0,init=runs/x").init.weights == "runs/x"
    pretrain = mae_pretrain.get_config("variant=B,epochs=1600")
    assert pretrain.model_name == "mae_vit_base_patch16" and pretrain.total_epochs == 1600
    assert pretrain.optimizer.lr == 1.5e-4 * 4096 / 256 and pretrain.optimizer.b2 == 0.95
    assert pretrain.task == "reconstruction" and pretrain.tome.r == 0 and pretrain.model.mask_ratio == 0.75
    for recipe in (mae_pretrain, mae_finetune_tome):
        assert set(recipe.get_config("runlocal").keys()) == set(recipe.get_config().keys())
        with pytest.raises(ValueError, match="variant must be one of"):
            recipe.get_config("variant=XL")
