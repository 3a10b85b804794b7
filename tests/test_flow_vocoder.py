"""Griffin-Lim: output length, and convergence on the mel of real speech."""

from pathlib import Path

import numpy as np
import pytest

from bajax.audio.mel import flow_mel_24k
from bajax.flow.vocoder import GriffinLim, spectral_convergence

CORPUS = Path(__file__).resolve().parents[1] / "bajax" / "data" / "corpus" / "audio"


@pytest.fixture(scope="module")
def speech24k():
    sf = pytest.importorskip("soundfile")
    soxr = pytest.importorskip("soxr")
    path = sorted(CORPUS.glob("*.flac"))[0]
    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(wav.mean(axis=1), sr, 24000)[: 24000 * 2].astype(np.float32)


@pytest.mark.parametrize("frames", [1, 7, 50])
def test_output_is_frames_times_hop(frames):
    mel = np.random.default_rng(0).normal(size=(frames, 80)).astype(np.float32) - 5.0
    wave = GriffinLim(n_iter=2)(mel)
    assert wave.shape == (frames * 480,) and wave.dtype == np.float32
    assert np.all(np.isfinite(wave))
    assert GriffinLim()(np.zeros((0, 80), np.float32)).shape == (0,)


def test_griffin_lim_converges_on_real_speech(speech24k):
    mel = flow_mel_24k(speech24k)                         # [100, 80] natural-log magnitude mel
    gl = GriffinLim()
    target = np.asarray(gl.magnitude(mel))
    sc, mae = [], []
    for n in (0, 4, 32):
        wave = gl(mel, n_iter=n)
        assert wave.shape == (len(mel) * 480,)
        sc.append(spectral_convergence(target, wave))
        mae.append(float(np.abs(flow_mel_24k(wave) - mel).mean()))
    assert sc[0] > sc[1] > sc[2], sc
    assert mae[0] > mae[1] > mae[2], mae
    assert sc[2] < 0.5 * sc[0], sc
    # Same seed, same waveform.
    np.testing.assert_array_equal(gl(mel, n_iter=4), gl(mel, n_iter=4))
