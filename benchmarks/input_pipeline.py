"""Input pipeline speed: images per CPU-second of the exact train / eval iterators, and where it goes.

    python benchmarks/input_pipeline.py --images 1000 --batch 64 --rounds 3

1. Makes (or reuses, in --data-dir) a folder of ImageNet-like JPEGs cut from the real photographs
   that scikit-image ships (random crops, resized to ~0.2 MP, aspect 3:4..4:3, JPEG q90, so every file
   differs), in imagefolder layout (10 classes), and the same files as a TFDS ArrayRecord dataset
   (the JPEG bytes stored as they are).
2. Iterators: `tome_jax.data.make_dataset` exactly as `train_and_evaluate` builds it (ImageNet recipe
   geometry: 224 px, crop scale 0.08-1, ratio 3/4-4/3, flip, bicubic; eval center crop 0.875), for
   each setting below. Per candidate and round: a fresh iterator, `--warmup` batches, wait until the
   process is idle (prefetch buffers full), then `--batches` batches, wait until idle again. Between
   the two idle points the pipeline produced exactly the consumed batches, so
   "images/s per core" = images / CPU seconds of the process (all its threads, and its grain worker
   processes), i.e. images per CPU-second: the machine may be shared, so wall time is no per-core
   measure and is not reported. Candidates run interleaved (round k runs each once); medians.
3. Stages: each step timed alone per image (process CPU time, `tome_jax.timing.time_interleaved`).

Run from the repository root. `--legacy-tree DIR` imports `tome_jax` from DIR first (e.g. an older
checkout, `git archive <commit> tome_jax | tar -x -C DIR`) and runs the candidates its config knows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="/tmp/tome_jax_bench_jpegs", help="made once, then reused")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2, help="batches before the timed ones")
    p.add_argument("--batches", type=int, default=8, help="timed batches per candidate and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="", help="semicolon-separated candidate names (default: all)")
    p.add_argument("--no-stages", action="store_true")
    p.add_argument("--legacy-tree", default="", help="import tome_jax from this directory first")
    p.add_argument("--json", default="", metavar="PATH", help="also write the tables as JSON, e.g. "
                   "benchmarks/results/input_pipeline.json (see benchmarks/common.py: add_json_arg)")
    return p.parse_args(argv)


ARGS = parse_args()
sys.path.insert(0, ROOT)
if ARGS.legacy_tree:
    sys.path.insert(0, os.path.abspath(ARGS.legacy_tree))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from tome_jax import runtime  # noqa: E402
from tome_jax import data  # noqa: E402
from tome_jax.timing import time_interleaved  # noqa: E402

from benchmarks.common import Report  # noqa: E402

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "motorcycle_right.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
RECIPE = dict(image_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bicubic",
              crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=True, crop_pct=0.875)
# name -> (config overrides, tfds?, train?)
CANDIDATES = {
    "pil, threads 16, prefetch 4 (recipe)": dict(image_backend="pil", num_threads=16, prefetch_batches=4),
    "pil, threads auto": dict(image_backend="pil"),
    "opencv, threads 16, prefetch 4 (recipe)": dict(image_backend="opencv", num_threads=16, prefetch_batches=4),
    "opencv, threads 1": dict(image_backend="opencv", num_threads=1, prefetch_batches=2),
    "opencv, threads auto": dict(image_backend="opencv"),
    "opencv, 2 worker processes": dict(image_backend="opencv", num_threads=1, prefetch_batches=2, worker_count=2),
    "opencv, threads auto, tfds ArrayRecord": dict(image_backend="opencv", tfds=True),
    "legacy: threads 16, prefetch 4": dict(num_threads=16, prefetch_batches=4),
    "legacy: threads 2, prefetch 2": dict(num_threads=2, prefetch_batches=2),
}


# ----------------------------------------------------------------------------- the files


def make_jpegs(root: str, n: int) -> str:
    """root/train/c<k>/<i>.jpg: n ImageNet-like JPEGs from scikit-image's photographs. Returns root."""
    import skimage  # pylint: disable=g-import-not-at-top

    marker = os.path.join(root, f"done_{n}")
    if os.path.exists(marker):
        return root
    photo_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = [np.asarray(Image.open(os.path.join(photo_dir, f)).convert("RGB")) for f in PHOTOS]
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        long = rng.uniform(450, 560)
        short = long * rng.uniform(0.66, 1.0)
        tw, th = (int(long), int(short)) if rng.random() < 0.6 else (int(short), int(long))
        frac = rng.uniform(min(1.0, tw * th / (h * w)), 1.0)  # As little upsampling as the photo allows.
        cw = min(w, int(np.sqrt(frac * h * w * tw / th)))
        ch = min(h, int(np.sqrt(frac * h * w * th / tw)))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        image = Image.fromarray(photo[y : y + ch, x : x + cw]).resize((tw, th), Image.Resampling.BICUBIC)
        folder = os.path.join(root, "train", f"c{i % 10}")
        os.makedirs(folder, exist_ok=True)
        image.save(os.path.join(folder, f"{i:05d}.jpg"), "JPEG", quality=90)
    make_tfds(root)
    open(marker, "w").close()
    return root


def make_tfds(root: str) -> None:
    """The same JPEG files as a TFDS ArrayRecord dataset `bench_jpegs` under root/tfds."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    files = sorted((os.path.join(d, f), int(os.path.basename(d)[1:]))
                   for d, _, fs in os.walk(os.path.join(root, "train")) for f in fs)

    class BenchJpegs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(num_classes=10)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for path, label in files:  # A path: TFDS stores the file's bytes as they are.
                yield path, {"image": path, "label": label}

    BenchJpegs(data_dir=os.path.join(root, "tfds"), file_format="array_record").download_and_prepare()


# ----------------------------------------------------------------------------- iterators


def cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds of this process and its live children (grain workers)."""
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def wait_idle(proc: psutil.Process, quiet: float = 0.003, period: float = 0.1, timeout: float = 30) -> None:
    """Until the process (with children) used < `quiet` CPU seconds in `period` seconds."""
    end = time.time() + timeout
    last = cpu_seconds(proc)
    while time.time() < end:
        time.sleep(period)
        now = cpu_seconds(proc)
        if now - last < quiet:
            return
        last = now


def candidate_config(root: str, overrides: dict) -> dict | None:
    known = {f.name for f in dataclasses.fields(data.DataConfig)}
    overrides = dict(overrides)
    use_tfds = overrides.pop("tfds", False)
    # Files were written by this script: skip PIL's per-file verify (trees before typed source
    # options spelled it data.verify_images).
    skip_verify = dict(options=dict(verify=False)) if "options" in known else dict(verify_images=False)
    cfg = dict(RECIPE, name="imagefolder", data_dir=root, **skip_verify) | overrides
    if use_tfds:
        cfg = {k: v for k, v in cfg.items() if k not in skip_verify}
        cfg.update(name="bench_jpegs", data_dir=os.path.join(root, "tfds"))
    return cfg if set(cfg) <= known else None


def run_once(cfg: dict, source, *, train: bool, batch: int, warmup: int, batches: int) -> float:
    """CPU seconds for `batches` batches after `warmup`, between idle points (full prefetch buffers)."""
    proc = psutil.Process()
    ds = data.make_dataset(cfg, "train", global_batch_size=batch, train=train, seed=0,
                           shard_index=0, shard_count=1, source=source)
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    wait_idle(proc)
    cpu0 = cpu_seconds(proc)
    for _ in range(batches):
        b = next(it)
    wait_idle(proc)
    cpu = cpu_seconds(proc) - cpu0
    assert b["image"].shape == (batch, 224, 224, 3)
    del it
    return cpu


def bench_iterators(args, root: str) -> list[list]:
    names = [n for n in CANDIDATES if not args.only or n in args.only.split(";")]
    legacy = bool(args.legacy_tree)
    names = [n for n in names if n.startswith("legacy") == legacy]
    configs = {n: candidate_config(root, CANDIDATES[n]) for n in names}
    configs = {n: c for n, c in configs.items() if c is not None}
    sources = {}  # One indexed source per dataset, shared by its candidates (as train_and_evaluate does).
    for cfg in configs.values():
        key = (cfg["name"], cfg["data_dir"])
        if key not in sources:
            sources[key] = data.make_source(cfg, "train")
    results = {(n, t): [] for n in configs for t in (True, False)}
    eval_batches = min(args.batches, args.images // args.batch - args.warmup)
    for r in range(args.rounds):
        for n, cfg in configs.items():
            source = sources[(cfg["name"], cfg["data_dir"])]
            for train in (True, False):
                if not train and cfg.get("worker_count", 0) > 0:
                    continue  # Workers prefetch most of the eval split before the first idle point.
                k = args.batches if train else eval_batches
                cpu = run_once(cfg, source, train=train, batch=args.batch, warmup=args.warmup, batches=k)
                results[(n, train)].append(k * args.batch / cpu)
                print(f"round {r} {n:45s} {'train' if train else 'eval '}: {k * args.batch / cpu:7.0f} img/CPU-s",
                      flush=True)
    rows = []
    for n in configs:
        tr, ev = results[(n, True)], results[(n, False)]
        rows.append([n, f"{statistics.median(tr):.0f}", f"{min(tr):.0f}-{max(tr):.0f}",
                     f"{statistics.median(ev):.0f}" if ev else "n/a", f"{min(ev):.0f}-{max(ev):.0f}" if ev else ""])
    return rows


# ----------------------------------------------------------------------------- stages


def bench_stages(root: str, n: int = 200) -> list[list]:
    import cv2  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top

    from tome_jax.data import codecs, transforms  # pylint: disable=g-import-not-at-top

    paths = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "train")) for f in fs)[:n]
    blobs = [open(p, "rb").read() for p in paths]
    pil, ocv = codecs.make_backend("pil", 3, "bicubic"), codecs.make_backend("opencv", 3, "bicubic")
    pil_images, ocv_images = [pil.decode(b) for b in blobs], [ocv.decode(b) for b in blobs]
    hw = np.asarray([ocv.size(a) for a in ocv_images])
    u = transforms.uniforms(0, np.zeros(n), np.arange(n), 5)
    train_boxes = transforms.snap_boxes(
        transforms.random_resized_crop_boxes(u[:, :4], hw[:, 0], hw[:, 1], (0.08, 1.0), (3 / 4, 4 / 3)), hw[:, 0], hw[:, 1])
    eval_boxes = transforms.snap_boxes(transforms.center_crop_boxes(hw[:, 0], hw[:, 1], 0.875), hw[:, 0], hw[:, 1])
    batch_u8 = np.stack([ocv.crop_resize(a, b, 224) for a, b in zip(ocv_images, train_boxes)])
    flip = u[:, 4] < 0.5
    mean, std = RECIPE["mean"], RECIPE["std"]
    normalize = jax.jit(lambda x: data.normalize(x, mean, std))

    def host_float_path():  # What the float pipeline did on the host after resizing.
        x = batch_u8.astype(np.float32) * np.float32(1 / 255)
        x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
        out = np.empty_like(x)
        for c in range(3):
            np.multiply(x[..., c] - np.float32(mean[c]), np.float32(1 / std[c]), out=out[..., c])
        return out

    stages = {
        "read file": lambda: [open(p, "rb").read() for p in paths],
        "decode, PIL": lambda: [pil.decode(b) for b in blobs],
        "decode, OpenCV": lambda: [ocv.decode(b) for b in blobs],
        "crop + resize train, PIL bicubic": lambda: [pil.crop_resize(a, b, 224) for a, b in zip(pil_images, train_boxes)],
        "crop + resize train, OpenCV": lambda: [ocv.crop_resize(a, b, 224) for a, b in zip(ocv_images, train_boxes)],
        "crop + resize eval, PIL bicubic": lambda: [pil.crop_resize(a, b, 224) for a, b in zip(pil_images, eval_boxes)],
        "crop + resize eval, OpenCV": lambda: [ocv.crop_resize(a, b, 224) for a, b in zip(ocv_images, eval_boxes)],
        "flip, uint8 NumPy (in-memory arrays)": lambda: transforms.hflip(batch_u8, flip),
        "flip, OpenCV (files; in crop_resize)": lambda: [cv2.flip(a, 1) for a, f in zip(batch_u8, flip) if f],
        "float path: float32, np.where flip, normalize (host)": host_float_path,
        "normalize on device (jit, this CPU)": lambda: jax.block_until_ready(normalize(batch_u8)),
    }
    stats = time_interleaved(stages, repeats=5, warmup=1)
    return [[name, f"{1e3 * s.cpu_median / n:.3f}", f"{1e3 * s.median / n:.3f}"] for name, s in stats.items()]


def main(args):
    runtime.configure()  # allocator, quiet logs, compilation cache (as train.py)
    from absl import flags  # pylint: disable=g-import-not-at-top

    flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags (train.py parses them).
    root = make_jpegs(args.data_dir, args.images)
    files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "train")) for f in fs]
    sizes = [os.path.getsize(f) for f in files]
    mp = [np.prod(Image.open(f).size) / 1e6 for f in files[:200]]
    report = Report()
    print("\n".join(report.machine))
    print(f"package: {data.__file__}")
    print(f"files: {len(files)} JPEGs q90 in {root}, mean {np.mean(sizes) / 1e3:.0f} KB, "
          f"mean {np.mean(mp):.2f} MP; batch {args.batch}, warmup {args.warmup}, timed {args.batches} batches, "
          f"{args.rounds} rounds; usable cores {len(os.sched_getaffinity(0))}")
    rows = bench_iterators(args, root)
    print()
    print(report.table("iterators", ["setting", "train img/s per core", "train range", "eval img/s per core",
                                     "eval range"], rows))
    if not args.no_stages and not args.legacy_tree:
        print()
        print(report.table("stages", ["stage (per image)", "CPU ms", "wall ms"], bench_stages(root)))
    report.write(args.json)


if __name__ == "__main__":
    main(ARGS)
