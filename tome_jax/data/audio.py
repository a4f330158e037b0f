"""Audio sources: a folder of WAVs with a label CSV ("audiofolder") and synthetic multi-label clips
made with NumPy ("synthetic_audio", no download), as log-mel spectrograms [b, T, F, 1].

Each clip is mean-removed, turned into a Kaldi log-mel fbank (`tome_jax.data.fbank`, AudioMAE's front
end), zero-padded or cropped to `num_frames`, and on train batches SpecAugment-ed (masked values 0).
Batches leave the host as float32 raw log-mels; the device normalizes them with data.mean/std like
every input. AudioMAE's `(x - mean) / (2 std)` with AudioSet's statistics is data.mean =
(AUDIOSET_MEAN,), data.std = (2 * AUDIOSET_STD,). Labels are float32 multi-hot [b, K].
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import warnings

import numpy as np
from tqdm import tqdm

from tome_jax.data import transforms
from tome_jax.data.config import DataConfig
from tome_jax.data.fbank import SAMPLE_RATE, WINDOWS, fbank, pad_or_crop, spec_augment
from tome_jax.data.registry import Batch, DatasetNotFoundError, register_source
from tome_jax.data.wav import AudioReadError, probe_wav, read_wav

AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AudioMAE / AST norm_stats for AudioSet


# ----------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class AudioOptions:
    """The front end and SpecAugment, shared by the audio sources (`data.options`)."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 128
    num_frames: int = 1024  # pad / crop (AudioSet's 10 s clips give 998 frames)
    window: str = "hanning"  # AudioMAE / AST; Kaldi's own default is "povey"
    freq_mask: int = 48  # SpecAugment max widths (train only; AudioMAE's freqm / timem); 0 disables
    time_mask: int = 192

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ValueError(f"data.options.window must be one of {WINDOWS}, got {self.window!r}.")
        if self.num_frames <= 0 or self.num_mel_bins <= 0:
            raise ValueError("data.options.num_frames and num_mel_bins must be positive.")

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """waveform [N] -> raw log-mel [num_frames, num_mel_bins] (mean removed, fbank, pad / crop)."""
        wave = np.asarray(wave, np.float64)
        features = fbank(wave - wave.mean(), self.sample_rate, num_mel_bins=self.num_mel_bins, window=self.window)
        return pad_or_crop(features, self.num_frames)


@dataclasses.dataclass(frozen=True)
class AudioFolderOptions(AudioOptions):
    labels_csv: str = ""  # the class list ("" = <data_dir>/class_labels_indices.csv)


@dataclasses.dataclass(frozen=True)
class SyntheticAudioOptions(AudioOptions):
    clip_seconds: float = 10.0  # clip length
    num_clips: tuple[int, int] = (1024, 256)  # clips in "train", in any other split
    seed: int = 0  # which clips


# ----------------------------------------------------------------------------- batches


class LogMelBatches:
    """An audio source's ids -> {"image": float32 [b, T, F, 1] raw log-mels (SpecAugment zeros on
    train batches, keyed on (seed, epoch, id)), "label": float32 [b, K] multi-hot, "mask": bool [b]
    (False where a file failed to decode)}. Normalized on device with data.mean/std.

    The source gives `options` (an AudioOptions), `labels` [N, K] and `log_mel(i)` (raw log-mel
    [T, F], or None when the record cannot be read)."""

    def __init__(self, source, cfg: DataConfig):
        if cfg.channels != 1:
            raise ValueError(f"log-mel spectrograms have one channel: set data.mean/std to one value each, "
                             f"got mean={cfg.mean} (AudioMAE: mean=({AUDIOSET_MEAN},), std=(2 x {AUDIOSET_STD},)).")
        self.source = source

    def __call__(self, ids: np.ndarray, *, epoch: np.ndarray | None = None, seed: int = 0) -> Batch:
        a = self.source.options
        feats = np.zeros((len(ids), a.num_frames, a.num_mel_bins), np.float32)
        mask = np.ones(len(ids), bool)
        for row, i in enumerate(ids):
            x = self.source.log_mel(int(i))
            if x is None:
                mask[row] = False
            else:
                feats[row] = x
        if epoch is not None and (a.freq_mask > 0 or a.time_mask > 0):
            feats = spec_augment(feats, transforms.uniforms(seed, epoch, ids, 4), a.freq_mask, a.time_mask)
        return {"image": feats[..., None], "label": self.source.labels[ids], "mask": mask}


# ----------------------------------------------------------------------------- synthetic clips

SYNTHETIC_CLASSES = ("tone_low", "tone_mid", "tone_high", "whistle", "chirp_up", "chirp_down",
                     "noise_burst", "rumble", "clicks", "tremolo")


def _event(kind: int, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One sound of class `kind`, n samples, peak ~1."""
    t = np.arange(n) / sr
    jitter = rng.uniform(0.97, 1.03)
    if kind in (0, 1, 2):  # harmonic tones at class-specific pitches, decaying harmonics
        f0 = (200.0, 500.0, 1300.0)[kind] * jitter
        harmonics = [k for k in range(1, 7) if k * f0 < sr / 2]
        x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in harmonics)
    elif kind == 3:  # pure high tone
        x = np.sin(2 * np.pi * 3000.0 * jitter * t)
    elif kind in (4, 5):  # exponential chirps up / down between 300 Hz and 4 kHz
        f_start, f_end = (300.0, 4000.0) if kind == 4 else (4000.0, 300.0)
        k = np.log(f_end / f_start) / max(t[-1], 1e-3)
        x = np.sin(2 * np.pi * f_start * jitter * (np.exp(k * t) - 1) / k)
    elif kind == 6:  # broadband noise burst
        x = rng.standard_normal(n) * 0.5
    elif kind == 7:  # low rumble: noise smoothed by a ~5 ms moving average (energy below ~200 Hz)
        width = int(0.005 * sr)
        x = np.convolve(rng.standard_normal(n + width), np.ones(width) / np.sqrt(width), "valid")[:n]
    elif kind == 8:  # click train, 8-15 clicks per second
        x = np.zeros(n)
        period = int(sr / rng.uniform(8, 15))
        x[rng.integers(0, period)::period] = 1.0
        x = np.convolve(x, np.hanning(32), "same")
    else:  # tremolo: 800 Hz tone, 6 Hz amplitude modulation
        x = np.sin(2 * np.pi * 800.0 * jitter * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 6.0 * t))
    fade = min(int(0.01 * sr), n // 2)
    envelope = np.ones(n)
    envelope[:fade] = envelope[n - fade:][::-1] = np.linspace(0, 1, fade, endpoint=False)
    return x * envelope / max(np.abs(x).max(), 1e-6)


def synthetic_clip(rng: np.random.Generator, seconds: float, sample_rate: int = SAMPLE_RATE,
                   max_events: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A clip mixing 1..max_events distinct `SYNTHETIC_CLASSES` at random times, durations and levels
    over faint noise. -> (waveform float32 [N], multi-hot labels float32 [K])."""
    n = int(seconds * sample_rate)
    wave = rng.standard_normal(n) * 10 ** rng.uniform(-3.5, -2.5)
    labels = np.zeros(len(SYNTHETIC_CLASSES), np.float32)
    for kind in rng.choice(len(SYNTHETIC_CLASSES), rng.integers(1, max_events + 1), replace=False):
        length = int(rng.uniform(0.25, 0.6) * n)
        start = rng.integers(0, n - length + 1)
        wave[start:start + length] += 10 ** rng.uniform(-1.0, -0.3) * _event(int(kind), length, sample_rate, rng)
        labels[kind] = 1.0
    return wave.astype(np.float32), labels


# ----------------------------------------------------------------------------- sources


class SyntheticAudioSource:
    """Synthetic multi-label clips (`SYNTHETIC_CLASSES`), made with NumPy, no download.

    Clip i of a split is drawn from the generator seeded with (seed, split, i); the raw log-mels are
    computed once at construction and kept in memory (float32 [N, T, F])."""

    def __init__(self, split: str, options: SyntheticAudioOptions):
        self.options, self.split = options, split
        self.classes = SYNTHETIC_CLASSES
        self.num_classes = len(SYNTHETIC_CLASSES)
        count = options.num_clips[0] if split == "train" else options.num_clips[1]
        split_key = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
        feats, labels = [], []
        for i in tqdm(range(count), desc=f"synthetic clips ({split})", leave=False, disable=count < 256):
            wave, label = synthetic_clip(np.random.default_rng([options.seed, split_key, i]),
                                         options.clip_seconds, options.sample_rate)
            feats.append(options.log_mel(wave))
            labels.append(label)
        self.features = np.stack(feats)
        self.labels = np.stack(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def batch_reader(self, cfg: DataConfig) -> LogMelBatches:
        return LogMelBatches(self, cfg)

    def log_mel(self, i: int) -> np.ndarray:
        return self.features[i]


class AudioFolderSource:
    """A folder of WAVs with a label CSV (the layout for AudioSet, which TFDS does not have):

      <data_dir>/<split>/*.wav
      <data_dir>/<split>.csv              header "filename,labels"; labels comma-separated, e.g.
                                          "/m/09x0r,/m/05zppz" (mids or display names)
      <data_dir>/class_labels_indices.csv AudioSet's class list: "index,mid,display_name"

    Index time: rows whose file is missing, empty or unreadable are skipped, counted in
    `num_skipped` / `skipped` and reported with one warning; labels outside the class list are an
    error naming them (nothing is dropped silently). Load time: a file that fails to decode is logged
    and masked out of its batch. Other sample rates are resampled and stereo is mixed down (one note
    per source, with counts, at index time).
    """

    def __init__(self, data_dir: str, split: str, options: AudioFolderOptions):
        self.options, self.root = options, os.path.join(data_dir, split)
        table_path = os.path.join(data_dir, f"{split}.csv")
        classes_path = options.labels_csv or os.path.join(data_dir, "class_labels_indices.csv")
        for path in (self.root, table_path, classes_path):
            if not os.path.exists(path):
                raise DatasetNotFoundError(
                    f"{path!r} does not exist. Expected <data_dir>/{split}/*.wav, <data_dir>/{split}.csv "
                    "(filename,labels) and a class list <data_dir>/class_labels_indices.csv (index,mid,"
                    "display_name; or set data.options.labels_csv); or use the ':runlocal' variant, which "
                    "trains on synthetic clips.")
        self.classes, lookup = _read_classes(classes_path)
        self.num_classes = len(self.classes)
        paths, labels, skipped, unknown, notes = [], [], [], {}, {}
        with open(table_path, newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"filename", "labels"} <= set(reader.fieldnames):
                raise ValueError(f"{table_path!r} needs the header 'filename,labels', got {reader.fieldnames}.")
            for line, row in enumerate(reader, start=2):
                names = [n.strip() for n in row["labels"].split(",") if n.strip()]
                bad = [n for n in names if n not in lookup]
                for n in bad:
                    unknown.setdefault(n, []).append(f"{row['filename']} (line {line})")
                path = os.path.join(self.root, row["filename"])
                problem, info = probe_wav(path, options.sample_rate)
                if problem:
                    skipped.append(f"{path}: {problem}")
                    continue
                for note in info:
                    notes[note] = notes.get(note, 0) + 1
                target = np.zeros(self.num_classes, np.float32)
                target[[lookup[n] for n in names if n in lookup]] = 1.0
                paths.append(path)
                labels.append(target)
        if unknown:
            shown = "; ".join(f"{n!r} in {', '.join(w[:3])}" for n, w in list(unknown.items())[:5])
            raise ValueError(
                f"{table_path}: {len(unknown)} label(s) are not in the class list {classes_path} "
                f"({self.num_classes} classes): {shown}. Add them to the class list or fix the rows.")
        if not paths:
            raise DatasetNotFoundError(f"no readable WAV files listed in {table_path!r} "
                                       f"({len(skipped)} skipped, e.g. {skipped[:3]}).")
        self.paths, self.labels, self.skipped = tuple(paths), np.stack(labels), tuple(skipped)
        self.notes = notes
        if skipped:
            warnings.warn(f"AudioFolderSource({self.root!r}): skipped {len(skipped)} empty or unreadable "
                          f"file(s), e.g. {skipped[:3]}.", stacklevel=2)
        if notes:
            warnings.warn(f"AudioFolderSource({self.root!r}): " + "; ".join(
                f"{note} for {count} file(s)" for note, count in sorted(notes.items())) + ".", stacklevel=2)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.labels)

    def batch_reader(self, cfg: DataConfig) -> LogMelBatches:
        return LogMelBatches(self, cfg)

    def log_mel(self, i: int) -> np.ndarray | None:
        try:
            wave, _ = read_wav(self.paths[i], self.options.sample_rate)
        except AudioReadError as e:
            logging.warning("%s; masking it out of its batch.", e)
            return None
        return self.options.log_mel(wave)


def _read_classes(path: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """class_labels_indices.csv -> (display names by index, {mid or display name: index})."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "mid"} <= set(rows[0]):
        raise ValueError(f"{path!r} needs the header 'index,mid,display_name' (AudioSet's class_labels_indices.csv).")
    rows.sort(key=lambda r: int(r["index"]))
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path!r}: indices must be 0..{len(rows) - 1} without gaps.")
    names = tuple(r.get("display_name") or r["mid"] for r in rows)
    lookup = {r["mid"]: i for i, r in enumerate(rows)}
    lookup.update({name: i for i, name in enumerate(names) if name not in lookup})
    return names, lookup


# ----------------------------------------------------------------------------- registrations


@register_source("synthetic_audio", options=SyntheticAudioOptions)
def _synthetic_audio(cfg: DataConfig, split: str) -> SyntheticAudioSource:
    return SyntheticAudioSource(split, cfg.options)


@register_source("audiofolder", options=AudioFolderOptions)
def _audio_folder(cfg: DataConfig, split: str) -> AudioFolderSource:
    if not cfg.data_dir:
        raise ValueError("data.name='audiofolder' needs data.data_dir (the folder holding <split>/ and <split>.csv).")
    return AudioFolderSource(cfg.data_dir, split, cfg.options)
