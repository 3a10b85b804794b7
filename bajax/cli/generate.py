"""`bajax generate`: speech (and text) from the audio LLM, spoken through the tokenizer decoder, the flow
decoder and the vocoder.

  bajax generate --lm runs/lm_tiny --flow runs/flow_tiny_tok --text "Hello there." -o hello.wav
  bajax generate --lm runs/lm --tokenizer runs/tokenizer --flow runs/flow --audio question.wav -o answer.wav
  bajax generate --lm runs/lm --flow runs/flow --vocoder runs/vocoder --text "Hello there." -o hello.wav
  echo '[]' > chat.json                                      # a conversation, one turn per call:
  bajax generate --lm runs/lm_sft --flow runs/flow --audio q1.wav --history chat.json --history-out chat.json \\
      -o a1.wav
  bajax generate --lm runs/lm_sft --flow runs/flow --text "And then?" --history chat.json \\
      --history-out chat.json -o a2.wav
  bajax generate --lm runs/lm --flow runs/flow --text "Hello there." -o hello.wav --stream   # speak while generating

Prints the generated text, writes the 24 kHz wav and a PNG of its mel (OUT.png unless --mel-png). The mel is
spoken by Griffin-Lim, or by a trained HiFT vocoder run with --vocoder (configs/vocoder/).
With --history the prompt is the next user turn of that conversation (the layout of `chat` training rows,
bajax/data/chat.py); without it --text is spoken as given (the TTS layout).
With --stream the speech is synthesised chunk by chunk while the LM generates (bajax.speech.stream): the wav
grows as chunks are ready, one line per chunk, then the first-packet latency and the real-time factors (no PNG).
`bajax serve` streams the same chunks over HTTP.
"""

from __future__ import annotations

import dataclasses
import sys

from bajax.lm.generate import GREEDY, Sampling
from bajax.speech.reply import Request, speak

DEFAULTS = Request(lm="", flow="", output="")


def _samplings(args) -> tuple[Sampling, Sampling]:
    if args.greedy:
        return GREEDY, GREEDY
    audio = Sampling(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    text = Sampling(args.text_temperature, args.text_top_k, args.text_top_p, args.text_repetition_penalty)
    return audio, text


def request(args):
    """The parsed flags as a `bajax.speech.reply.Request` (its fields are named after the flags)."""
    audio, text = _samplings(args)
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(Request) if hasattr(args, f.name)}
    same.setdefault("output", "")       # bajax eval writes no wav of its own
    return Request(**same, audio_sampling=audio, text_sampling=text, cache=not args.no_cache)


def run(args, overrides) -> int:
    try:
        reply = speak(request(args))
    except ValueError as e:  # UsageError, LoadError, PromptError, bad codes: messages name the flag and the fix
        print(f"bajax generate: {e}", file=sys.stderr)
        return 2
    print(reply.text)
    print(reply.report, flush=True)
    if not reply.frames:
        print("bajax generate: warning: the LM generated no audio frames (the wav is empty)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="speak with the audio LLM: text or a spoken question in, speech out",
                       description=__doc__, formatter_class=_formatter())
    add_model_flags(p)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--text", help="text to speak (TTS layout: text <audiogen_start> ...), or with --history "
                                       "the user's typed turn")
    prompt.add_argument("--audio", help="spoken question (speech-to-speech layout of SPEC section 3)")
    p.add_argument("-o", "--output", required=True, help="output wav (24 kHz)")
    p.add_argument("--mel-png", default="", help="PNG of the output mel (default: OUT.png)")
    p.add_argument("--history", default="",
                   help="JSON file of the conversation so far (turns as in chat manifest rows, audio as paths); "
                        "--text/--audio is then the next user turn")
    p.add_argument("--history-out", default="",
                   help="write the history plus this turn and the reply (its speech as spans of -o) to this file")
    add_generation_flags(p)
    st = p.add_argument_group("streaming")
    st.add_argument("--stream", action="store_true",
                    help="synthesise while the LM generates and write the wav chunk by chunk (local 16-bit .wav; "
                         "each chunk is clipped to [-1, 1]: unlike the offline path the whole wave cannot be "
                         "rescaled to its peak, which Griffin-Lim may exceed); prints the first-packet latency and "
                         "real-time factor")
    add_stream_flags(st)
    st.add_argument("--stream-warmup", action="store_true",
                    help="speak a short reply first, so that the LM's compilation (the first generation of a "
                         "process) is not counted in the first-packet latency")
    p.set_defaults(func=run)


def add_stream_flags(p) -> None:
    """--stream-chunk (also `bajax serve`)."""
    p.add_argument("--stream-chunk", type=int, default=DEFAULTS.stream_chunk,
                   help="code frames per streamed chunk, a multiple of the flow decoder's attention chunk "
                        "(default: one attention chunk, 25 frames = 2 s)")


def add_model_flags(p) -> None:
    """--lm, --flow, --tokenizer, --vocoder: the runs that speak (also `bajax eval tts|s2s`)."""
    p.add_argument("--lm", required=True, help="audio LLM run directory (or its checkpoints/<step>)")
    p.add_argument("--flow", required=True, help="flow decoder run trained with model.cond_source=tokenizer")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer run (default: the flow run's model.tokenizer_checkpoint)")
    p.add_argument("--vocoder", default=DEFAULTS.vocoder,
                   help="HiFT vocoder run (or its checkpoints/<step>) to speak the mel with (default: Griffin-Lim)")


def add_generation_flags(p) -> None:
    """Sampling, limits and synthesis settings of a `Request` (also `bajax eval tts|s2s`)."""
    p.add_argument("--system", default=DEFAULTS.system, help="system prompt of the speech-to-speech layout")
    p.add_argument("--text-tokenizer", default="",
                   help="tokenizer.json for the LM (default: the LM run's data.text_tokenizer)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seeds LM sampling, flow noise and the vocoder (Griffin-Lim phases, HiFT source noise)")
    g = p.add_argument_group("audio frames (reference demo defaults)")
    g.add_argument("--temperature", type=float, default=DEFAULTS.audio_sampling.temperature)
    g.add_argument("--top-k", type=int, default=DEFAULTS.audio_sampling.top_k)
    g.add_argument("--top-p", type=float, default=DEFAULTS.audio_sampling.top_p)
    g.add_argument("--repetition-penalty", type=float, default=DEFAULTS.audio_sampling.repetition_penalty)
    t = p.add_argument_group("text segments (reference demo defaults)")
    t.add_argument("--text-temperature", type=float, default=DEFAULTS.text_sampling.temperature)
    t.add_argument("--text-top-k", type=int, default=DEFAULTS.text_sampling.top_k)
    t.add_argument("--text-top-p", type=float, default=DEFAULTS.text_sampling.top_p)
    t.add_argument("--text-repetition-penalty", type=float, default=DEFAULTS.text_sampling.repetition_penalty)
    p.add_argument("--greedy", action="store_true", help="argmax everywhere (no sampling, no penalties)")
    p.add_argument("--max-len", type=int, default=DEFAULTS.max_len,
                   help="prompt + generated tokens (default: the LM's training data.seq_len)")
    p.add_argument("--max-frames", type=int, default=DEFAULTS.max_frames,
                   help="frames per audio segment (12.5 Hz)")
    p.add_argument("--max-text-tokens", type=int, default=DEFAULTS.max_text_tokens, help="tokens per text segment")
    p.add_argument("--min-audio-frames", type=int, default=DEFAULTS.min_audio_frames,
                   help="speak at least this many frames: an earlier end-of-text starts an audio segment instead")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="flow Euler steps")
    p.add_argument("--guidance", type=float, default=DEFAULTS.guidance,
                   help="classifier-free guidance of the flow decoder")
    p.add_argument("--gl-iters", type=int, default=DEFAULTS.gl_iters,
                   help="Griffin-Lim iterations (without --vocoder)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole sequence at every step (the reference path; slow)")


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter
