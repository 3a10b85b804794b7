"""A trained HiFT vocoder run as a `Vocoder` (bajax/flow/vocoder.py): 24 kHz log-mel [T, 80] -> wave [T * 480].

    vocoder = HiFTVocoder.load("runs/vocoder_tiny")            # newest step; step=N for another
    wave = vocoder(mel)                                         # float32 [T * 480] at vocoder.sample_rate
    Synthesizer.load(flow, vocoder=vocoder)                     # speech generation through HiFT

Only the generator of the run's `HiFTGAN` is read (the discriminators are training-only). It runs under
`jax.jit`, compiled ahead of time once per length bucket: a mel of T frames is padded at the end to the next
multiple of `bucket` frames (50 = 1 s) with the mel's log floor ln(1e-5) (silence), and the output is cut
back to T * 480 samples, so a reply of any length reuses the executables already built. The generator is
not causal (its convolutions and the iSTFT see a few frames ahead), so the last ~10 ms of a padded mel hear
the silence that follows, as they would at the end of an utterance. The source's random phases and noise
come from a key fixed by `seed`: the same mel and seed give the same wave.

`read_mel(path)` is the input of `bajax vocode`: a `.npy` mel [frames, 80], or an audio file at any rate,
turned into the flow decoder's 24 kHz mel (`bajax.audio.mel.flow_mel_24k`) for copy synthesis.
"""

from __future__ import annotations

import io
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.audio.mel import LOG_MEL_FLOOR
from bajax.vocoder.source import frame_source_noise

SAMPLE_RATE = 24000
N_MELS = 80                         # bins of bajax.audio.mel.flow_mel_24k


def check_mel(mel, n_mels: int = N_MELS, hop: int = 480) -> np.ndarray:
    """mel as float32 [frames, n_mels]; a ValueError naming what is wrong and the fix otherwise."""
    try:
        mel = np.asarray(mel, np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the mel is not a numeric array ({e}); pass a float array [frames, {n_mels}]") from None
    if mel.ndim != 2:
        raise ValueError(f"the mel has shape {mel.shape}; the vocoder takes a 2-D mel [frames, {n_mels}] "
                         "(one utterance, time first)")
    if mel.shape[1] != n_mels:
        if mel.shape[0] == n_mels:
            raise ValueError(f"the mel has shape {mel.shape}, i.e. [{n_mels}, frames]; the vocoder takes "
                             f"[frames, {n_mels}] (time first): pass mel.T")
        raise ValueError(f"the mel has {mel.shape[1]} bins per frame (shape {mel.shape}); the vocoder takes "
                         f"{n_mels}: make it with bajax.audio.mel.flow_mel_24k (24 kHz, hop 480, 80 bins)")
    if mel.shape[0] == 0:
        raise ValueError(f"the mel has no frames (shape {mel.shape}); give at least one frame "
                         f"({hop} samples of output)")
    bad = ~np.isfinite(mel)
    if bad.any():
        frame = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"the mel holds {int(bad.sum())} NaN or infinite values (the first in frame {frame}); "
                         f"fix what produced it (a log-mel of bajax.audio.mel.flow_mel_24k is finite, "
                         f">= ln(1e-5) = {LOG_MEL_FLOOR:.2f})")
    return mel


class HiFTVocoder:
    """The `Vocoder` interface over a HiFT generator: `sample_rate`, `hop`, `n_mels`, `__call__(mel) -> wave`."""

    def __init__(self, generator, *, sample_rate: int = SAMPLE_RATE, seed: int = 0, bucket: int = 50,
                 source: str = ""):
        if bucket < 1:
            raise ValueError(f"bucket must be at least 1 frame, got {bucket}")
        self.sample_rate = int(sample_rate)
        self.hop = int(generator.hop)
        self.n_mels = int(generator.conv_pre.weight_v.shape[1])     # conv_pre's kernel [k, mels, channels]
        self.seed, self.bucket, self.source = int(seed), int(bucket), source
        self.compile_seconds = 0.0           # spent building executables, over all buckets
        self.harmonics = int(generator.harmonics)
        graphdef, self._state = nnx.split(generator)
        self._key = jax.random.key(self.seed)
        self._executables: dict[int, object] = {}
        hop, harmonics = self.hop, self.harmonics

        def synthesize(state, mel, key, start, offset, known_f0, n_known):
            # A window starting at mel frame `start` is the middle of the utterance it belongs to, not a new
            # signal: its frames' own noise (bajax.vocoder.source.frame_source_noise), sines already `offset`
            # cycles on, and the f0 of its first `n_known` frames as the window that emitted them predicted it
            # (here they lack left context; a wrong f0 there would shift the phase of all that follows).
            gen = nnx.merge(graphdef, state)
            f0 = gen.f0_predictor(mel)
            f0 = jnp.where(jnp.arange(mel.shape[1]) < n_known, known_f0, f0)
            draws = frame_source_noise(key, start, mel.shape[1], hop, harmonics, offset)
            return gen.decode(mel, gen.source(f0, None, draws))[0], f0[0]

        self._fn = jax.jit(synthesize)

    @classmethod
    def load(cls, path, step: int | None = None, seed: int = 0, *, bucket: int = 50, flag: str = "checkpoint",
             mesh: jax.sharding.Mesh | None = None) -> HiFTVocoder:
        """The generator of the vocoder run at `path` (a workdir, its checkpoints/ or one step directory); a
        `runs.LoadError` naming --`flag` when it is not a usable vocoder run."""
        from bajax import runs

        run = runs.resolve(path, flag)
        cfg = runs.read_config(run.workdir, "vocoder", flag=flag)   # (a Run would be named by its repr)
        mesh = mesh if mesh is not None else runs.inference_mesh(cfg)
        chosen = runs.pick_step(run, step, flag=flag)
        graphdef, abstract = runs.abstract_model(cfg, mesh)
        # Only the generator's leaves are restored; its module structure comes from the abstract HiFTGAN.
        restored = runs.restore_model(run, chosen, nnx.State({"generator": abstract["generator"]}), cfg, flag=flag)
        gen_graphdef, _ = nnx.split(nnx.merge(graphdef, abstract).generator)
        generator = nnx.merge(gen_graphdef, restored["generator"])
        return cls(generator, sample_rate=int(cfg.model.sampling_rate), seed=seed, bucket=bucket,
                   source=f"{run.workdir} step {chosen}")

    def padded_frames(self, frames: int) -> int:
        """The bucket a mel of `frames` frames runs in (the next multiple of `bucket`)."""
        return max(1, math.ceil(frames / self.bucket)) * self.bucket

    @property
    def buckets(self) -> tuple[int, ...]:
        """The padded lengths compiled so far."""
        return tuple(sorted(self._executables))

    def compile(self, frames: int) -> float:
        """Builds the executable for a mel of `frames` frames unless its bucket has one; the seconds it took."""
        padded = self.padded_frames(frames)
        if padded in self._executables:
            return 0.0
        t0 = time.perf_counter()
        spec = jax.ShapeDtypeStruct((1, padded, self.n_mels), jnp.float32)
        self._executables[padded] = self._fn.lower(self._state, spec, self._key, np.int32(0),
                                                   np.zeros((1, self.harmonics + 1), np.float32),
                                                   np.zeros((1, padded), np.float32), np.int32(0)).compile()
        seconds = time.perf_counter() - t0
        self.compile_seconds += seconds
        return seconds

    def __call__(self, mel) -> np.ndarray:
        """mel [T, n_mels] (natural-log magnitude mel) -> float32 wave [T * hop]."""
        return self.window(mel)[0]

    def window(self, mel, start: int = 0, cycles: float = 0.0, known_f0=()) -> tuple[np.ndarray, np.ndarray]:
        """(wave [T * hop], f0 [T] in Hz) of mel frames [start, start + T) of a longer utterance, whose
        fundamental has turned `cycles` times before frame `start` (the sum of hop * f0 / sample_rate over the
        frames before it) and whose first frames' f0 is `known_f0` (from the windows that emitted them): that
        window of the whole utterance's synthesis wherever the generator's receptive field (about 8 frames)
        lies inside the window (bajax.speech.stream.VocoderStream)."""
        mel = check_mel(mel, self.n_mels, self.hop)
        frames = mel.shape[0]
        self.compile(frames)
        padded = self.padded_frames(frames)
        full = np.full((1, padded, self.n_mels), LOG_MEL_FLOOR, np.float32)
        full[0, :frames] = mel
        # Harmonic h turns (h + 1) times as often; only the fraction of a cycle matters (float64 on the host).
        offset = np.mod(np.arange(1, self.harmonics + 2) * float(cycles), 1.0).astype(np.float32)[None]
        known = np.zeros((1, padded), np.float32)
        n_known = min(len(known_f0), frames)
        known[0, :n_known] = np.asarray(known_f0, np.float32)[:n_known]
        wave, f0 = self._executables[padded](self._state, full, self._key, np.int32(start), offset, known,
                                             np.int32(n_known))
        # Cut on the host: no op per length.
        return np.asarray(wave, np.float32)[:frames * self.hop], np.asarray(f0, np.float32)[:frames]


# -- the input of `bajax vocode` -----------------------------------------------------------------------

_AUDIO_FIXES = {"empty": "; pass a recording of at least 20 ms", "nan": "; re-export the recording"}


def read_mel(path: str, n_mels: int = N_MELS) -> tuple[np.ndarray, str]:
    """(mel [frames, n_mels], what it was) from a `.npy` mel or an audio file (any rate: resampled to 24 kHz,
    then `flow_mel_24k`: copy synthesis). A ValueError naming the file and the fix when it is unusable."""
    from bajax.audio import io as audio_io
    from bajax.audio.mel import flow_mel_24k

    p = str(path)
    if "://" not in p and not os.path.exists(p):
        raise ValueError(f"{p}: file not found; pass a .npy mel [frames, {n_mels}] or an audio file "
                         "(wav, flac, ogg, mp3)")
    if p.lower().endswith(".npy"):
        try:
            mel = np.load(io.BytesIO(audio_io.read_bytes(p)), allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{p}: cannot read it as a .npy array ({e}); save the mel with numpy.save") from None
        try:
            return check_mel(mel, n_mels), f"mel {tuple(mel.shape)}"
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
    try:
        wave = audio_io.load(p, SAMPLE_RATE)
    except audio_io.AudioError as e:
        raise ValueError(f"{e}{_AUDIO_FIXES.get(e.reason, '')}") from None
    if len(wave) < 480:
        raise ValueError(f"{p}: {len(wave) / SAMPLE_RATE * 1000:.1f} ms of audio, shorter than one mel frame "
                         "(480 samples at 24 kHz = 20 ms); pass a longer recording")
    mel = np.asarray(flow_mel_24k(wave), np.float32)
    return mel, f"copy synthesis of {len(wave) / SAMPLE_RATE:.2f} s of audio"
