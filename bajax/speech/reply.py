"""A spoken reply from three trained runs (audio LLM, tokenizer, flow decoder): the work behind `bajax generate`
(bajax/cli/generate.py) and the quickstart's stage 6.

    reply = speak(Request(lm="runs/lm", flow="runs/flow", text="Hello there.", output="hello.wav"))
    reply.text, reply.report      # the generated text, one line of sizes and timings

`speak` writes the 24 kHz wav and a PNG of its mel. Request fields are named after the `bajax generate` flags,
and a bad request raises `UsageError` naming the flag and the fix, before any model is loaded where it can.
The mel is spoken by Griffin-Lim, or by a trained HiFT vocoder run when `vocoder` names one.
"""

from __future__ import annotations

import dataclasses
import os
import time

from bajax.lm.generate import Sampling
from bajax.speech.generate import DEFAULT_SYSTEM, TEXT_SAMPLING, Limits

_LIMITS = Limits()


class UsageError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Request:
    lm: str                                  # audio LLM run directory (or its checkpoints/<step>)
    flow: str                                # flow decoder run trained with model.cond_source=tokenizer
    output: str                              # the wav to write (24 kHz; .wav, .flac or .ogg)
    tokenizer: str | None = None             # default: the flow run's model.tokenizer_checkpoint
    text: str | None = None                  # text to speak, or
    audio: str | None = None                 # a spoken question (speech-to-speech layout)
    mel_png: str = ""                        # default: OUTPUT with .png
    system: str = DEFAULT_SYSTEM
    text_tokenizer: str = ""                 # default: the LM run's data.text_tokenizer
    seed: int = 0                            # LM sampling, flow noise and the vocoder's (GL phases, HiFT source)
    audio_sampling: Sampling = Sampling()
    text_sampling: Sampling = TEXT_SAMPLING
    max_len: int = 0                         # prompt + generated tokens (0: the LM's data.seq_len)
    max_frames: int = _LIMITS.max_frames
    max_text_tokens: int = _LIMITS.max_text_tokens
    min_audio_frames: int = _LIMITS.min_audio_frames
    steps: int = 10                          # flow Euler steps
    guidance: float = 0.7
    gl_iters: int = 32                       # Griffin-Lim iterations (when no `vocoder` is given)
    vocoder: str = ""                        # a HiFT vocoder run (kind 'vocoder'); "" = Griffin-Lim
    cache: bool = True                       # False: recompute the whole sequence at every step (reference)
    history: str = ""                        # JSON turns so far (bajax/speech/conversation.py); the prompt is
    #                                          then the next user turn of that conversation (chat layout)
    history_out: str = ""                    # write history + this turn + the reply there (needs `history`)
    stream: bool = False                     # speak while generating: the wav grows chunk by chunk (speak_stream)
    stream_chunk: int = 0                    # code frames per streamed chunk (0: the flow's attention chunk)
    stream_warmup: bool = False              # speak a short reply first: the LM compiles before the measured one


@dataclasses.dataclass(frozen=True)
class Reply:
    text: str        # the generated text, control characters escaped
    wav: str
    png: str
    frames: int      # generated code frames (0: the wav is empty)
    report: str      # "wrote OUT: N samples = ... ; load .. s, LM .. s, synthesis .. s"


def check(req: Request) -> None:
    """Errors that need no model, before anything is loaded."""
    if (req.text is None) == (req.audio is None):
        raise UsageError("give exactly one of --text and --audio")
    if req.text is not None and not req.text.strip():
        raise UsageError('--text is empty: give the words to speak, e.g. --text "Hello there."')
    if req.audio is not None and not os.path.exists(req.audio) and "://" not in req.audio:
        raise UsageError(f"--audio {req.audio}: file not found; pass a wav/flac/ogg/mp3 recording of the question")
    if not req.output.lower().endswith((".wav", ".flac", ".ogg")):
        raise UsageError(f"-o {req.output}: the output must end in .wav (or .flac / .ogg)")
    if req.history_out and not req.history:
        raise UsageError("--history-out needs --history: start a conversation with a history file that holds []")
    for name in ("max_frames", "max_text_tokens", "steps"):
        if getattr(req, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(req, name)}")
    if req.stream_chunk < 0:
        raise UsageError(f"--stream-chunk must be positive (code frames per chunk), got {req.stream_chunk}")
    if (req.stream_chunk or req.stream_warmup) and not req.stream:
        raise UsageError("--stream-chunk and --stream-warmup go with --stream: add --stream")
    if req.stream and "://" in req.output:
        raise UsageError(f"-o {req.output}: --stream writes the wav chunk by chunk as it is generated, which needs "
                         "a local path; write locally (or drop --stream)")
    if req.stream and not req.output.lower().endswith(".wav"):
        raise UsageError(f"-o {req.output}: --stream writes 16-bit PCM .wav; name the output OUT.wav")


def _read_prompt_audio(req: Request, sample_rate: int = 16000):
    """The spoken question at the tokenizer's 16 kHz, read before any model is loaded."""
    if req.audio is None:
        return None
    from bajax.audio import io as audio_io

    try:
        return audio_io.load(req.audio, sample_rate)
    except audio_io.AudioError as e:
        raise UsageError(f"--audio {req.audio}: {e}") from e


def _prompt(tok, synth, max_len: int, *, system: str, text: str | None = None, wave=None,
            audio_name: str = "the question", history=None, history_path: str = ""):
    import numpy as np

    from bajax.models.tokenizer import load_encode_fn
    from bajax.speech import conversation
    from bajax.speech import generate as gen

    if history is not None:
        return conversation.prompt(history, tok, load_encode_fn(synth.tokenizer_run), path=history_path,
                                   system=system, max_len=max_len, text=text, wave=wave)
    if text is not None:
        return gen.text_prompt(text, tok)

    codes = load_encode_fn(synth.tokenizer_run)(wave)
    tokens, all_codes = gen.audio_prompt(codes, tok, system)
    if len(tokens) + 2 > max_len:
        room = max_len - 2 - (len(tokens) - len(codes))
        raise UsageError(
            f"--audio {audio_name} is {len(wave) / 16000:.1f} s = {len(codes)} code frames; with the system prompt "
            f"the prompt is {len(tokens)} tokens, over --max-len {max_len} (room for {max(room, 0)} frames "
            f"= {max(room, 0) / synth.code_rate:.1f} s); trim the recording or raise --max-len")
    return np.asarray(tokens), all_codes


def make_vocoder(req: Request):
    """The request's vocoder: its HiFT run (a LoadError naming --vocoder when unusable) or Griffin-Lim."""
    if req.vocoder:
        from bajax.speech.hift import HiFTVocoder

        return HiFTVocoder.load(req.vocoder, seed=req.seed, flag="vocoder")
    from bajax.flow.vocoder import GriffinLim

    return GriffinLim(n_iter=req.gl_iters, seed=req.seed)


@dataclasses.dataclass(frozen=True)
class Generated:
    text: str            # the generated text (raw)
    wave: object         # float32 [samples] at `sample_rate`, peak-limited to 0.99
    mel: object          # [frames, n_mels]
    sample_rate: int
    frames: int          # generated code frames
    segments: int        # audio segments with frames
    stop: str
    lm_seconds: float
    synthesis_seconds: float
    parts: tuple = ()    # (text, frames) of each generated segment, in order (their speech is back to back)


class Talker:
    """The loaded runs of a Request (vocoder, LM, text tokenizer, tokenizer + flow decoder), for many replies:
    `bajax generate` makes one, `bajax eval tts|s2s` one per utterance."""

    def __init__(self, req: Request):
        from bajax import runs
        from bajax.data import text as text_lib
        from bajax.speech.pipeline import Synthesizer

        self.req = req
        vocoder = make_vocoder(req)             # first: a wrong --vocoder fails before the LM is loaded
        self.lm = runs.load(req.lm, "lm", flag="lm")
        m = self.lm.cfg.model
        self.tok = text_lib.for_model(req.text_tokenizer or self.lm.cfg.data.text_tokenizer, m)
        self.synth = Synthesizer.load(req.flow, req.tokenizer, steps=req.steps, guidance=req.guidance,
                                      vocoder=vocoder)
        if tuple(self.synth.codebook_sizes) != tuple(int(c) for c in m.codebook_sizes):
            raise UsageError(f"--lm {req.lm} predicts codebooks of sizes {tuple(m.codebook_sizes)} but the "
                             f"tokenizer decodes {self.synth.codebook_sizes}; pass the tokenizer whose codes the "
                             "LM was trained on")
        self.max_len = req.max_len or int(self.lm.cfg.data.seq_len)

    @property
    def sample_rate(self) -> int:
        return int(self.synth.vocoder.sample_rate)

    def __call__(self, *, text: str | None = None, question=None, seed: int | None = None,
                 audio_name: str = "the question", history=None, on_frame=None,
                 synthesize: bool = True) -> Generated:
        """A reply to `text` (TTS layout) or to `question` (16 kHz wave, speech-to-speech layout); with
        `history` (bajax.speech.conversation.read), to that conversation continued by `text` or `question`.
        `on_frame` receives each code frame as it is sampled; `synthesize=False` leaves the wave empty (the
        caller streams the frames, bajax.speech.stream)."""
        import jax
        import numpy as np

        from bajax.speech import generate as gen

        req = self.req
        seed = req.seed if seed is None else seed
        tokens, codes = _prompt(self.tok, self.synth, self.max_len, system=req.system, text=text, wave=question,
                                audio_name=audio_name, history=history, history_path=req.history)
        t1 = time.perf_counter()
        out = gen.run(self.lm.model, self.tok, tokens, codes, key=jax.random.key(seed),
                      audio_sampling=req.audio_sampling, text_sampling=req.text_sampling, cache=req.cache,
                      limits=Limits(max_len=self.max_len, max_frames=req.max_frames,
                                    max_text_tokens=req.max_text_tokens, min_audio_frames=req.min_audio_frames),
                      on_frame=on_frame)
        t2 = time.perf_counter()
        if synthesize:
            wave, mel = self.synth.long(out.frames, seed)
        else:
            wave, mel = np.zeros((0,), np.float32), np.zeros((0, self.synth.vocoder_mels()), np.float32)
        t3 = time.perf_counter()
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak > 0.99:  # Griffin-Lim has no output scale (HiFT clamps at 0.99): keep the wav inside [-1, 1]
            wave = wave * (0.99 / peak)
        return Generated(text=out.text, wave=wave, mel=mel, sample_rate=self.sample_rate, frames=len(out.frames),
                         segments=sum(1 for s in out.segments if len(s.codes)), stop=out.stop,
                         lm_seconds=t2 - t1, synthesis_seconds=t3 - t2,
                         parts=tuple((s.text, len(s.codes)) for s in out.segments))


def _say(line: str) -> None:
    print(line, flush=True)


def _load(req: Request):
    """(question wave, history, Talker, load seconds): the request checked, its inputs read before any model
    loads, then the runs."""
    check(req)
    question = _read_prompt_audio(req)
    from bajax.speech import conversation

    history = conversation.read(req.history) if req.history else None
    t0 = time.perf_counter()
    talker = Talker(req)
    return question, history, talker, time.perf_counter() - t0


def speak(req: Request, *, log=_say) -> Reply:
    """Loads the runs, generates, synthesises and writes req.output and its mel PNG. Raises UsageError (or
    another ValueError: LoadError, PromptError, bad codes) with a message that names the flag and the fix.
    With `req.stream`, `speak_stream` (progress lines go to `log`)."""
    if req.stream:
        return speak_stream(req, log=log)
    from bajax.audio import io as audio_io
    from bajax.speech import conversation
    from bajax.speech.pipeline import save_mel_png

    question, history, talker, load_s = _load(req)
    got = talker(text=req.text, question=question, audio_name=req.audio or "", history=history)
    rate, hop = got.sample_rate, talker.synth.vocoder.hop
    audio_io.write(req.output, got.wave, rate)
    png = req.mel_png or os.path.splitext(req.output)[0] + ".png"
    save_mel_png(got.mel, png, title=f"{os.path.basename(req.output)}: {got.frames} code frames",
                 frame_rate=rate / hop)
    if req.history_out:
        conversation.write(req.history_out, conversation.next_history(
            history, system=req.system, text=req.text, audio=req.audio, parts=got.parts, wav=req.output,
            seconds_per_frame=talker.synth.mel_per_code * hop / rate))
    # Control characters an undertrained LM may emit are shown escaped, never sent raw to the terminal.
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in got.text)
    report = (f"wrote {req.output}: {len(got.wave)} samples = {len(got.wave) / rate:.2f} s at {rate} Hz from "
              f"{got.frames} code frames in {got.segments} audio segment(s) ({got.mel.shape[0]} mel frames x "
              f"{hop}); mel {png}; stop: {got.stop}; load {load_s:.1f} s, LM {got.lm_seconds:.1f} s, "
              f"synthesis {got.synthesis_seconds:.1f} s" + (f"; history {req.history_out}" if req.history_out else ""))
    return Reply(text=text, wav=req.output, png=png, frames=got.frames, report=report)


def speak_stream(req: Request, *, log=_say) -> Reply:
    """`bajax generate --stream`: speaks while the LM generates (bajax.speech.stream). Loads the runs, compiles
    every streaming shape (`Streamer.warmup`) before generating, then appends each audio chunk to req.output
    (16-bit PCM wav, flushed per chunk: a reader sees the file grow) and logs one line per chunk and a report
    with the first-packet latency and the real-time factors. No mel PNG. The first generation of a process
    compiles the LM, which lands in the first-packet latency unless `stream_warmup` speaks a short reply first.

    Griffin-Lim's wave has no fixed scale: offline synthesis rescales the whole wave to a 0.99 peak, a stream
    cannot (the peak of later chunks is unknown when a chunk goes out), so each chunk is clipped to [-1, 1]."""
    import numpy as np
    import soundfile as sf

    from bajax.speech import conversation
    from bajax.speech.stream import Streamer, stream

    question, history, talker, load_s = _load(req)
    streamer = Streamer(talker.synth, chunk_codes=req.stream_chunk or None, seed=req.seed)
    compile_s = streamer.warmup()
    log(f"warmup: compiled {len(streamer.flow.buckets)} flow bucket(s) of {streamer.flow.chunk_codes} code frames "
        f"and 2 vocoder windows in {compile_s:.1f} s")
    if req.stream_warmup:
        t1 = time.perf_counter()
        for _ in stream(talker, text="Hello.", seed=req.seed, streamer=streamer):
            pass
        log(f"warmup: a first reply (LM compilation included) in {time.perf_counter() - t1:.1f} s")
    rate, hop = streamer.sample_rate, talker.synth.vocoder.hop
    samples, chunks, first_s, last_s = 0, 0, None, 0.0
    os.makedirs(os.path.dirname(os.path.abspath(req.output)), exist_ok=True)
    with sf.SoundFile(req.output, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for chunk in stream(talker, text=req.text, question=question, seed=req.seed, history=history,
                            streamer=streamer):
            out.write(np.clip(chunk.pcm, -1.0, 1.0))
            out.flush()
            samples += len(chunk.pcm)
            chunks += 1
            first_s = chunk.ready_s if first_s is None else first_s
            last_s = chunk.ready_s
            log(f"chunk {chunk.index}: {chunk.seconds:.2f} s of audio at {chunk.start:.2f} s, ready at "
                f"{chunk.ready_s:.3f} s" + (" (final)" if chunk.final else ""))
    got = streamer.reply
    if req.history_out:
        conversation.write(req.history_out, conversation.next_history(
            history, system=req.system, text=req.text, audio=req.audio, parts=got.parts, wav=req.output,
            seconds_per_frame=talker.synth.mel_per_code * hop / rate))
    audio_s = samples / rate
    rtf = f"{last_s / audio_s:.3f}" if audio_s else "n/a"
    synth_rtf = f"{streamer.synthesis_seconds / audio_s:.3f}" if audio_s else "n/a"
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in got.text)
    segments = sum(1 for _, n in got.parts if n)
    report = (f"wrote {req.output}: {samples} samples = {audio_s:.2f} s at {rate} Hz from {got.frames} code "
              f"frames in {segments} audio segment(s), streamed in {chunks} chunk(s); first packet "
              f"{(first_s or 0.0):.3f} s after generation started; real-time factor {rtf} (generation + synthesis "
              f"{last_s:.2f} s), synthesis only {synth_rtf} ({streamer.synthesis_seconds:.2f} s); stop: {got.stop}; "
              f"load {load_s:.1f} s, compile {compile_s:.1f} s" + (f"; history {req.history_out}" if req.history_out
                                                                    else ""))
    return Reply(text=text, wav=req.output, png="", frames=got.frames, report=report)
