"""Speaker similarity: the cosine of two Resemblyzer d-vectors.

Resemblyzer (Resemble AI; the GE2E speaker encoder of Wan et al., ICASSP 2018, as in Jia et al. 2018's SV2TTS)
maps 16 kHz speech to a 256-dim L2-normalised embedding: 40-band mel frames (25 ms / 10 ms) -> 3-layer LSTM
(256) -> linear -> ReLU, averaged over 1.6 s partial windows. Its weights (`pretrained.pt`, 17 MB) ship inside
the wheel, so it runs offline. Each wave is resampled to 16 kHz (`bajax.audio.resample`) and passed through
Resemblyzer's own `preprocess_wav` (raise to -30 dBFS if quieter, shorten pauses longer than ~0.2 s with its
WebRTC VAD). The encoder runs on the CPU, in one torch thread.

webrtcvad 2.0.10 (Resemblyzer's VAD; the newest release) reads its own version with `pkg_resources`, which
setuptools >= 81 no longer ships; when `pkg_resources` is missing a stand-in that answers only that one call
(from `importlib.metadata`) is installed for the duration of the import and removed afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import sys
import types

import numpy as np

from bajax.audio.resample import resample
from bajax.eval.deps import require

SAMPLE_RATE = 16000


@contextlib.contextmanager
def _pkg_resources_stand_in():
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources")
    stand_in.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]


@contextlib.contextmanager
def _one_torch_thread(torch):
    """The encoder's LSTM runs a few 160-frame windows: one intra-op thread is as fast when the machine is idle,
    and on a busy one (parallel test workers) two threads stalled it from 0.05 s to several seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=1)
def _encoder():
    with _pkg_resources_stand_in():
        resemblyzer = require("resemblyzer", "speaker similarity")
    return resemblyzer, resemblyzer.VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(wave, sr: int) -> np.ndarray:
    """Resemblyzer's utterance embedding [256] (unit norm, non-negative) of a mono wave at `sr` Hz."""
    resemblyzer, encoder = _encoder()
    wave = np.asarray(wave, np.float32).reshape(-1)
    if not np.all(np.isfinite(wave)):
        raise ValueError("speaker embedding: the waveform has NaN or infinite samples")
    wave = resemblyzer.preprocess_wav(resample(wave, sr, SAMPLE_RATE))
    if wave.size == 0:
        raise ValueError("speaker embedding: the voice activity detector found no speech in the waveform")
    with _one_torch_thread(require("torch", "speaker similarity")):
        return np.asarray(encoder.embed_utterance(wave), np.float32)


def speaker_similarity(a, b, sr: int) -> float:
    """cos(e_a, e_b) of the two waves' `speaker_embedding`s (both at `sr` Hz). The embeddings are non-negative,
    so the value lies in [0, 1]; 1 for the same wave."""
    ea, eb = speaker_embedding(a, sr), speaker_embedding(b, sr)
    return float(np.dot(ea, eb) / (np.linalg.norm(ea) * np.linalg.norm(eb)))
