"""Audio input: waveform -> Kaldi-style log-mel fbank (as AudioMAE / AST), SpecAugment, WAV reading,
synthetic multi-label clips and two sources (a folder of WAVs + label CSV; synthetic clips).

Front end (`fbank`) = `torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True,
sample_frequency=16000, use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0,
frame_shift=10)` as AudioMAE's and AST's `dataset.py` call it, re-implemented in NumPy (float64) and
checked against torchaudio in tests/data/test_audio.py (golden fixture, made by
tests/fixtures/make_audio_fixture.py): frames of 25 ms every 10 ms (snip_edges), per-frame DC
removal, pre-emphasis 0.97, the window, zero-padding to 512, power spectrum, 128 triangular filters
on Kaldi's mel scale (20 Hz .. Nyquist), log with a float32-epsilon floor. No well-kept library
computes Kaldi's fbank without torch (librosa uses centred STFT frames and Slaney mels), so the
arithmetic is ours and SciPy does the file I/O and the resampling.

Then, as AudioMAE's dataset: zero-pad / crop to `num_frames`, SpecAugment (train only; torchaudio's
FrequencyMasking / TimeMasking semantics, masked values set to 0 before normalization) and
`(x - mean) / (2 * std)` with the dataset's statistics (AudioSet: -4.2677393, 4.5689974).
Layout: [T, F] (time-major) per clip, [B, T, F, 1] per batch, i.e. AudioMAE's 1024 x 128 "image".
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm import tqdm

from tome_jax.data import transforms

SAMPLE_RATE = 16000
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AudioMAE / AST norm_stats for AudioSet
_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (torchaudio's _get_epsilon in float32)
_WINDOWS = ("hanning", "povey", "hamming", "rectangular")


# ----------------------------------------------------------------------------- the front end


def mel_scale(freq):
    """Kaldi's mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> np.ndarray:
    """Kaldi's triangular mel filters: [num_bins, n_fft // 2 + 1] (the Nyquist column is 0).

    Computed in float32 with torchaudio's order of operations (`kaldi.get_mel_banks` builds them in
    float32 whatever the waveform's dtype): near a triangle's edge float32 rounding moves a weight by
    up to 1.4e-5, which leaks a loud neighbouring FFT bin into a quiet filter; matching it keeps us
    within 5e-5 of torchaudio's float64 fbank. high_freq <= 0 counts down from Nyquist (Kaldi's rule).
    Returned as float64 (read-only; cached)."""
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0 else high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist}), got {low_freq}, {high}.")
    f32 = np.float32
    mel_low, mel_high = float(mel_scale(low_freq)), float(mel_scale(high))
    delta = f32((mel_high - mel_low) / (num_bins + 1))
    index = np.arange(num_bins, dtype=f32)[:, None]
    left = f32(mel_low) + index * delta
    center = f32(mel_low) + (index + f32(1)) * delta
    right = f32(mel_low) + (index + f32(2)) * delta
    freqs = f32(sample_rate / n_fft) * np.arange(n_fft // 2, dtype=f32)
    mel = (f32(1127) * np.log(f32(1) + freqs / f32(700)))[None, :]
    banks = np.maximum(f32(0), np.minimum((mel - left) / (center - left), (right - mel) / (right - center)))
    banks = np.concatenate([banks, np.zeros((num_bins, 1), f32)], axis=1).astype(np.float64)
    banks.flags.writeable = False  # shared by the cache
    return banks


@functools.lru_cache(maxsize=16)
def _sparse_banks(num_bins: int, n_fft: int, sample_rate: float, low_freq: float, high_freq: float):
    """`mel_banks` as a SciPy CSR matrix: each FFT bin feeds at most two filters, and a dense matmul
    this small is dominated by BLAS thread start-up on a busy machine (30 ms vs 0.2 ms)."""
    from scipy import sparse  # pylint: disable=g-import-not-at-top

    return sparse.csr_matrix(mel_banks(num_bins, n_fft, sample_rate, low_freq, high_freq))


def window_function(kind: str, size: int) -> np.ndarray:
    """Kaldi's analysis windows (symmetric): hanning, povey (= hanning ** 0.85), hamming, rectangular."""
    n = np.arange(size)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (size - 1))
    if kind == "hanning":
        return hann
    if kind == "povey":
        return hann**0.85
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * n / (size - 1))
    if kind == "rectangular":
        return np.ones(size)
    raise ValueError(f"window must be one of {_WINDOWS}, got {kind!r}.")


def fbank(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, *, num_mel_bins: int = 128,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
          preemphasis: float = 0.97, low_freq: float = 20.0, high_freq: float = 0.0,
          remove_dc_offset: bool = True, dither: float = 0.0, rng: np.random.Generator | None = None
          ) -> np.ndarray:
    """Kaldi log-mel filterbank. waveform: float [N] (one channel, any scale) -> float32 [T, num_mel_bins]
    with T = 1 + (N - frame_length) // frame_shift (Kaldi's snip_edges); T = 0 when N < one frame.

    dither > 0 adds Gaussian noise of that std to every frame sample (Kaldi's training-time dither;
    AudioMAE uses 0), drawn from `rng`."""
    wave = np.asarray(waveform, np.float64)
    if wave.ndim != 1:
        raise ValueError(f"fbank takes one channel [N], got shape {wave.shape}; mix down first (read_wav does).")
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    n_fft = 1 << (size - 1).bit_length()  # round_to_power_of_two
    if len(wave) < size:
        return np.zeros((0, num_mel_bins), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wave, size)[::shift]  # [T, size]
    if dither > 0:
        frames = frames + dither * (rng or np.random.default_rng()).standard_normal(frames.shape)
    if remove_dc_offset:
        frames = frames - frames.mean(axis=1, keepdims=True)
    if preemphasis:
        frames = np.concatenate([frames[:, :1] * (1 - preemphasis), frames[:, 1:] - preemphasis * frames[:, :-1]], 1)
    frames = frames * window_function(window, size)
    power = np.abs(np.fft.rfft(frames, n=n_fft)) ** 2  # [T, n_fft // 2 + 1]
    energies = (_sparse_banks(num_mel_bins, n_fft, float(sample_rate), low_freq, high_freq) @ power.T).T
    return np.log(np.maximum(energies, _EPS)).astype(np.float32)


def pad_or_crop(features: np.ndarray, num_frames: int) -> np.ndarray:
    """[T, F] -> [num_frames, F]: zero rows appended (AudioMAE pads the log-mel with 0) or the tail cut."""
    t = features.shape[0]
    if t >= num_frames:
        return features[:num_frames]
    return np.concatenate([features, np.zeros((num_frames - t, features.shape[1]), features.dtype)])


def normalize(features: np.ndarray, mean: float, std: float) -> np.ndarray:
    """AudioMAE / AST normalization: (x - mean) / (2 * std)."""
    return ((features - mean) / (2.0 * std)).astype(np.float32)


def spec_augment(features: np.ndarray, u: np.ndarray, freq_mask: int, time_mask: int) -> np.ndarray:
    """One frequency and one time mask per example, set to 0, as torchaudio's FrequencyMasking /
    TimeMasking: width = u0 * max_width, start = u1 * (size - width), masked rows
    [int(start), int(start) + int(width)).

    features: [b, T, F]; u: uniforms [b, 4] (two per mask); a max width of 0 disables that mask.
    Returns a masked copy."""
    b, t, f = features.shape

    def inside(uw, us, size, width_max):
        if width_max <= 0:
            return np.zeros((b, size), bool)
        width = uw * width_max
        start = (us * (size - width)).astype(np.int64)
        pos = np.arange(size)[None, :]
        return (pos >= start[:, None]) & (pos < (start + width.astype(np.int64))[:, None])

    masked = inside(u[:, 0], u[:, 1], f, freq_mask)[:, None, :] | inside(u[:, 2], u[:, 3], t, time_mask)[:, :, None]
    return np.where(masked, np.float32(0), features).astype(features.dtype)


# ----------------------------------------------------------------------------- files


class AudioReadError(ValueError):
    """A WAV file is empty or unreadable."""


def read_wav(path: str, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, list[str]]:
    """A WAV file as float32 mono [N] at `sample_rate`, and notes on what was converted.

    Integer PCM is scaled as torchaudio.load does (int16 / 2**15, int32 / 2**31, uint8 (x - 128) / 128);
    several channels are averaged ("mixed down"); another rate is resampled with SciPy's polyphase
    filter (`resample_poly`). Raises AudioReadError for unreadable or empty files."""
    from scipy.io import wavfile  # pylint: disable=g-import-not-at-top
    from scipy.signal import resample_poly  # pylint: disable=g-import-not-at-top

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks, e.g. LIST
            rate, data = wavfile.read(path)
    except (OSError, ValueError, EOFError) as e:
        raise AudioReadError(f"cannot read WAV {path!r}: {e}") from e
    if data.size == 0:
        raise AudioReadError(f"WAV {path!r} has no samples.")
    notes = []
    if data.dtype == np.uint8:
        wave = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        wave = data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    else:
        wave = data.astype(np.float32)
    if wave.ndim == 2:
        notes.append(f"mixed {wave.shape[1]} channels down to mono")
        wave = wave.mean(axis=1)
    if rate != sample_rate:
        g = math.gcd(int(rate), sample_rate)
        wave = resample_poly(wave, sample_rate // g, int(rate) // g).astype(np.float32)
        notes.append(f"resampled {rate} Hz -> {sample_rate} Hz")
    return wave, notes


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


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """`config.data.audio`: the front end, the clip length, SpecAugment and the synthetic clips."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = 128
    num_frames: int = 1024  # pad / crop (AudioSet's 10 s clips give 998 frames)
    window: str = "hanning"  # AudioMAE / AST; Kaldi's own default is "povey"
    mean: float = AUDIOSET_MEAN  # the dataset's log-mel statistics; normalized as (x - mean) / (2 std)
    std: float = AUDIOSET_STD
    freq_mask: int = 48  # SpecAugment max widths (train only; AudioMAE's freqm / timem); 0 disables
    time_mask: int = 192
    labels_csv: str = ""  # audiofolder: the class list ("" = <data_dir>/class_labels_indices.csv)
    clip_seconds: float = 10.0  # synthetic_audio: clip length
    num_clips: tuple[int, int] = (1024, 256)  # synthetic_audio: clips in "train", in any other split
    seed: int = 0  # synthetic_audio: which clips

    def __post_init__(self):
        if self.window not in _WINDOWS:
            raise ValueError(f"data.audio.window must be one of {_WINDOWS}, got {self.window!r}.")
        if self.num_frames <= 0 or self.num_mel_bins <= 0 or self.std <= 0:
            raise ValueError("data.audio.num_frames, num_mel_bins and std must be positive.")

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """waveform [N] -> raw log-mel [num_frames, num_mel_bins] (mean removed, fbank, pad / crop)."""
        wave = np.asarray(wave, np.float64)
        features = fbank(wave - wave.mean(), self.sample_rate, num_mel_bins=self.num_mel_bins, window=self.window)
        return pad_or_crop(features, self.num_frames)


def audio_config(cfg: Mapping[str, Any] | AudioConfig | None) -> AudioConfig:
    """A dict of AudioConfig fields (`config.data.audio`) -> AudioConfig; unknown fields are errors."""
    if isinstance(cfg, AudioConfig):
        return cfg
    values = dict(cfg or {})
    known = {f.name for f in dataclasses.fields(AudioConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown data.audio field(s) {unknown}; known fields: {sorted(known)}.")
    if "num_clips" in values:
        values["num_clips"] = tuple(int(v) for v in values["num_clips"])
    return AudioConfig(**values)


class _AudioSource:
    """Shared batch assembly: `make_batch` is the pipeline's hook for sources of non-image arrays.

    Subclasses set `audio`, `num_classes`, `labels` (float32 [N, K]) and `_log_mel(i)` (raw log-mel
    [T, F], or None when the file fails to decode)."""

    audio: AudioConfig
    labels: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def _log_mel(self, i: int) -> np.ndarray | None:
        raise NotImplementedError

    def make_batch(self, ids: np.ndarray, *, train: bool, seed: int, epoch: np.ndarray) -> dict:
        """ids int [b] -> {"image": float32 [b, T, F, 1] normalized, "label": float32 [b, K] multi-hot,
        "mask": bool [b] (False where a file failed to decode)}. Train batches get SpecAugment keyed
        on (seed, epoch, id)."""
        a = self.audio
        feats = np.zeros((len(ids), a.num_frames, a.num_mel_bins), np.float32)
        mask = np.ones(len(ids), bool)
        for row, i in enumerate(ids):
            x = self._log_mel(int(i))
            if x is None:
                mask[row] = False
            else:
                feats[row] = x
        if train and (a.freq_mask > 0 or a.time_mask > 0):
            feats = spec_augment(feats, transforms.uniforms(seed, epoch, ids, 4), a.freq_mask, a.time_mask)
        image = normalize(feats, a.mean, a.std)[..., None]
        return {"image": image, "label": self.labels[ids], "mask": mask}


class SyntheticAudioSource(_AudioSource):
    """Synthetic multi-label clips (`SYNTHETIC_CLASSES`), made with NumPy, no download.

    Clip i of a split is drawn from the generator seeded with (seed, split, i); the raw log-mels are
    computed once at construction and kept in memory (float32 [N, T, F])."""

    def __init__(self, split: str, audio: AudioConfig):
        self.audio, self.split = audio, split
        self.classes = SYNTHETIC_CLASSES
        self.num_classes = len(SYNTHETIC_CLASSES)
        count = audio.num_clips[0] if split == "train" else audio.num_clips[1]
        split_key = int.from_bytes(split.encode()[:8].ljust(8, b"\0"), "little")
        feats, labels = [], []
        for i in tqdm(range(count), desc=f"synthetic clips ({split})", leave=False, disable=count < 256):
            wave, label = synthetic_clip(np.random.default_rng([audio.seed, split_key, i]), audio.clip_seconds,
                                         audio.sample_rate)
            feats.append(audio.log_mel(wave))
            labels.append(label)
        self.features = np.stack(feats)
        self.labels = np.stack(labels)

    def _log_mel(self, i):
        return self.features[i]


class AudioFolderSource(_AudioSource):
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

    def __init__(self, data_dir: str, split: str, audio: AudioConfig):
        from tome_jax.data.sources import DatasetNotFoundError  # pylint: disable=g-import-not-at-top

        self.audio, self.root = audio, os.path.join(data_dir, split)
        table_path = os.path.join(data_dir, f"{split}.csv")
        classes_path = audio.labels_csv or os.path.join(data_dir, "class_labels_indices.csv")
        for path in (self.root, table_path, classes_path):
            if not os.path.exists(path):
                raise DatasetNotFoundError(
                    f"{path!r} does not exist. Expected <data_dir>/{split}/*.wav, <data_dir>/{split}.csv "
                    "(filename,labels) and a class list <data_dir>/class_labels_indices.csv (index,mid,"
                    "display_name; or set data.audio.labels_csv); or use the ':runlocal' variant, which "
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
                problem, info = _probe_wav(path, audio.sample_rate)
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

    def _log_mel(self, i):
        try:
            wave, _ = read_wav(self.paths[i], self.audio.sample_rate)
        except AudioReadError as e:
            logging.warning("%s; masking it out of its batch.", e)
            return None
        return self.audio.log_mel(wave)


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


def _probe_wav(path: str, sample_rate: int) -> tuple[str | None, list[str]]:
    """(why the file is unusable or None, conversion notes) from its header."""
    import wave  # pylint: disable=g-import-not-at-top

    if not os.path.exists(path):
        return "missing", []
    try:
        with wave.open(path, "rb") as w:
            frames, rate, channels = w.getnframes(), w.getframerate(), w.getnchannels()
    except (wave.Error, EOFError, OSError):
        try:  # float WAVs (format 3) are not read by the wave module; SciPy reads them
            read_wav(path, sample_rate)
            return None, []
        except AudioReadError as e:
            return str(e), []
    if frames == 0:
        return "empty (no samples)", []
    notes = []
    if channels > 1:
        notes.append(f"mixed {channels} channels down to mono")
    if rate != sample_rate:
        notes.append(f"resampled {rate} Hz -> {sample_rate} Hz")
    return None, notes


AUDIO_SOURCES = ("synthetic_audio", "audiofolder")


def make_audio_source(name: str, data_dir: str, split: str, audio: Mapping[str, Any] | AudioConfig | None):
    """The source for `data.name` in AUDIO_SOURCES (called by `sources.make_source`)."""
    audio = audio_config(audio)
    if name == "synthetic_audio":
        return SyntheticAudioSource(split, audio)
    if not data_dir:
        raise ValueError("data.name='audiofolder' needs data.data_dir (the folder holding <split>/ and <split>.csv).")
    return AudioFolderSource(data_dir, split, audio)
