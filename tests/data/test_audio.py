"""Audio front end (vs torchaudio's Kaldi fbank), SpecAugment, WAV reading and the audio sources."""

import os
import warnings

import numpy as np
import pytest
from scipy.io import wavfile

from tome_jax.data import audio, make_dataset, normalize, resolve_config, wav
from tome_jax.data import fbank as frontend
from tome_jax.data.registry import DatasetNotFoundError
from tome_jax.data.sources import make_source

ONE_CHANNEL = dict(mean=(audio.AUDIOSET_MEAN,), std=(2 * audio.AUDIOSET_STD,))  # AudioMAE: (x - mean) / (2 std)

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "audio_fbank.npz")


@pytest.mark.parametrize("window", ["hanning", "povey"])
def test_fbank_matches_torchaudio_kaldi_fbank_on_real_waveforms(window):
    """Golden fixture from torchaudio.compliance.kaldi.fbank as AudioMAE calls it (make_audio_fixture.py):
    "pluck" is CPython's recorded test WAV, "mix" a synthetic tone + chirp + noise burst."""
    data = np.load(FIXTURE)
    for name in ("pluck", "mix"):
        ours = frontend.fbank(data[f"{name}/wave"], window=window)
        ref32, ref64 = data[f"{name}/{window}"], data[f"{name}/{window}_float64"]
        assert ours.shape == ref32.shape == (1 + (len(data[f"{name}/wave"]) - 400) // 160, 128)
        # torchaudio's arithmetic in float64: within 1e-4 on every bin.
        np.testing.assert_allclose(ours, ref64, rtol=0, atol=1e-4)
        # AudioMAE's float32 call: no further from it than its own float32 rounding (+1e-4); that rounding
        # reaches ~1e-3 only in bins 60+ dB below the frame's peak.
        assert (np.abs(ours - ref32) <= np.abs(ref64 - ref32) + 1e-4).all()


def test_a_tone_peaks_in_the_mel_bin_of_its_frequency():
    sr, freq = 16000, 1000.0
    t = np.arange(sr) / sr
    features = frontend.fbank(0.5 * np.sin(2 * np.pi * freq * t))
    assert features.shape == (98, 128) and features.dtype == np.float32  # 1 + (16000 - 400) // 160
    low, high = frontend.mel_scale(20.0), frontend.mel_scale(8000.0)
    centers = low + (np.arange(128) + 1) * (high - low) / 129
    expected = int(np.argmin(np.abs(centers - frontend.mel_scale(freq))))
    assert int(features.mean(axis=0).argmax()) == expected == 43
    assert frontend.fbank(np.zeros(399)).shape == (0, 128)  # shorter than one frame


def test_pad_crop_normalize_and_spec_augment():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    assert frontend.pad_or_crop(x, 5)[3:].sum() == 0 and frontend.pad_or_crop(x, 2).shape == (2, 4)
    # AudioMAE's (x - mean) / (2 std), mean 1, std 2: on device, data.std = 2 x std.
    np.testing.assert_allclose(normalize(np.array([[1.0], [5.0]], np.float32), (1.0,), (2 * 2.0,)), [[0.0], [1.0]])
    feats = np.ones((64, 100, 32), np.float32)
    u = np.random.default_rng(0).uniform(size=(64, 4))
    out = frontend.spec_augment(feats, u, freq_mask=8, time_mask=20)
    freq_masked = (out == 0).all(axis=1).sum(axis=1)  # masked frequency rows per example
    time_masked = (out == 0).all(axis=2).sum(axis=1)
    np.testing.assert_array_equal(freq_masked, (u[:, 0] * 8).astype(int))
    np.testing.assert_array_equal(time_masked, (u[:, 2] * 20).astype(int))
    assert feats.min() == 1  # input untouched
    np.testing.assert_array_equal(frontend.spec_augment(feats, u, 0, 0), feats)


def _write(path, rate, data):
    wavfile.write(str(path), rate, data)
    return path


def test_read_wav_resamples_mixes_down_and_rejects_bad_files(tmp_path):
    t = np.arange(44100) / 44100
    stereo = (np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1) * 16000).astype(np.int16)
    wave, notes = wav.read_wav(_write(tmp_path / "a.wav", 44100, stereo))
    assert wave.shape == (16000,) and wave.dtype == np.float32
    assert notes == ["mixed 2 channels down to mono", "resampled 44100 Hz -> 16000 Hz"]
    assert abs(np.abs(wave[100:-100]).max() - 16000 / 2**15) < 0.01  # int16 scaled as torchaudio
    with pytest.raises(wav.AudioReadError, match="no samples"):
        wav.read_wav(_write(tmp_path / "empty.wav", 16000, np.zeros(0, np.int16)))
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(wav.AudioReadError, match="cannot read WAV"):
        wav.read_wav(str(tmp_path / "junk.wav"))


def _audio_folder(root):
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write(root / "train" / "good.wav", 16000, (rng.standard_normal(8000) * 3000).astype(np.int16))
    _write(root / "train" / "stereo8k.wav", 8000, (rng.standard_normal((4000, 2)) * 3000).astype(np.int16))
    _write(root / "train" / "empty.wav", 16000, np.zeros(0, np.int16))
    (root / "train" / "junk.wav").write_bytes(b"RIFF....garbage")
    (root / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/04rlf,"Music"\n2,/m/0jbk,"Animal"\n')
    rows = ['good.wav,"/m/09x0r,/m/04rlf"', "stereo8k.wav,Animal", "empty.wav,Speech", "junk.wav,Music",
            "missing.wav,Music"]
    (root / "train.csv").write_text("filename,labels\n" + "\n".join(rows) + "\n")
    return root


def test_audio_folder_source_skips_bad_files_with_a_count_and_converts_with_a_note(tmp_path):
    root = _audio_folder(tmp_path / "as")
    cfg = resolve_config(dict(name="audiofolder", data_dir=str(root), options=dict(num_frames=64, freq_mask=0, time_mask=0),
                              **ONE_CHANNEL))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        source = make_source(cfg, "train")
    messages = " | ".join(str(w.message) for w in caught)
    assert "skipped 3 empty or unreadable file(s)" in messages
    assert "mixed 2 channels down to mono for 1 file(s)" in messages and "resampled 8000 Hz -> 16000 Hz" in messages
    assert len(source) == 2 and source.num_skipped == 3 and source.num_classes == 3
    read = source.batch_reader(cfg)
    batch = read(np.array([0, 1]))
    assert batch["image"].shape == (2, 64, 128, 1) and batch["mask"].all()
    np.testing.assert_array_equal(batch["label"], [[1, 1, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match="log-mel spectrograms have one channel"):  # data.mean has 3 values
        make_dataset(dict(name="audiofolder", data_dir=str(root)), "train", global_batch_size=2, train=False,
                     shard_index=0, shard_count=1, source=source)
    # A file that breaks after indexing is masked out of its batch, not a crash.
    os.remove(root / "train" / "good.wav")
    assert not read(np.array([0]))["mask"][0]


def test_audio_folder_source_names_labels_outside_the_class_list(tmp_path):
    root = _audio_folder(tmp_path / "as")
    (root / "train.csv").write_text('filename,labels\ngood.wav,"Speech,/m/xyz"\n')
    with pytest.raises(ValueError, match=r"1 label\(s\) are not in the class list.*'/m/xyz' in good.wav \(line 2\)"):
        make_source(dict(name="audiofolder", data_dir=str(root)), "train")
    with pytest.raises(DatasetNotFoundError, match="eval.csv.*does not exist|does not exist"):
        make_source(dict(name="audiofolder", data_dir=str(root)), "eval")
    with pytest.raises(ValueError, match="Unknown data.options field"):
        make_source(dict(name="synthetic_audio", options=dict(num_frame=10)), "train")



def test_synthetic_clips_through_the_pipeline_are_deterministic_and_multilabel():
    cfg = dict(name="synthetic_audio", split_eval="test", num_threads=1, prefetch_batches=1, **ONE_CHANNEL,
               options=dict(num_frames=64, clip_seconds=0.64, num_clips=(24, 10), freq_mask=16, time_mask=16))
    source = make_source(cfg, "train")
    assert source.features.shape == (24, 64, 128) and source.num_classes == len(audio.SYNTHETIC_CLASSES)
    assert (source.labels.sum(1) >= 1).all() and (source.labels.sum(1) > 1).any()
    np.testing.assert_array_equal(make_source(cfg, "train").features, source.features)
    assert not np.array_equal(make_source(cfg, "test").labels[:10], source.labels[:10])
    train = [next(iter(make_dataset(cfg, "train", global_batch_size=8, train=True, seed=s))) for s in (0, 0, 1)]
    assert train[0]["image"].shape == (8, 64, 128, 1) and train[0]["label"].shape == (8, 10)
    np.testing.assert_array_equal(train[0]["image"], train[1]["image"])
    assert not np.array_equal(train[0]["image"], train[2]["image"])
    assert train[0]["image"].dtype == np.float32 and (train[0]["image"] == 0).any()  # SpecAugment on train batches
    masked_value = (0 - audio.AUDIOSET_MEAN) / (2 * audio.AUDIOSET_STD)  # ... normalized once, on device
    assert np.isclose(normalize(train[0]["image"], cfg["mean"], cfg["std"]), masked_value).any()
    batches = list(make_dataset(cfg, "test", global_batch_size=8, train=False))
    assert [int(b["mask"].sum()) for b in batches] == [8, 2]  # 10 clips, padding masked
