"""Mel front ends against the reference implementations (transformers' Whisper feature extractor)."""

import shutil
import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bajax.audio import mel

TEXT = "The quick brown fox jumps over the lazy dog. Speech tokenizers compress audio into discrete codes."


@pytest.fixture(scope="module")
def speech16k(tmp_path_factory) -> np.ndarray:
    """A few seconds of real (synthetic) speech at 16 kHz: the packaged corpus, else espeak-ng."""
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    corpus = Path(mel.__file__).resolve().parents[1] / "data" / "corpus"
    files = sorted(p for ext in ("wav", "flac") for p in corpus.rglob(f"*.{ext}")) if corpus.is_dir() else []
    if files:
        path = files[0]
    else:
        if shutil.which("espeak-ng") is None:
            pytest.skip("no corpus audio and espeak-ng is not installed")
        path = tmp_path_factory.mktemp("speech") / "x.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), TEXT], check=True, capture_output=True)
    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    return soxr.resample(wav, sr, 16000).astype(np.float32)


def test_filterbank_matches_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    ref = audio_utils.mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0,
                                      max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                      mel_scale="slaney")
    np.testing.assert_allclose(mel.mel_filterbank(201, 128, 16000, 0.0, 8000.0), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_whisper_log_mel_matches_transformers(speech16k):
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=128)
    wav = speech16k
    assert len(wav) > 2 * 16000, "want a few seconds of speech"
    # padding='longest' on one utterance: no 30 s zero padding, so the STFT reflects at the real end.
    ref = fe(wav, sampling_rate=16000, padding="longest", return_tensors="np")["input_features"][0].T
    ours_np = mel.whisper_log_mel(wav)
    ours_jax = np.asarray(jax.jit(mel.whisper_log_mel)(jnp.asarray(wav)))
    assert ours_np.shape == ref.shape == (len(wav) // 160, 128)
    np.testing.assert_allclose(ours_np, ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours_jax, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_batched_with_lengths_equals_single(speech16k):
    """Each utterance's features are independent of padding: reflection and the max use its own length."""
    a, b = speech16k[: 16000 * 2 + 77], speech16k[5000: 5000 + 16000]
    batch = np.zeros((2, len(a)), np.float32)
    batch[0], batch[1, : len(b)] = a, b
    for fn in (mel.whisper_log_mel, mel.tokenizer_target_mel):
        for backend in (np.asarray, jnp.asarray):
            feats, lens = fn(backend(batch), backend(np.array([len(a), len(b)])))
            feats, lens = np.asarray(feats), np.asarray(lens)
            for i, w in enumerate((a, b)):
                single = np.asarray(fn(backend(w)))
                assert lens[i] == single.shape[0]
                np.testing.assert_allclose(feats[i, : lens[i]], single, atol=2e-5, rtol=0)
                assert not feats[i, lens[i]:].any(), "frames past the length must be zeros"


def test_hifigan_mel_conventions():
    """ln(clamp(|X| through filters, 1e-5)), not centred, len // hop frames, numpy in -> numpy out."""
    sr, n_fft, hop = 24000, 1920, 480
    t = np.arange(sr) / sr
    # A tone over broadband noise: no bin sits at the fp32 noise floor of the JAX path.
    noise = np.random.default_rng(0).standard_normal(sr)
    wav = (0.5 * np.sin(2 * np.pi * 440.0 * t) + 0.05 * noise).astype(np.float32)
    out = mel.flow_mel_24k(wav)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (sr // hop, 80)
    # Direct reference for one frame in the middle (no padding involved): frame k starts at k*hop - pad.
    pad = (n_fft - hop) // 2
    k = 20
    seg = wav[k * hop - pad: k * hop - pad + n_fft].astype(np.float64) * mel.hann_window(n_fft)
    fb = mel.mel_filterbank(n_fft // 2 + 1, 80, sr, 0, 8000)
    ref = np.log(np.maximum(np.abs(np.fft.rfft(seg)) @ fb, 1e-5))
    np.testing.assert_allclose(out[k], ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(mel.flow_mel_24k(jnp.asarray(wav))), out, atol=1e-4)
    assert mel.tokenizer_target_mel(wav[:16000]).shape == (16000 // 256, 80)
