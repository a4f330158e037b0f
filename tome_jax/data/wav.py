"""WAV files: read one as float32 mono at a sample rate (`read_wav`), or check its header (`probe_wav`)."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from tome_jax.data.fbank import SAMPLE_RATE


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


def probe_wav(path: str, sample_rate: int) -> tuple[str | None, list[str]]:
    """(why the file is unusable or None, the conversions `read_wav` will note) from its header."""
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
