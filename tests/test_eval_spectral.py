"""Spectral distances: zero for identical waves, growing with the error, symmetric in length handling."""

import numpy as np
import pytest

from bajax.eval.spectral import mel_l1, mr_stft_distance


@pytest.fixture(scope="module")
def tone():
    t = np.arange(24000) / 24000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 1700 * t)).astype(np.float32)


def test_identical_waves_are_at_distance_zero(tone):
    assert mr_stft_distance(tone, tone) == pytest.approx(0.0, abs=1e-9)
    assert mel_l1(tone, tone) == pytest.approx(0.0, abs=1e-9)


def test_distance_grows_with_the_error(tone):
    noise = np.random.default_rng(0).standard_normal(len(tone)).astype(np.float32)
    small = [mr_stft_distance(tone, tone + 0.001 * noise), mel_l1(tone, tone + 0.001 * noise)]
    large = [mr_stft_distance(tone, tone + 0.05 * noise), mel_l1(tone, tone + 0.05 * noise)]
    assert all(0 < s < g for s, g in zip(small, large))
    # At half amplitude spectral convergence is 0.5 and log magnitudes differ by ln 2 (white noise: no bin
    # falls to the 1e-7 floor, where both would be floored alike).
    assert mr_stft_distance(noise, 0.5 * noise) == pytest.approx(0.5 + np.log(2), rel=1e-6)


def test_longer_estimate_is_cut_and_empty_is_an_error(tone):
    assert mr_stft_distance(tone, np.concatenate([tone, np.ones(480, np.float32)])) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError, match="empty waveform"):
        mel_l1(tone[:0], tone)
