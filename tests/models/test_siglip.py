"""SigLIP / SigLIP 2 image towers (big_vision's ViT with a MAP head) with ToMe.

Checkpoints are written here with numpy under big_vision's own key names and shapes (a two-tower
`.npz`: params/img/..., params/txt/..., params/t, params/b; SigLIP 2's scanned blocks); the reference
is a NumPy restatement of big_vision's `models/vit.py` (`_Model` with pool_type="map", `Encoder1DBlock`,
`MlpBlock`, `MAPHead`: flax `MultiHeadDotProductAttention` and `LayerNorm` defaults, `nn.gelu`'s tanh).
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tome_jax
from tome_jax.models.map_head import MapHead
from tome_jax.models.weight_layouts import CheckpointLayout, to_timm_state_dict
from tome_jax.models.weight_rules import timm_name, to_torch_layout

# A tiny tower: 30 px with 4-px patches leaves 2 rows and columns unread (big_vision's VALID conv):
# 7 x 7 = 49 patch tokens, none protected. mlp_dim = int(48 * 3.7362) = 179, So400m's ratio.
TINY = dict(img_size=30, patch_size=4, embed_dim=48, depth=2, num_heads=3, mlp_ratio=3.7362)
GRID, WIDTH, HEADS, MLP = 7, 48, 3, 179


def big_vision_image_tower(seed=0, num_classes=0):
    """Random params of big_vision's ViT(pool_type="map"), flattened with "/" as its .npz files are."""
    rng = np.random.default_rng(seed)

    def w(*shape, std=0.2):
        return (std * rng.standard_normal(shape)).astype(np.float32)

    def mha(prefix):
        return {**{f"{prefix}{n}/kernel": w(WIDTH, HEADS, WIDTH // HEADS) for n in ("query", "key", "value")},
                **{f"{prefix}{n}/bias": w(HEADS, WIDTH // HEADS, std=0.05) for n in ("query", "key", "value")},
                f"{prefix}out/kernel": w(HEADS, WIDTH // HEADS, WIDTH), f"{prefix}out/bias": w(WIDTH, std=0.05)}

    def ln(prefix):
        return {f"{prefix}scale": 1 + w(WIDTH, std=0.1), f"{prefix}bias": w(WIDTH, std=0.05)}

    def mlp(prefix):
        return {f"{prefix}Dense_0/kernel": w(WIDTH, MLP), f"{prefix}Dense_0/bias": w(MLP, std=0.05),
                f"{prefix}Dense_1/kernel": w(MLP, WIDTH), f"{prefix}Dense_1/bias": w(WIDTH, std=0.05)}

    p = {"embedding/kernel": w(4, 4, 3, WIDTH), "embedding/bias": w(WIDTH, std=0.05),
         "pos_embedding": w(1, GRID * GRID, WIDTH, std=0.1)}
    for i in range(TINY["depth"]):
        blk = f"Transformer/encoderblock_{i}/"
        p.update({**ln(blk + "LayerNorm_0/"), **mha(blk + "MultiHeadDotProductAttention_0/"),
                  **ln(blk + "LayerNorm_1/"), **mlp(blk + "MlpBlock_0/")})
    p.update(ln("Transformer/encoder_norm/"))
    p.update({"MAPHead_0/probe": w(1, 1, WIDTH, std=0.5), **mha("MAPHead_0/MultiHeadDotProductAttention_0/"),
              **ln("MAPHead_0/LayerNorm_0/"), **mlp("MAPHead_0/MlpBlock_0/")})
    if num_classes:
        p.update({"head/kernel": w(WIDTH, num_classes), "head/bias": w(num_classes, std=0.05)})
    return p


def big_vision_forward(p, images):
    """NumPy restatement of big_vision's vit._Model(pool_type="map", posemb="learn") in float64."""
    p = {k: v.astype(np.float64) for k, v in p.items()}

    def layer_norm(x, name):  # flax nn.LayerNorm: epsilon 1e-6, biased variance
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-6) * p[name + "scale"] + p[name + "bias"]

    def gelu(x):  # flax nn.gelu: approximate=True
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    def mlp_block(x, name):
        return gelu(x @ p[name + "Dense_0/kernel"] + p[name + "Dense_0/bias"]) @ p[name + "Dense_1/kernel"] \
            + p[name + "Dense_1/bias"]

    def attention(inputs_q, inputs_kv, name):  # nn.MultiHeadDotProductAttention
        q, k, v = (np.einsum("btd,dhk->bthk", x, p[name + n + "/kernel"]) + p[name + n + "/bias"]
                   for x, n in ((inputs_q, "query"), (inputs_kv, "key"), (inputs_kv, "value")))
        logits = np.einsum("bqhk,bshk->bhqs", q / np.sqrt(q.shape[-1]), k)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        return np.einsum("bhqs,bshk,hkd->bqd", weights, v, p[name + "out/kernel"]) + p[name + "out/bias"]

    kernel = p["embedding/kernel"]  # nn.Conv(width, patch, strides=patch, padding="VALID")
    ph = kernel.shape[0]
    n, h, w, c = images.shape
    gh, gw = h // ph, w // ph
    patches = images[:, :gh * ph, :gw * ph].reshape(n, gh, ph, gw, ph, c).transpose(0, 1, 3, 2, 4, 5)
    x = np.einsum("bijpqc,pqcd->bijd", patches, kernel).reshape(n, gh * gw, -1) + p["embedding/bias"]
    x = x + p["pos_embedding"]
    for i in range(TINY["depth"]):  # Encoder1DBlock
        blk = f"Transformer/encoderblock_{i}/"
        y = layer_norm(x, blk + "LayerNorm_0/")
        x = x + attention(y, y, blk + "MultiHeadDotProductAttention_0/")
        x = x + mlp_block(layer_norm(x, blk + "LayerNorm_1/"), blk + "MlpBlock_0/")
    x = layer_norm(x, "Transformer/encoder_norm/")
    probe = np.tile(p["MAPHead_0/probe"], (n, 1, 1))  # MAPHead
    x = attention(probe, x, "MAPHead_0/MultiHeadDotProductAttention_0/")
    x = (x + mlp_block(layer_norm(x, "MAPHead_0/LayerNorm_0/"), "MAPHead_0/MlpBlock_0/"))[:, 0]
    return x @ p["head/kernel"] + p["head/bias"] if "head/kernel" in p else x


def two_tower(image, *, scan=False):
    """SigLIP's two-tower .npz: params/img/... (SigLIP 2: blocks stacked as Transformer/encoderblock/...),
    params/txt/..., the temperature t and bias b."""
    if scan:
        stacked = {}
        for key in [k for k in image if k.startswith("Transformer/encoderblock_")]:
            rest = key.split("/", 2)[2]
            stacked.setdefault(f"Transformer/encoderblock/{rest}", []).append(image.pop(key))
        image = {**image, **{k: np.stack(v) for k, v in stacked.items()}}
    text = {"txt/Embed_0/embedding": np.zeros((32, 16), np.float32), "txt/pos_embedding": np.zeros((1, 8, 16)),
            "txt/Encoder_0/encoder_norm/scale": np.ones(16, np.float32), "t": np.ones(1), "b": -np.ones(1)}
    return {f"params/{k}": v for k, v in {**{f"img/{k}": v for k, v in image.items()}, **text}.items()}


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(8).standard_normal((3, 30, 30, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tower():
    """A tiny SigLIP tower built for big_vision weights (tanh GELU) and its compiled forward."""
    model = tome_jax.create_model("vit_base_patch16_siglip_224", **TINY, gelu="tanh")
    return model, tome_jax.CompiledForward(model)


@pytest.mark.parametrize("layout", ["siglip", "siglip2_scanned", "image_tower_only"])
def test_big_vision_siglip_checkpoints_give_big_visions_embedding(layout, tower, images, tmp_path):
    image = big_vision_image_tower()
    expected = big_vision_forward(image, images.astype(np.float64))
    stored = {"siglip": lambda: two_tower(dict(image)), "siglip2_scanned": lambda: two_tower(dict(image), scan=True),
              "image_tower_only": lambda: dict(image)}[layout]()
    path = tmp_path / "siglip.npz"
    np.savez(path, **stored)
    layout_found = tome_jax.checkpoint_layout(path)
    assert layout_found == CheckpointLayout("big_vision", "tanh") and layout_found.model_kwargs() == {"gelu": "tanh"}
    model, forward = tower
    report = tome_jax.load_timm(model, path)
    assert report["missing"] == report["unused"] == report["resampled"] == []
    text = [k for k in stored if k.startswith("params/") and not k.startswith("params/img/")]
    assert report["ignored"] == sorted(k.removeprefix("params/") for k in text)  # the text tower, t and b
    assert model.reduction.protected == 0 and model.num_tokens == GRID * GRID
    assert rel_err(forward(jnp.asarray(images), r=0), expected) < 1e-5


def test_map_head_counts_a_merged_token_by_its_size():
    """Two equal tokens merged into one of size 2 pool exactly as the two did; without the size they don't."""
    @nnx.jit
    def pooled(head, x):
        duplicated = jnp.concatenate([x, x[:, 1:2]], axis=1)
        size = jnp.ones((2, 5, 1)).at[:, 1].set(2.0)
        return head(x, size), head(duplicated), head(x), head(x, jnp.ones((2, 5, 1)))

    head = MapHead(WIDTH, HEADS, mlp_ratio=3.7362, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, WIDTH)), jnp.float32)
    merged, duplicated, sizes_ignored, sizes_one = (np.asarray(y) for y in pooled(head, x))
    assert rel_err(merged, duplicated) < 1e-5
    assert rel_err(sizes_ignored, duplicated) > 1e-3
    assert rel_err(sizes_one, sizes_ignored) < 1e-6  # r=0: every size 1 is big_vision's head


def test_tome_on_siglip_merges_every_token_and_pools_by_size(tower, images):
    model, forward = tower
    tome_jax.load_timm(model, two_tower(big_vision_image_tower()))
    reference = np.asarray(forward(jnp.asarray(images), r=0))
    tome_jax.apply_tome(model, r=8)
    assert model.token_counts() == [49, 41, 33]  # nothing protected: 49 patches, no class token
    embedding, info = nnx.jit(lambda m, x: m(x, return_info=True))(model, jnp.asarray(images))
    np.testing.assert_allclose(np.asarray(info["size"]).sum(axis=(1, 2)), 49)
    cosine = (np.asarray(embedding) * reference).sum(-1) / np.linalg.norm(embedding, axis=-1) / np.linalg.norm(
        reference, axis=-1)
    assert cosine.min() > 0.9, cosine
    flops = [tome_jax.count_flops(model, r) for r in (0, 8)]
    head_per_token = 2 * WIDTH * WIDTH + 2 * WIDTH  # the MAP head reads 16 tokens fewer at r=8
    assert flops[0] - flops[1] > 16 * head_per_token
    tome_jax.apply_tome(model, r=0)


def test_shipped_shapes_match_big_visions_so400m_and_b16(tmp_path):
    """So400m/14 at 384 px (width 1152, depth 27, mlp 4304, 16 heads, 27 x 27 patches of 384 px) and
    B/16 at 512: big_vision's key names and shapes convert onto the registered models' parameters."""
    shipped = {"vit_so400m_patch14_siglip_384": (384, 14, 1152, 4304, 16, 27),
               "vit_base_patch16_siglip_512": (512, 16, 768, 3072, 12, 32)}
    for name, (res, patch, width, mlp, heads, grid) in shipped.items():
        abstract = nnx.eval_shape(lambda: tome_jax.create_model(name, depth=1))
        assert abstract.pretrained_cfg["input_size"] == (res, res, 3) and abstract.grid_size == (grid, grid)
        expected = {timm_name(path): to_torch_layout(np.broadcast_to(np.float32(0), p.shape), path).shape
                    for path, p in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
        zeros = lambda *shape: np.broadcast_to(np.float32(0), shape)  # noqa: E731  (no memory)
        bv = {"params/img/embedding/kernel": zeros(patch, patch, 3, width), "params/img/embedding/bias": zeros(width),
              "params/img/pos_embedding": zeros(1, grid * grid, width), "params/txt/pos_embedding": zeros(1, 64, width)}
        for prefix in ("Transformer/encoderblock/", "MAPHead_0/"):  # SigLIP 2: scanned, depth first
            lead = (1,) if prefix.startswith("Transformer") else ()
            for n in ("query", "key", "value"):
                bv[f"params/img/{prefix}MultiHeadDotProductAttention_0/{n}/kernel"] = zeros(*lead, width, heads,
                                                                                            width // heads)
                bv[f"params/img/{prefix}MultiHeadDotProductAttention_0/{n}/bias"] = zeros(*lead, heads, width // heads)
            bv[f"params/img/{prefix}MultiHeadDotProductAttention_0/out/kernel"] = zeros(*lead, heads, width // heads,
                                                                                        width)
            bv[f"params/img/{prefix}MultiHeadDotProductAttention_0/out/bias"] = zeros(*lead, width)
            for ln in (("LayerNorm_0", "LayerNorm_1") if lead else ("LayerNorm_0",)):
                bv.update({f"params/img/{prefix}{ln}/scale": zeros(*lead, width),
                           f"params/img/{prefix}{ln}/bias": zeros(*lead, width)})
            bv.update({f"params/img/{prefix}MlpBlock_0/Dense_0/kernel": zeros(*lead, width, mlp),
                       f"params/img/{prefix}MlpBlock_0/Dense_0/bias": zeros(*lead, mlp),
                       f"params/img/{prefix}MlpBlock_0/Dense_1/kernel": zeros(*lead, mlp, width),
                       f"params/img/{prefix}MlpBlock_0/Dense_1/bias": zeros(*lead, width)})
        bv["params/img/MAPHead_0/probe"] = zeros(1, 1, width)
        bv.update({"params/img/Transformer/encoder_norm/scale": zeros(width),
                   "params/img/Transformer/encoder_norm/bias": zeros(width)})
        converted, layout, ignored = to_timm_state_dict(bv)
        assert layout.name == "big_vision" and ignored == ["txt/pos_embedding"]
        assert {k: v.shape for k, v in converted.items()} == expected, name


def test_eval_sweep_visualize_and_choose_r_on_a_siglip_tower(tmp_path):
    """eval.py's path (a recipe, big_vision weights with a classifier head, the r sweep), the merge
    picture (30 px: the 28 px the patches read) and choose_r, with 0 protected tokens."""
    from tests.train.test_loop import tiny_config
    from tome_jax.train import evaluate
    from tome_jax.visualize import merged_image

    path = tmp_path / "siglip_classifier.npz"
    np.savez(path, **{f"params/{k}": v for k, v in big_vision_image_tower(num_classes=10).items()})
    config = tiny_config()
    config.model_name = "vit_base_patch16_siglip_224"
    config.model = dict(num_classes=10, global_pool="map", drop_path_rate=0.0, **TINY)
    config.data.image_size = 30
    config.tome.r = 0
    model, origin = evaluate.load_model(config, None, str(path))
    assert model.gelu == "tanh" and model.attn_pool.mlp.gelu == "tanh" and origin == f"weights {path}"
    results = evaluate.sweep(config, model, [0, 8], batch_size=359, repeats=1)
    assert [row["tokens_out"] for row in results] == [49, 33] and results[0]["gflops"] > results[1]["gflops"]
    merged = merged_image(model, "astronaut", r=8)
    assert merged.picture.shape == (28, 28, 3) and merged.num_tokens == 33
    choice = tome_jax.choose_r(model, target_flops_ratio=0.7)
    assert choice.flops_ratio <= 0.7 and tome_jax.count_flops(model, choice.r) / tome_jax.count_flops(model, 0) <= 0.7
