"""Codes -> 24 kHz speech: frozen tokenizer decoder -> flow decoder -> mel -> vocoder (SPEC sections 2 and 4).

Frame arithmetic for L code frames (12.5 Hz, 80 ms each; the numbers come from the configs):
  tokenizer decoder   `hidden_states_before_dconv2` [4L - 1, d] at 50 Hz (the causal transposed conv of
                      stride `pool` trims its last frame)
  flow decoder        the Pre-Net nearest-resamples those onto the 24 kHz mel grid of the same span:
                      L x 1280 samples at 16 kHz = L x 1920 samples at 24 kHz = 4L frames of hop 480
  vocoder             4L x 480 = 1920 L samples at 24 kHz
so every mel frame is exactly `hop` samples of output, as in training (the flow targets are the 24 kHz mels of
whole code frames). The flow sampler runs N Euler steps with classifier-free guidance and seeded noise (per
mel frame, `frame_noise`, so streaming draws the same), so the same codes and seed give the same wave. The
vocoder is Griffin-Lim unless one is given (a trained HiFT run: `bajax.speech.hift.HiFTVocoder`).
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax import runs
from bajax.flow.vocoder import GriffinLim, Vocoder


def frame_noise(rng: jax.Array, start, count: int, n_mels: int) -> jax.Array:
    """The sampler's starting noise of mel frames [start, start + count) [count, n_mels]: frame i draws from
    fold_in(rng, i), so a frame's noise does not depend on how many frames are synthesised with it (a
    streamed chunk gets the noise the whole utterance gives those frames)."""
    frames = start + jnp.arange(count)
    return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng, i), (n_mels,), jnp.float32))(frames)


def vocoder_mels(vocoder) -> int:
    """Mel bins a vocoder reads: its `n_mels`, or the reference's 80 for one that does not say."""
    return int(getattr(vocoder, "n_mels", 80))


class Synthesizer:
    """`codes [L, 8] -> (wave [4L * 480], mel [4L, 80])` with a loaded tokenizer decoder and flow decoder."""

    def __init__(self, decode, flow, tokenizer_cfg, *, steps: int = 10, guidance: float = 0.7,
                 vocoder: Vocoder | None = None, tokenizer_run: str = ""):
        m = tokenizer_cfg.model
        self.tokenizer_run = tokenizer_run    # its run directory, for encoding prompts with the same tokenizer
        self.vocoder = vocoder or GriffinLim()
        self.codebook_sizes = tuple(int(c) for c in m.rvq.codebook_sizes)
        samples_per_code = m.mel_hop * 2 * m.pool  # encoder conv stride 2, bridge pool: 1280 at 16 kHz
        span = samples_per_code * self.vocoder.sample_rate
        if span % (m.sample_rate * self.vocoder.hop):
            raise ValueError(f"a code frame ({samples_per_code} samples at {m.sample_rate} Hz) is not a whole "
                             f"number of vocoder hops ({self.vocoder.hop} at {self.vocoder.sample_rate} Hz)")
        self.mel_per_code = span // (m.sample_rate * self.vocoder.hop)
        self.code_rate = m.sample_rate / samples_per_code
        self.max_codes = (int(m.decoder_positions) + 1) // m.pool   # the decoder's 4L - 1 <= positions
        self.steps, self.guidance = int(steps), float(guidance)
        self.temperature = float(flow.temperature)
        # The decoder's weights are an argument of the compiled functions, not constants (FrozenDecoder); a
        # plain `decode(codes, lengths)` function (a test's stand-in) has none.
        self.decode_state = getattr(decode, "state", None)
        self.decode = decode.apply if hasattr(decode, "apply") else (lambda _, c, n: decode(c, n))
        self.flow_graphdef, self.flow_state = nnx.split(flow)
        graphdef, per_code, temperature = self.flow_graphdef, self.mel_per_code, self.temperature

        @jax.jit
        def mel_fn(flow_state, decode_state, codes, rng):
            n = codes.shape[1]
            hidden, lengths = self.decode(decode_state, codes, jnp.full((1,), n, jnp.int32))
            frames = per_code * n
            model = nnx.merge(graphdef, flow_state)
            noise = temperature * frame_noise(rng, 0, frames, model.n_mels)[None]
            mel = model.sample(hidden, lengths, jnp.full((1,), frames, jnp.int32), frames, rng,
                               steps=self.steps, guidance=self.guidance, noise=noise)
            return mel[0]

        self._mel_fn = mel_fn

    @classmethod
    def load(cls, flow: str, tokenizer: str | None = None, **kwargs) -> Synthesizer:
        """From a flow run (trained with cond_source='tokenizer') and a tokenizer run (default: the one the
        flow run was trained on, model.tokenizer_checkpoint of its config)."""
        from bajax.tokenizer.encode import frozen_decoder

        flow_run = runs.resolve(flow, "flow")
        flow_cfg = runs.read_config(flow_run, "flow")
        if flow_cfg.model.cond_source != "tokenizer":
            raise runs.LoadError(
                f"--flow {flow}: this flow decoder was trained with model.cond_source="
                f"{flow_cfg.model.cond_source!r}, so it cannot turn codes into speech; train one with "
                "--config.model.cond_source=tokenizer --config.model.tokenizer_checkpoint=TOKENIZER_RUN")
        tokenizer = tokenizer or flow_cfg.model.tokenizer_checkpoint
        if not tokenizer:
            raise runs.LoadError(f"--flow {flow} names no tokenizer run; pass --tokenizer TOKENIZER_RUN")
        tok_run = runs.resolve(tokenizer, "tokenizer")
        tok_cfg = runs.read_config(tok_run, "tokenizer")
        if int(flow_cfg.model.cond_dim) != int(tok_cfg.model.d_model):
            raise runs.LoadError(
                f"--flow {flow} conditions on {flow_cfg.model.cond_dim}-d features but the tokenizer "
                f"{tok_run.workdir} decodes {tok_cfg.model.d_model}-d ones; pass the tokenizer the flow decoder "
                "was trained with")
        # The alignment branch is training-only: left out, none of it is read.
        tokenizer_model = runs.load(tokenizer, "tokenizer", flag="tokenizer",
                                    model_overrides={"loss.align_weight": 0.0}).model
        flow_model = runs.load(flow, "flow", flag="flow",
                               model_overrides={"tokenizer_checkpoint": str(tok_run.workdir)}).model
        return cls(frozen_decoder(tokenizer_model), flow_model, tok_cfg, tokenizer_run=str(tok_run.workdir),
                   **kwargs)

    def check_codes(self, codes) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"codes must be [frames, {len(self.codebook_sizes)}], got shape {codes.shape}")
        for k, size in enumerate(self.codebook_sizes):
            bad = (codes[:, k] < 0) | (codes[:, k] >= size)
            if bad.any():
                raise ValueError(f"codebook {k} holds codes outside [0, {size}) (e.g. {codes[bad, k][0]}); "
                                 "these codes were not made for this tokenizer")
        if len(codes) > self.max_codes:
            raise ValueError(f"{len(codes)} code frames ({len(codes) / self.code_rate:.1f} s) exceed the tokenizer "
                             f"decoder's {self.max_codes} frames; decode shorter pieces (lower --max-frames)")
        return codes.astype(np.int32)

    def mel(self, codes, seed: int = 0, index: int = 0, depth: int | None = None) -> np.ndarray:
        """The 24 kHz log-mel [mel_per_code * L, n_mels] of codes [L, 8]; noise from key(seed) folded with
        `index` (the segment number when several are synthesised). `depth` k decodes only the first k RVQ
        layers (the others add nothing: code -1), as the tokenizer's layerwise dropout trained it to."""
        codes = self.check_codes(codes)
        if depth is not None:
            if not 1 <= depth <= codes.shape[1]:
                raise ValueError(f"RVQ depth {depth} outside 1..{codes.shape[1]}")
            codes[:, depth:] = -1
        if len(codes) == 0:
            return np.zeros((0, self.vocoder_mels()), np.float32)
        mel = self._mel_fn(self.flow_state, self.decode_state, jnp.asarray(codes[None]),
                            jax.random.fold_in(jax.random.key(seed), index))
        return np.asarray(mel, np.float32)

    def vocoder_mels(self) -> int:
        return vocoder_mels(self.vocoder)

    def __call__(self, codes, seed: int = 0, index: int = 0, depth: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(wave [mel frames * hop] at the vocoder's rate, mel); no codes, no samples."""
        mel = self.mel(codes, seed, index, depth)
        if len(mel) == 0:          # a vocoder may reject an empty mel (HiFTVocoder does)
            return np.zeros((0,), np.float32), mel
        return np.asarray(self.vocoder(mel), np.float32), mel

    def long(self, codes, seed: int = 0, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Codes of any length: synthesised as one utterance (one compiled shape, no seams between a
        generation's audio segments), in consecutive pieces of at most `max_codes` frames when longer than
        the tokenizer decoder's positions (noise of piece i seeded by (seed, i))."""
        codes = np.asarray(codes).reshape(-1, len(self.codebook_sizes))
        waves, mels = [], []
        for i, start in enumerate(range(0, len(codes), self.max_codes)):
            wave, mel = self(codes[start:start + self.max_codes], seed, i, depth)
            waves.append(wave)
            mels.append(mel)
        if not waves:
            return np.zeros((0,), np.float32), np.zeros((0, self.vocoder_mels()), np.float32)
        return np.concatenate(waves), np.concatenate(mels)


def codes_to_wav(codes, *, flow: str, tokenizer: str | None = None, seed: int = 0, steps: int = 10,
                 guidance: float = 0.7, vocoder: Vocoder | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """One-call synthesis for `bajax decode`: codes [L, 8] -> (wave, mel, sample_rate)."""
    synth = Synthesizer.load(flow, tokenizer, steps=steps, guidance=guidance, vocoder=vocoder)
    wave, mel = synth(codes, seed)
    return wave, mel, synth.vocoder.sample_rate


def save_mel_png(mel, path: str, *, title: str = "", frame_rate: float = 50.0) -> None:
    """A PNG of a mel [T, n_mels] (time on x in seconds), drawn off-screen with matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from bajax.audio.io import write_bytes

    mel = np.asarray(mel, np.float32)
    fig = Figure(figsize=(max(4.0, min(16.0, mel.shape[0] / 50.0)), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if mel.shape[0]:
        image = ax.imshow(mel.T, origin="lower", aspect="auto", interpolation="nearest",
                          extent=(0.0, mel.shape[0] / frame_rate, 0, mel.shape[1]))
        fig.colorbar(image, ax=ax, label="log mel")
    else:
        ax.text(0.5, 0.5, "no audio generated", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("seconds")
    ax.set_ylabel("mel bin")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes(path, buf.getvalue())
