"""`bajax eval codec`: audio -> tokenizer codes -> (flow decoder -> 24 kHz mel -> vocoder) -> audio, scored
against the input, at one or several RVQ depths (the paper's Table 1 on real metrics).

Per utterance and depth k (default: all layers):
  tokenizer_mel_l1   the tokenizer's own decoder on the greedy codes of its first k layers against its
                     training target mel (what `eval_mel_mae` measures in training), no flow or vocoder;
  with --flow        the same codes through the flow decoder (its sampler, `--steps`, `--guidance`, seeded)
                     and the vocoder (--vocoder HiFT run, else Griffin-Lim), and the RECONSTRUCTION metrics of
                     that 24 kHz wave against the input at 24 kHz (cut to the span the codes cover).
Depth k keeps codebooks 1..k and decodes the others as absent (code -1 adds nothing), as layerwise dropout
trained the tokenizer to.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.eval import protocol, runner

SAMPLE_RATE, TOKENIZER_RATE = 24000, 16000


class TokenizerCodec:
    """Greedy codes of a 16 kHz wave and the tokenizer decoder's mel error at RVQ depth k."""

    def __init__(self, tokenizer):
        from bajax.tokenizer.encode import BUCKET, encode_fn

        self.n_layers = int(tokenizer.bridge.rvq.n_layers)
        self.max_samples = encode_fn(tokenizer, name="eval").max_samples
        self.bucket = BUCKET
        graphdef, self.state = nnx.split(tokenizer)

        @functools.partial(jax.jit, static_argnums=3)
        def run(state, wave, length, depth):
            tok = nnx.merge(graphdef, state)
            codes, n = tok.encode(wave[None], length[None])
            codes = jnp.where(jnp.arange(codes.shape[-1]) < depth, codes, -1)
            target, target_lengths = tok.target_mel(wave[None], length[None])
            refined = tok.decode(codes, n, target_frames=target.shape[1])["refined_mel"]
            valid = (jnp.arange(target.shape[1]) < target_lengths[0])[None, :, None]
            err = jnp.sum(jnp.abs(refined - target) * valid) / (jnp.sum(valid) * target.shape[-1])
            return codes[0], n[0], err

        self._run = run

    def __call__(self, wave16: np.ndarray, depth: int) -> tuple[np.ndarray, float]:
        """(codes [L, n] of the first `depth` layers (-1 beyond), the decoder's refined-mel L1)."""
        if len(wave16) > self.max_samples:
            limit = self.max_samples / TOKENIZER_RATE
            raise protocol.RowError("too_long", f"{len(wave16) / TOKENIZER_RATE:.1f} s is longer than the "
                                                f"tokenizer encodes at once ({limit:.1f} s)")
        padded = np.zeros(max(self.bucket, -(-len(wave16) // self.bucket) * self.bucket), np.float32)
        padded[: len(wave16)] = wave16
        codes, n, err = self._run(self.state, jnp.asarray(padded), jnp.asarray(len(wave16), jnp.int32), depth)
        return np.asarray(codes[: int(n)]), float(err)


def parse_layers(text: str, n_layers: int) -> tuple[int, ...]:
    """"1,4,8" -> (1, 4, 8); "" -> (n_layers,). A ValueError naming --layers otherwise."""
    if not text:
        return (n_layers,)
    try:
        layers = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--layers {text!r}: give comma-separated RVQ depths, e.g. 1,4,8") from None
    bad = [k for k in layers if not 1 <= k <= n_layers]
    if bad:
        raise ValueError(f"--layers {text!r}: depths {bad} outside 1..{n_layers} (this tokenizer's RVQ layers)")
    return tuple(dict.fromkeys(layers))


def evaluate(settings: runner.Settings, *, tokenizer: str | None = None, flow: str | None = None,
             vocoder: str = "", layers: str = "", steps: int = 10, guidance: float = 0.7,
             gl_iters: int = 32) -> tuple[dict, dict]:
    from bajax import runs
    from bajax.speech.pipeline import Synthesizer
    from bajax.speech.reply import Request, make_vocoder

    if not tokenizer and not flow:
        raise ValueError("give --tokenizer RUN (codes and the tokenizer's mel error) and/or --flow RUN "
                         "(speech through the flow decoder, trained on that tokenizer)")
    synth = None
    if flow:
        voc = make_vocoder(Request(lm="", flow=flow, output="", vocoder=vocoder, seed=settings.seed,
                                   gl_iters=gl_iters))
        synth = Synthesizer.load(flow, tokenizer, steps=steps, guidance=guidance, vocoder=voc)
        tokenizer = synth.tokenizer_run
    loaded = runs.load(tokenizer, "tokenizer", flag="tokenizer", model_overrides={"loss.align_weight": 0.0})
    codec = TokenizerCodec(loaded.model)
    depths = parse_layers(layers, codec.n_layers)
    models = {"tokenizer": f"{loaded.run.workdir} (step {loaded.step})"}
    if synth is not None:
        models["flow"] = f"{flow} (steps {steps}, guidance {guidance})"
        models["vocoder"] = vocoder or f"griffin-lim ({gl_iters} iterations)"

    def score(utt: protocol.Utterance) -> list[dict]:
        wave16, source_sr = protocol.load_audio(utt, TOKENIZER_RATE)
        ref = protocol.load_audio(utt, SAMPLE_RATE)[0] if synth is not None else None
        rows = []
        for k in depths:
            codes, err = codec(wave16, k)
            row = {"layers": k, "source_sr": source_sr, "frames": len(codes), "tokenizer_mel_l1": err}
            if synth is not None:
                wave, _ = synth.long(np.where(codes < 0, 0, codes), settings.seed, depth=k)
                runner.reconstruction(row, ref, wave, SAMPLE_RATE)
            rows.append(row)
        return rows

    return runner.evaluate(
        "codec", settings, score=score, metrics=("tokenizer_mel_l1", *runner.RECONSTRUCTION), models=models,
        sample_rate=SAMPLE_RATE, group_by="layers",
        protocol_notes={"layers": list(depths), "reference": "the input utterance at 24 kHz, cut to the span its "
                                                             "codes cover (1280 samples at 16 kHz per code)"})
