"""Mel front ends: Whisper-v3 log-mel (encoder input), the tokenizer's 16 kHz target mel, the 24 kHz flow mel.

One framing + STFT core serves all three. Every function takes a waveform `[N]` or a batch `[B, N]` with
`lengths` and returns `(mel [B, T, n_mels], mel_lengths [B])` (time-major, channels last); a 1-D input
gives only `mel [T, n_mels]`. Frames are gathered with reflection about EACH utterance's own end, so an
utterance's features do not depend on the batch it sits in; frames past an utterance's length are zeros
(the value a conv's own zero padding would show an unbatched utterance).

The same code runs on numpy (computed in float64, returns numpy: for data preparation in worker
processes, no compilation per length) or on JAX arrays (fp32, jit-able with static shapes).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

# ---------------------------------------------------------------------------------------------------- filters


def _hz_to_mel_slaney(f):
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    mel = 3.0 * f / 200.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(f >= 1000.0, log_part, mel)


def _mel_to_hz_slaney(m):
    m = np.asarray(m, np.float64)
    hz = 200.0 * m / 3.0
    log_part = 1000.0 * np.exp(np.log(6.4) * (m - 15.0) / 27.0)
    return np.where(m >= 15.0, log_part, hz)


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters, float64 `[n_freqs, n_mels]` (read-only)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
    edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(edges)                                        # [n_mels + 1]
    slopes = edges[None, :] - fft_freqs[:, None]                   # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    fb = np.maximum(0.0, np.minimum(down, up))
    # Slaney norm: every filter has unit area, so a wider high-frequency band is not louder.
    fb *= 2.0 / (edges[2:] - edges[:-2])
    fb.setflags(write=False)
    return fb


@functools.lru_cache(maxsize=16)
def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window / Whisper), float64."""
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    w.setflags(write=False)
    return w


# ------------------------------------------------------------------------------------------------------ core


def _is_numpy(x) -> bool:
    return isinstance(x, (np.ndarray, list, tuple, float, int))


def _batched(wav, lengths, xp):
    """[N] or [B, N] -> ([B, N], lengths [B], was_1d)."""
    wav = xp.asarray(wav, dtype=xp.float64 if xp is np else xp.float32)
    single = wav.ndim == 1
    if single:
        wav = wav[None]
    if wav.ndim != 2:
        raise ValueError(f"waveform must be [samples] or [batch, samples]; got shape {wav.shape}")
    if lengths is None:
        lengths = xp.full((wav.shape[0],), wav.shape[1], dtype=xp.int32)
    return wav, xp.asarray(lengths, dtype=xp.int32), single


def _frames(wav, lengths, n_fft: int, hop: int, n_frames: int, offset: int, xp):
    """Frames `[B, n_frames, n_fft]`; sample t*hop + j - offset, reflected about 0 and length - 1."""
    idx = (np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :] - offset)[None]   # [1, F, n_fft]
    last = (lengths - 1)[:, None, None]                                                        # [B, 1, 1]
    idx = xp.abs(xp.asarray(idx))                        # reflect at the start (no edge repeat, like torch)
    idx = xp.where(idx > last, 2 * last - idx, idx)      # reflect at this utterance's own end
    idx = xp.clip(idx, 0, xp.maximum(last, 0))           # utterances shorter than the pad: clamp
    b = wav.shape[0]
    flat = xp.take_along_axis(wav, idx.reshape(b, -1), axis=1)
    return flat.reshape(b, n_frames, n_fft)


def _mel_power(wav, lengths, *, n_fft, hop, n_mels, sample_rate, fmin, fmax, centered, power, xp,
               mag_eps: float = 0.0):
    """Mel energies `[B, T, n_mels]` (|X|^power through the filters) and per-utterance frame counts.

    With power 1 the magnitude is sqrt(|X|^2 + mag_eps) (mag_eps > 0 keeps its gradient finite at X = 0).
    """
    # Whisper: centred (pad n_fft/2) with the last frame dropped; HiFi-GAN style: pad (n_fft-hop)/2,
    # not centred. Both give exactly `length // hop` frames.
    offset = n_fft // 2 if centered else (n_fft - hop) // 2
    n_frames = wav.shape[1] // hop
    frames = _frames(wav, lengths, n_fft, hop, n_frames, offset, xp)
    dtype = frames.dtype
    spec = xp.fft.rfft(frames * xp.asarray(hann_window(n_fft), dtype=dtype), axis=-1)
    mag2 = spec.real**2 + spec.imag**2
    mag = mag2 if power == 2 else xp.sqrt(mag2 + mag_eps)
    fb = xp.asarray(mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, fmin, fmax), dtype=dtype)
    if xp is np:
        mel = mag @ fb
    else:
        mel = jnp.matmul(mag, fb, precision="highest")
    mel_lengths = lengths // hop
    valid = xp.arange(n_frames)[None, :] < mel_lengths[:, None]                                 # [B, T]
    return mel, mel_lengths, valid


def _finish(mel, mel_lengths, valid, single, xp):
    mel = xp.where(valid[..., None], mel, 0.0).astype(xp.float32)
    # A single waveform gives just its frames; a batch also needs the lengths to read them.
    return mel[0] if single else (mel, mel_lengths)


# --------------------------------------------------------------------------------------------- front ends


def whisper_log_mel(wav, lengths=None, *, n_mels: int = 128, n_fft: int = 400, hop: int = 160,
                    sample_rate: int = 16000, fmin: float = 0.0, fmax: float = 8000.0):
    """Whisper-v3 log-mel (SPEC section 1): log10(clamp 1e-10), floor at utterance max - 8, (x + 4) / 4.

    The maximum is taken over each utterance's valid frames only, so padding never changes it.
    Returns `(mel [B, T, n_mels], mel_lengths [B])` with `T = N // hop`, `mel_lengths = lengths // hop`.
    """
    xp = np if _is_numpy(wav) else jnp
    wav, lengths, single = _batched(wav, lengths, xp)
    mel, mel_lengths, valid = _mel_power(wav, lengths, n_fft=n_fft, hop=hop, n_mels=n_mels,
                                         sample_rate=sample_rate, fmin=fmin, fmax=fmax, centered=True,
                                         power=2, xp=xp)
    log = xp.log10(xp.maximum(mel, 1e-10))
    peak = xp.max(xp.where(valid[..., None], log, -xp.inf), axis=(1, 2), keepdims=True)
    log = (xp.maximum(log, peak - 8.0) + 4.0) / 4.0
    return _finish(log, mel_lengths, valid, single, xp)


LOG_MEL_FLOOR = float(np.log(1e-5))   # hifigan_log_mel's (and flow_mel_24k's) value of digital silence


def hifigan_log_mel(wav, lengths=None, *, n_mels: int = 80, n_fft: int = 1024, hop: int = 256,
                    sample_rate: int = 16000, fmin: float = 0.0, fmax: float | None = 8000.0,
                    clamp: float = 1e-5, mag_eps: float = 0.0):
    """HiFi-GAN convention: reflect-pad (n_fft - hop) / 2, not centred, magnitude, ln(clamp(x, 1e-5)).

    Window length = n_fft. `T = N // hop`. Defaults are the tokenizer's target mel (SPEC section 2).
    `fmax=None` is sample_rate / 2; `mag_eps` is added to |X|^2 under the square root (Matcha-TTS adds 1e-9).
    """
    xp = np if _is_numpy(wav) else jnp
    wav, lengths, single = _batched(wav, lengths, xp)
    mel, mel_lengths, valid = _mel_power(wav, lengths, n_fft=n_fft, hop=hop, n_mels=n_mels,
                                         sample_rate=sample_rate, fmin=fmin, fmax=fmax, centered=False,
                                         power=1, xp=xp, mag_eps=mag_eps)
    return _finish(xp.log(xp.maximum(mel, clamp)), mel_lengths, valid, single, xp)


def tokenizer_target_mel(wav, lengths=None):
    """The audio decoder's 62.5 Hz target: 16 kHz, n_fft = win = 1024, hop 256, 80 bins, fmax 8 kHz."""
    return hifigan_log_mel(wav, lengths, n_mels=80, n_fft=1024, hop=256, sample_rate=16000)


def flow_mel_24k(wav, lengths=None):
    """The flow decoder's 50 Hz target (SPEC section 4): 24 kHz, n_fft = win = 1920, hop 480, 80 bins.

    `flow_mel_24k(np_wave_1d)` returns numpy `[len // 480, 80]` float32.
    """
    return hifigan_log_mel(wav, lengths, n_mels=80, n_fft=1920, hop=480, sample_rate=24000)


def hift_loss_mel_24k(wav, lengths=None):
    """The HiFT vocoder GAN's mel-reconstruction transform (CosyVoice-2 yaml `mel_spec_transform1`, which is
    Matcha-TTS `mel_spectrogram`): like `flow_mel_24k` (24 kHz, n_fft = win = 1920, hop 480, 80 Slaney bins,
    not centred, ln(clamp 1e-5)) but with fmax = None (12 kHz, not 8 kHz) and |X| = sqrt(|X|^2 + 1e-9), the
    epsilon that keeps the generator's gradient finite where a frame is digital silence.
    """
    return hifigan_log_mel(wav, lengths, n_mels=80, n_fft=1920, hop=480, sample_rate=24000, fmax=None,
                           mag_eps=1e-9)
