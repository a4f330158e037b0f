"""The audio front end: waveform -> Kaldi-style log-mel fbank (as AudioMAE / AST), pad / crop, SpecAugment.

`fbank` = `torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=16000,
use_energy=False, window_type='hanning', num_mel_bins=128, dither=0.0, frame_shift=10)` as AudioMAE's
and AST's `dataset.py` call it, re-implemented in NumPy (float64) and checked against torchaudio in
tests/data/test_audio.py (golden fixture, made by tests/fixtures/make_audio_fixture.py): frames of
25 ms every 10 ms (snip_edges), per-frame DC removal, pre-emphasis 0.97, the window, zero-padding to
512, power spectrum, 128 triangular filters on Kaldi's mel scale (20 Hz .. Nyquist), log with a
float32-epsilon floor. No well-kept library computes Kaldi's fbank without torch (librosa uses
centred STFT frames and Slaney mels), so the arithmetic is ours.

Then, as AudioMAE's dataset: zero-pad / crop to a fixed number of frames, and SpecAugment (train only;
torchaudio's FrequencyMasking / TimeMasking semantics, masked values set to 0 before normalization,
which runs on device). Layout: [T, F] (time-major) per clip. Pure NumPy (SciPy for the sparse
filterbank); knows nothing about files or sources.
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (torchaudio's _get_epsilon in float32)
WINDOWS = ("hanning", "povey", "hamming", "rectangular")


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
    raise ValueError(f"window must be one of {WINDOWS}, got {kind!r}.")


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
