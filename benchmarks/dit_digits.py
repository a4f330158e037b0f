"""The DiT digits demo: samples per tomesd merge ratio, their speed and a quality figure (docs/dense.md).

    python train.py --config configs/dit_tome.py:runlocal --workdir runs/dit
    python benchmarks/dit_digits.py --config configs/dit_tome.py:runlocal --workdir runs/dit \
        --json benchmarks/results/dit_digits.json --png docs/img/dit_samples.png

Loads the run's latest checkpoint (EMA parameters when the recipe keeps them; with no checkpoint in
the workdir it trains the recipe first). For every ratio in `config.sampling.ratios` (tomesd's: r =
merge.ratio_r(tokens, ratio) tokens merged in every block, random destinations per step) it samples
`samples_per_class` images of each digit with DDIM (`config.sampling`: steps, classifier-free
guidance), all ratios from the same starting noise, compiled once per ratio, timed interleaved
(`tome_jax.timing`, compile excluded).

Quality: FID on a digit classifier's features. The classifier is a one-hidden-layer MLP (scikit-learn
`MLPClassifier`, 64 ReLU units, seed 0) trained here on the digits' train split as the model sees them
(16x16, values in [-1, 1]); its features are the hidden layer, h = relu(x W1 + b1). FID between two
sets of features with means mu_a, mu_b and covariances S_a, S_b is
    |mu_a - mu_b|^2 + trace(S_a + S_b - 2 sqrtm(S_a S_b))
(scipy.linalg.sqrtm, real part). The reference set is the digits' test split (359 images); the table
also gives the train split against it (the floor: real digits vs real digits), and the classifier's
accuracy on the samples against the labels they were conditioned on.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import Report, add_json_arg  # noqa: E402
from tome_jax import data as data_lib  # noqa: E402
from tome_jax import merge, runtime, timing  # noqa: E402
from tome_jax.cli import load_recipe  # noqa: E402


def split_images(data_cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split as the model sees it at eval (the pipeline's resize, normalized): ([N, H, W, C], [N])."""
    dataset = data_lib.make_dataset(data_cfg, split, global_batch_size=256, train=False, seed=0)
    images, labels = [], []
    for batch in dataset:
        keep = np.asarray(batch["mask"], bool)
        images.append(np.asarray(data_lib.normalize(batch["image"], data_cfg.mean, data_cfg.std))[keep])
        labels.append(np.asarray(batch["label"])[keep])
    return np.concatenate(images), np.concatenate(labels)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance of two feature sets [N, D] (the formula in the module docstring)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class DigitFeatures:
    """The feature network of the FID: an MLP classifier trained on the real digits."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from sklearn.neural_network import MLPClassifier

        self.net = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0)
        self.net.fit(images.reshape(len(images), -1), labels)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        flat = np.asarray(images, np.float64).reshape(len(images), -1)
        return np.maximum(flat @ self.net.coefs_[0] + self.net.intercepts_[0], 0.0)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float((self.net.predict(np.asarray(images).reshape(len(images), -1)) == labels).mean())


def main(argv=None):
    runtime.configure()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/dit_tome.py:runlocal")
    p.add_argument("--workdir", required=True)
    p.add_argument("--repeats", type=int, default=2, help="timed sampling rounds per ratio")
    p.add_argument("--png", default="", help="the sample grid (one panel per ratio)")
    add_json_arg(p, "dit_digits.json")
    args = p.parse_args(argv)

    from tome_jax import count_flops
    from tome_jax.models import diffusion
    from tome_jax.train import checkpoint, evaluate, loop
    from tome_jax.train import workdir as workdir_lib

    config = load_recipe(args.config)
    ckpt = checkpoint.Checkpointer(workdir_lib.resolve(args.workdir) / "checkpoints", keep=1, create=True)
    trained = ckpt.latest_step() is not None
    ckpt.close()
    if not trained:
        loop.train_and_evaluate(config, args.workdir)
    model, origin = evaluate.load_model(config, args.workdir, None)
    sampling = config.sampling
    data_cfg = data_lib.resolve_config(config.data)

    real_test, test_labels = split_images(data_cfg, data_cfg.split_eval)
    real_train, train_labels = split_images(data_cfg, data_cfg.split_train)
    features = DigitFeatures(real_train, train_labels)
    test_features = features(real_test)

    per_class = sampling.samples_per_class
    labels = jnp.asarray(np.repeat(np.arange(model.num_classes), per_class), jnp.int32)
    noise = jax.random.normal(jax.random.key(config.seed), (len(labels), model.input_size, model.input_size,
                                                            model.in_channels))
    key = jax.random.key(config.seed + 1)
    candidates, samples, flops = {}, {}, {}
    model.method = "random"
    for ratio in sampling.ratios:
        model.r = merge.ratio_r(model.num_patches, ratio)
        run, state = diffusion.sampler(model, sample_steps=sampling.sample_steps, guidance=sampling.guidance,
                                       clip=sampling.clip)
        compiled = run.lower(state, noise, labels, key).compile()
        per_call = sampling.sample_steps * (2 if sampling.guidance != 1.0 else 1)
        flops[ratio] = count_flops(model) * per_call

        def sample(ratio=ratio, compiled=compiled, state=state):
            samples[ratio] = jax.block_until_ready(compiled(state, noise, labels, key))
            return samples[ratio]

        candidates[ratio] = sample
    stats = timing.time_interleaved(candidates, repeats=args.repeats, warmup=1)

    report = Report()
    print("\n".join(report.machine))
    header = ["ratio", "r per block", "tokens in attention / MLP", "GFLOPs / sample", "FLOPs vs 0",
              "images/s", "speedup", "FID (test split)", "classifier accuracy %"]
    rows, base = [], stats[sampling.ratios[0]].median
    for ratio in sampling.ratios:
        r = merge.ratio_r(model.num_patches, ratio)
        images = np.asarray(samples[ratio])
        rows.append([f"{ratio:g}", r, model.token_counts(r)[0], f"{flops[ratio] / 1e9:.3f}",
                     f"{flops[ratio] / flops[sampling.ratios[0]]:.3f}", f"{len(labels) / stats[ratio].median:.1f}",
                     f"{base / stats[ratio].median:.2f}", f"{fid(features(images), test_features):.2f}",
                     f"{100 * features.accuracy(images, np.asarray(labels)):.1f}"])
    rows.append(["train split (real)", "-", "-", "-", "-", "-", "-", f"{fid(features(real_train), test_features):.2f}",
                 f"{100 * features.accuracy(real_train, train_labels):.1f}"])
    print(report.table("samples", header, rows, align="l" + "r" * 8))
    print(report.note("samples", f"{origin}; {len(labels)} samples per ratio ({per_class} per digit), DDIM "
                                 f"{sampling.sample_steps} steps, guidance {sampling.guidance:g}, the same "
                                 f"noise for every ratio; random destinations; images/s from the median of "
                                 f"{args.repeats} interleaved rounds."))
    report.write(args.json)

    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = min(per_class, 8)
        fig, axes = plt.subplots(1, len(sampling.ratios), figsize=(2.6 * len(sampling.ratios), 3.4), squeeze=False)
        for ax, ratio, row in zip(axes[0], sampling.ratios, rows):
            images = np.asarray(samples[ratio])[..., 0].reshape(model.num_classes, per_class, model.input_size,
                                                                 model.input_size)[:, :shown]
            grid = images.transpose(0, 2, 1, 3).reshape(model.num_classes * model.input_size, shown * model.input_size)
            ax.imshow(grid, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_title(f"ratio {ratio:g} (r={row[1]})\nFID {row[7]}", fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        fig.savefig(args.png, dpi=100)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
