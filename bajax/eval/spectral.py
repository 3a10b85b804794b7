"""Spectral distances between a reference waveform and a synthesised one (numpy, host side).

Both are the usual reconstruction metrics of neural vocoders and codecs; lower is better, 0 for identical
signals. The two waves are cut to the shorter length first (a vocoder's output may differ by a few samples).
"""

from __future__ import annotations

import numpy as np

from bajax.audio.mel import flow_mel_24k, hann_window

# Parallel WaveGAN's (Yamamoto et al. 2020) three resolutions, used by most vocoder papers since: (n_fft, hop,
# window length) at 24 kHz.
RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


def _cut(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref, np.float64).reshape(-1), np.asarray(est, np.float64).reshape(-1)
    n = min(len(ref), len(est))
    if n == 0:
        raise ValueError("spectral distance of an empty waveform")
    return ref[:n], est[:n]


def _magnitude(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    """|STFT| [frames, n_fft // 2 + 1]: Hann(win) centred in n_fft, reflect-padded by n_fft / 2 (torch.stft's
    defaults, as Parallel WaveGAN computes it), floored at 1e-7."""
    window = np.zeros(n_fft)
    start = (n_fft - win) // 2
    window[start:start + win] = hann_window(win)
    x = np.pad(x, n_fft // 2, mode="reflect")
    frames = 1 + (len(x) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    return np.maximum(np.abs(np.fft.rfft(x[idx] * window, axis=-1)), 1e-7)


def mr_stft_distance(ref, est, resolutions=RESOLUTIONS) -> float:
    """Multi-resolution STFT distance: the mean over resolutions of spectral convergence
    ||S_ref - S_est||_F / ||S_ref||_F plus the mean absolute difference of log magnitudes (natural log)."""
    ref, est = _cut(ref, est)
    total = 0.0
    for n_fft, hop, win in resolutions:
        a, b = _magnitude(ref, n_fft, hop, win), _magnitude(est, n_fft, hop, win)
        total += np.linalg.norm(a - b) / np.linalg.norm(a) + np.mean(np.abs(np.log(a) - np.log(b)))
    return float(total / len(resolutions))


def mel_l1(ref, est) -> float:
    """Mean absolute difference of the flow decoder's 24 kHz log-mel (`flow_mel_24k`: 80 bins, natural log)."""
    ref, est = _cut(ref, est)
    return float(np.mean(np.abs(flow_mel_24k(ref.astype(np.float32)) - flow_mel_24k(est.astype(np.float32)))))
