"""Checkpoint layouts users already have: today's big_vision (params-only, params/-prefixed, scanned),
MAE training-script .pth (with `args`) read without torch and without running pickled code, and
clear errors for unknown layouts. Every checkpoint is written here with numpy."""

import argparse
import collections
import importlib.util
import io
import os
import pickle
import re
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import tome_jax
from tests.models.test_vit import FIXTURES, SMALL, fixture, forward, rel_err
from tome_jax.models.weights import CheckpointLayout, CheckpointMismatchError, checkpoint_layout


def augreg():
    return dict(np.load(os.path.join(FIXTURES, "bigvision_vit.npz")))


def big_vision_params():
    """The AugReg fixture renamed to today's big_vision ViT; its pos_embedding has no class row."""
    renames = (("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0"),
               ("LayerNorm_2", "LayerNorm_1"), ("MlpBlock_3", "MlpBlock_0"))
    out = {}
    for key, value in augreg().items():
        if key == "Transformer/posembed_input/pos_embedding":
            out["pos_embedding"] = value[:, 1:]
            continue
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value
    return out


def big_vision_forward(p, images, depth=4):
    """numpy reference of big_vision's ViT (pool 'tok'): posemb on patches only, tanh GELU."""
    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * p[name + "/scale"] + p[name + "/bias"]

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    kernel = p["embedding/kernel"]  # [ph, pw, C, D]
    ph = kernel.shape[0]
    b, h, w, c = images.shape
    patches = images.reshape(b, h // ph, ph, w // ph, ph, c).transpose(0, 1, 3, 2, 4, 5)
    x = np.einsum("bijpqc,pqcd->bijd", patches, kernel).reshape(b, -1, kernel.shape[-1]) + p["embedding/bias"]
    x = x + p["pos_embedding"]
    x = np.concatenate([np.tile(p["cls"], (b, 1, 1)), x], axis=1)
    for i in range(depth):
        blk, mha = f"Transformer/encoderblock_{i}/", f"Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/"
        y = ln(x, blk + "LayerNorm_0")
        q, k, v = (np.einsum("btd,dhk->bthk", y, p[mha + n + "/kernel"]) + p[mha + n + "/bias"]
                   for n in ("query", "key", "value"))
        logits = np.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        x = x + np.einsum("bhqs,bshk,hkd->bqd", attn, v, p[mha + "out/kernel"]) + p[mha + "out/bias"]
        y = ln(x, blk + "LayerNorm_1")
        mlp = blk + "MlpBlock_0/"
        y = gelu(y @ p[mlp + "Dense_0/kernel"] + p[mlp + "Dense_0/bias"])
        x = x + y @ p[mlp + "Dense_1/kernel"] + p[mlp + "Dense_1/bias"]
    x = ln(x, "Transformer/encoder_norm")[:, 0]
    return x @ p["head/kernel"] + p["head/bias"]


def scanned(params):
    out, stacks = {}, collections.defaultdict(dict)
    for key, value in params.items():
        m = re.match(r"Transformer/encoderblock_(\d+)/(.*)", key)
        if m:
            stacks[m.group(2)][int(m.group(1))] = value
        else:
            out[key] = value
    out.update({f"Transformer/encoderblock/{k}": np.stack([v[i] for i in sorted(v)]) for k, v in stacks.items()})
    return out


@pytest.mark.parametrize("layout", ["params_only", "training", "scanned"])
def test_big_vision_checkpoints_give_big_visions_logits(layout, tmp_path):
    params = big_vision_params()
    images = fixture("bigvision_vit")["images"].astype(np.float64)
    expected = big_vision_forward({k: v.astype(np.float64) for k, v in params.items()}, images)
    stored = {"params_only": params, "scanned": scanned(params),
              "training": {**{f"params/{k}": v for k, v in params.items()},
                           "opt/1/0/mu/head/kernel": np.zeros((48, 10), np.float32), "step": np.array(7)}}[layout]
    path = tmp_path / "bv.npz"
    np.savez(path, **stored)
    assert checkpoint_layout(path) == CheckpointLayout("big_vision", gelu="tanh")  # from the names alone
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, gelu=checkpoint_layout(path).gelu)
    assert model.gelu == "tanh"
    report = tome_jax.load_timm(model, path)  # strict: a training checkpoint's optimizer state is not read
    assert report["missing"] == report["unused"] == []
    assert rel_err(forward(model, jnp.asarray(images, jnp.float32)), expected) < 1e-5
    model.gelu = "exact"  # the exact GELU is measurably further from big_vision's own logits
    assert rel_err(forward(model, jnp.asarray(images, jnp.float32)), expected) > 1e-5


def test_gelu_option_is_a_model_setting_and_augreg_keeps_exact_gelu():
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL, gelu="tanh")
    assert model.gelu == "tanh" and all(b.mlp.approximate for b in model.blocks)
    with pytest.raises(ValueError, match="gelu must be one of"):
        tome_jax.create_model("vit_tiny_patch16_224", **SMALL, gelu="erf")
    assert checkpoint_layout(augreg()) == CheckpointLayout("augreg", gelu="exact")
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    tome_jax.load_timm(model, augreg())
    assert model.gelu == "exact"


class _Ref:
    """A global written into a pickle by name (so the test needs no torch)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("only pickled")


class _Tensor:
    def __init__(self, key, array):
        self.key, self.array = key, array  # C- or Fortran-ordered: the strides say which

    def __reduce__(self):
        storage = _Storage(self.key, self.array)
        stride = tuple(s // self.array.itemsize for s in self.array.strides)
        return _Ref("torch._utils", "_rebuild_tensor_v2"), (storage, 0, self.array.shape, stride, False,
                                                            collections.OrderedDict())


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


class _TorchPickler(pickle._Pickler):
    """torch.save's zip format, written with numpy: data.pkl + one raw file per storage."""

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[_Ref] = lambda self, obj: self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", _Ref("torch", "FloatStorage"), obj.key, "cpu", obj.array.size)
        return None


def torch_save(obj, path, arrays):
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        for key, array in arrays.items():
            z.writestr(f"archive/data/{key}", array.astype("<f4", order="K").tobytes(order="A"))
        z.writestr("archive/version", "3\n")


def test_mae_training_script_checkpoint_with_args_loads_without_torch(tmp_path):
    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    tensors = {k: _Tensor(str(i), np.asfortranarray(v) if k == "head.weight" else v)
               for i, (k, v) in enumerate(state.items())}
    args = argparse.Namespace(model="vit_base_patch16", lr=None, blr=1e-3, device="cuda")
    path = tmp_path / "checkpoint-799.pth"
    torch_save({"model": collections.OrderedDict(tensors), "epoch": 799, "args": args}, path,
               {t.key: t.array for t in tensors.values()})
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    tome_jax.load_timm(model, path)
    io_ = fixture("vit_cls")
    assert rel_err(forward(model, jnp.asarray(io_["images"])), io_["logits_r0"]) < 1e-4
    # A transposed (column-major) tensor is rebuilt from its strides.
    assert not np.asarray(tensors["head.weight"].array).flags.c_contiguous
    weights = tome_jax.models.weights.read_state_dict(path)
    np.testing.assert_array_equal(weights["head.weight"], state["head.weight"])


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).save_reduce(_Ref("os", "system"), (f"touch {marker}",))
    buffer.write(pickle.STOP)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system, which is not loaded"):
        tome_jax.load_timm(tome_jax.create_model("vit_tiny_patch16_224", **SMALL), path)
    assert not marker.exists()


def test_unknown_layouts_list_what_was_found():
    model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
    with pytest.raises(CheckpointMismatchError, match=r"unknown checkpoint layout.*Found: stem/w \(4, 4\)"):
        tome_jax.load_timm(model, {"stem/w": np.zeros((4, 4)), "body.x": np.zeros(3)})
    sincos = {k: v for k, v in big_vision_params().items() if k != "pos_embedding"}
    with pytest.raises(CheckpointMismatchError, match=r"without 'pos_embedding'; found: .*embedding/kernel"):
        tome_jax.load_timm(model, sincos)


def test_legacy_pth_without_torch_suggests_a_safe_conversion(tmp_path):
    try:
        import torch  # noqa: F401
        pytest.skip("torch is installed: the legacy format is read by torch.load(weights_only=True)")
    except ImportError:
        pass
    path = tmp_path / "old.pth"
    path.write_bytes(pickle.dumps({"model": {}}))
    with pytest.raises(ImportError, match=r"add_safe_globals\(\[argparse.Namespace\]\).*weights_only=True"):
        tome_jax.load_timm(tome_jax.create_model("vit_tiny_patch16_224", **SMALL), path)


def test_recipe_with_big_vision_init_builds_the_tanh_model_also_when_restoring(tmp_path):
    from configs import vit_b_tome
    from tome_jax.train import loop

    path = tmp_path / "bv.npz"
    np.savez(path, **big_vision_params())
    config = vit_b_tome.get_config("runlocal")
    config.init.weights = str(path)
    assert loop.build_model(config, load_weights=False).gelu == "tanh"  # resume / eval: restored, not loaded
    config.init.weights = os.path.join(FIXTURES, "bigvision_vit.npz")  # AugReg: exact, as timm
    assert loop.build_model(config, load_weights=False).gelu == "exact"


def test_eval_builds_the_model_for_the_weights_it_is_given(tmp_path):
    """eval.py --weights: the model's GELU comes from those weights, not from the recipe's init."""
    from configs import vit_b_tome
    from tome_jax.train import evaluate

    path = tmp_path / "bv.npz"
    params = big_vision_params()
    np.savez(path, **params)
    config = vit_b_tome.get_config("runlocal")
    config.model.update(dict(SMALL, mlp_ratio=4.0, global_pool="token"))
    model, origin = evaluate.load_model(config, None, str(path))
    assert model.gelu == "tanh" and origin == f"weights {path}" and config.init.weights == ""
    np.testing.assert_array_equal(model.head.kernel[...], params["head/kernel"])


def test_weights_on_a_bucket_load_like_local_files(tmp_path):
    """gs:// and other epath schemes, through the in-memory `memtest://` bucket of the fault tests:
    .safetensors, .npz (today's big_vision, whose names say tanh GELU) and a torch zip .pth."""
    from etils import epath

    from tests.train import memory_path  # noqa: F401  (registers memtest://)
    from tome_jax.models.weights import read_state_dict

    state = load_file(os.path.join(FIXTURES, "vit_cls.safetensors"))
    tensors = {k: _Tensor(str(i), v) for i, (k, v) in enumerate(state.items())}
    torch_save({"model": collections.OrderedDict(tensors)}, tmp_path / "w.pth", {t.key: t.array for t in tensors.values()})
    np.savez(tmp_path / "bv.npz", **big_vision_params())
    bucket = epath.Path("memtest://weights/vit")
    bucket.mkdir(parents=True)
    for name in ("w.pth", "bv.npz"):
        (bucket / name).write_bytes((tmp_path / name).read_bytes())
    (bucket / "w.safetensors").write_bytes(open(os.path.join(FIXTURES, "vit_cls.safetensors"), "rb").read())
    io_ = fixture("vit_cls")
    for name in ("w.safetensors", "w.pth"):
        loaded = read_state_dict(f"memtest://weights/vit/{name}")
        assert sorted(loaded) == sorted(state) and all(np.array_equal(loaded[k], state[k]) for k in state)
        model = tome_jax.create_model("vit_tiny_patch16_224", **SMALL)
        tome_jax.load_timm(model, f"memtest://weights/vit/{name}")
        assert rel_err(forward(model, jnp.asarray(io_["images"])), io_["logits_r0"]) < 1e-4
    assert checkpoint_layout("memtest://weights/vit/bv.npz").gelu == "tanh"
    assert checkpoint_layout(tmp_path / "bv.npz").gelu == "tanh"
    local = read_state_dict(tmp_path / "bv.npz")
    remote = read_state_dict("memtest://weights/vit/bv.npz")
    assert sorted(remote) == sorted(local) and all(np.array_equal(remote[k], local[k]) for k in local)
    with pytest.raises(FileNotFoundError, match="memtest://weights/vit/nope.npz.* does not exist"):
        read_state_dict("memtest://weights/vit/nope.npz")
    with pytest.raises(FileNotFoundError, match="not a training workdir"):
        read_state_dict("memtest://weights/vit")  # a folder without checkpoints/
    (bucket / "legacy.pth").write_bytes(pickle.dumps({"model": {}}, protocol=2))  # not a zip: torch's reader
    if importlib.util.find_spec("torch") is None:
        with pytest.raises(ImportError, match="legacy PyTorch pickle and torch is not installed"):
            read_state_dict("memtest://weights/vit/legacy.pth")
