"""`bajax generate`: speech (and text) from the audio LLM, spoken through the tokenizer decoder, the flow
decoder and the vocoder.

  bajax generate --lm runs/lm_tiny --flow runs/flow_tiny_tok --text "Hello there." -o hello.wav
  bajax generate --lm runs/lm --tokenizer runs/tokenizer --flow runs/flow --audio question.wav -o answer.wav

Prints the generated text, writes the 24 kHz wav and a PNG of its mel (OUT.png unless --mel-png).
"""

from __future__ import annotations

import os
import sys
import time

from bajax.lm.generate import GREEDY, Sampling
from bajax.speech.generate import DEFAULT_SYSTEM, TEXT_SAMPLING, Limits

AUDIO = Sampling()


class UsageError(ValueError):
    pass


def _check_request(args) -> None:
    """Errors that need no model, before anything is loaded."""
    if args.text is not None and not args.text.strip():
        raise UsageError('--text is empty: give the words to speak, e.g. --text "Hello there."')
    if args.audio is not None and not os.path.exists(args.audio) and "://" not in args.audio:
        raise UsageError(f"--audio {args.audio}: file not found; pass a wav/flac/ogg/mp3 recording of the question")
    if not args.output.lower().endswith((".wav", ".flac", ".ogg")):
        raise UsageError(f"-o {args.output}: the output must end in .wav (or .flac / .ogg)")
    for name in ("max_frames", "max_text_tokens", "steps"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def _samplings(args) -> tuple[Sampling, Sampling]:
    if args.greedy:
        return GREEDY, GREEDY
    audio = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    text = Sampling(args.text_temperature, args.text_top_k, args.text_top_p, args.text_repetition_penalty)
    return audio, text


def _read_prompt_audio(args, sample_rate: int = 16000):
    """The spoken question at the tokenizer's 16 kHz, read before any model is loaded."""
    if args.audio is None:
        return None
    from bajax.audio import io as audio_io

    try:
        return audio_io.load(args.audio, sample_rate)
    except audio_io.AudioError as e:
        raise UsageError(f"--audio {args.audio}: {e}") from e


def _prompt(args, tok, wave, synth, max_len: int):
    import numpy as np

    from bajax.speech import generate as gen
    from bajax.tokenizer.encode import load_encode_fn

    if args.text is not None:
        return gen.text_prompt(args.text, tok)

    codes = load_encode_fn(synth.tokenizer_run)(wave)
    tokens, all_codes = gen.audio_prompt(codes, tok, args.system)
    if len(tokens) + 2 > max_len:
        room = max_len - 2 - (len(tokens) - len(codes))
        raise UsageError(
            f"--audio {args.audio} is {len(wave) / 16000:.1f} s = {len(codes)} code frames; with the system prompt "
            f"the prompt is {len(tokens)} tokens, over --max-len {max_len} (room for {max(room, 0)} frames "
            f"= {max(room, 0) / synth.code_rate:.1f} s); trim the recording or raise --max-len")
    return np.asarray(tokens), all_codes


def run(args, overrides) -> int:
    try:
        return _run(args)
    except UsageError as e:
        print(f"bajax generate: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # LoadError, PromptError, bad codes: messages name the flag and the fix
        print(f"bajax generate: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    _check_request(args)
    question = _read_prompt_audio(args)
    import jax
    import numpy as np

    from bajax.audio import io as audio_io
    from bajax.data import text as text_lib
    from bajax.flow.vocoder import GriffinLim
    from bajax.speech import generate as gen
    from bajax.speech import load as load_lib
    from bajax.speech.pipeline import Synthesizer, save_mel_png

    t0 = time.perf_counter()
    lm = load_lib.load(args.lm, "lm", flag="lm")
    m = lm.cfg.model
    tok = text_lib.make(args.text_tokenizer or lm.cfg.data.text_tokenizer, vocab=m.vocab, vocab_size=m.vocab_size)
    synth = Synthesizer.load(args.flow, args.tokenizer, steps=args.steps, guidance=args.guidance,
                             vocoder=GriffinLim(n_iter=args.gl_iters, seed=args.seed))
    if tuple(synth.codebook_sizes) != tuple(int(c) for c in m.codebook_sizes):
        raise UsageError(f"--lm {args.lm} predicts codebooks of sizes {tuple(m.codebook_sizes)} but the tokenizer "
                         f"decodes {synth.codebook_sizes}; pass the tokenizer whose codes the LM was trained on")
    max_len = args.max_len or int(lm.cfg.data.seq_len)
    tokens, codes = _prompt(args, tok, question, synth, max_len)
    audio_sampling, text_sampling = _samplings(args)
    t1 = time.perf_counter()
    out = gen.run(lm.model, tok, tokens, codes, key=jax.random.key(args.seed), audio_sampling=audio_sampling,
                  text_sampling=text_sampling, cache=not args.no_cache,
                  limits=Limits(max_len=max_len, max_frames=args.max_frames, max_text_tokens=args.max_text_tokens,
                                min_audio_frames=args.min_audio_frames))
    t2 = time.perf_counter()
    frames = len(out.frames)
    n_segments = sum(1 for s in out.segments if len(s.codes))
    wave, mel = synth.long(out.frames, args.seed)
    t3 = time.perf_counter()
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak > 0.99:  # Griffin-Lim has no output scale: keep the wav inside [-1, 1] rather than clip it
        wave = wave * (0.99 / peak)
    rate = synth.vocoder.sample_rate
    audio_io.write(args.output, wave, rate)
    png = args.mel_png or os.path.splitext(args.output)[0] + ".png"
    save_mel_png(mel, png, title=f"{os.path.basename(args.output)}: {frames} code frames",
                 frame_rate=rate / synth.vocoder.hop)
    # Control characters an undertrained LM may emit are shown escaped, never sent raw to the terminal.
    print("".join(c if c.isprintable() else repr(c)[1:-1] for c in out.text))
    print(f"wrote {args.output}: {len(wave)} samples = {len(wave) / rate:.2f} s at {rate} Hz from {frames} code "
          f"frames in {n_segments} audio segment(s) ({mel.shape[0]} mel frames x {synth.vocoder.hop}); mel {png}; "
          f"stop: {out.stop}; load {t1 - t0:.1f} s, LM {t2 - t1:.1f} s, synthesis {t3 - t2:.1f} s", flush=True)
    if not frames:
        print("bajax generate: warning: the LM generated no audio frames (the wav is empty)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="speak with the audio LLM: text or a spoken question in, speech out",
                       description=__doc__, formatter_class=_formatter())
    p.add_argument("--lm", required=True, help="audio LLM run directory (or its checkpoints/<step>)")
    p.add_argument("--flow", required=True, help="flow decoder run trained with model.cond_source=tokenizer")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer run (default: the flow run's model.tokenizer_checkpoint)")
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--text", help="text to speak (TTS layout: text <audiogen_start> ...)")
    prompt.add_argument("--audio", help="spoken question (speech-to-speech layout of SPEC section 3)")
    p.add_argument("-o", "--output", required=True, help="output wav (24 kHz)")
    p.add_argument("--mel-png", default="", help="PNG of the output mel (default: OUT.png)")
    p.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt of the speech-to-speech layout")
    p.add_argument("--text-tokenizer", default="",
                   help="tokenizer.json for the LM (default: the LM run's data.text_tokenizer)")
    p.add_argument("--seed", type=int, default=0, help="seeds LM sampling, flow noise and Griffin-Lim phases")
    g = p.add_argument_group("audio frames (reference demo defaults)")
    g.add_argument("--temperature", type=float, default=AUDIO.temperature)
    g.add_argument("--top-k", type=int, default=AUDIO.top_k)
    g.add_argument("--top-p", type=float, default=AUDIO.top_p)
    g.add_argument("--repetition-penalty", type=float, default=AUDIO.repetition_penalty)
    t = p.add_argument_group("text segments (reference demo defaults)")
    t.add_argument("--text-temperature", type=float, default=TEXT_SAMPLING.temperature)
    t.add_argument("--text-top-k", type=int, default=TEXT_SAMPLING.top_k)
    t.add_argument("--text-top-p", type=float, default=TEXT_SAMPLING.top_p)
    t.add_argument("--text-repetition-penalty", type=float, default=TEXT_SAMPLING.repetition_penalty)
    p.add_argument("--greedy", action="store_true", help="argmax everywhere (no sampling, no penalties)")
    limits = Limits()
    p.add_argument("--max-len", type=int, default=0,
                   help="prompt + generated tokens (default: the LM's training data.seq_len)")
    p.add_argument("--max-frames", type=int, default=limits.max_frames, help="frames per audio segment (12.5 Hz)")
    p.add_argument("--max-text-tokens", type=int, default=limits.max_text_tokens, help="tokens per text segment")
    p.add_argument("--min-audio-frames", type=int, default=limits.min_audio_frames,
                   help="speak at least this many frames: an earlier end-of-text starts an audio segment instead")
    p.add_argument("--steps", type=int, default=10, help="flow Euler steps")
    p.add_argument("--guidance", type=float, default=0.7, help="classifier-free guidance of the flow decoder")
    p.add_argument("--gl-iters", type=int, default=32, help="Griffin-Lim iterations")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole sequence at every step (the reference path; slow)")
    p.set_defaults(func=run)


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter
