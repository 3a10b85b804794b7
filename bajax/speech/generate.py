"""The speech-to-speech generation loop of the audio LLM (SPEC section 3, decoding rules of the reference demo).

Prompt layouts (the ones the LM is trained on, bajax/data/formats.py and SPEC section 3):
  audio prompt   <B_SYS> system <C_Q> <audio_start> pad*N <audio_end> <audiotext_start> <C_A>
  text prompt    text <audiogen_start>                       (the TTS / ITTS layout: text, then its speech)
  chat prompt    a conversation (system, user and assistant turns; bajax/data/chat.py) laid out by
                 `bajax.data.formats.chat_layout` exactly as `chat` training rows are, then
                 <audiotext_start> <C_A>; the audio prompt is the chat prompt of [system, spoken question]
then the LM continues with alternating segments `text_i <audiogen_start> frames_i <audiogen_end>` until it
emits `<|endoftext|>` or a length limit is reached:
- a text segment ends at punctuation (`STOP_STRINGS`), at a sampled `<audiogen_start>`, or after
  `max_text_tokens`; `<audiogen_start>` is then appended if the LM did not emit it itself;
- an audio segment draws one frame per step (8 sequential head evaluations, `bajax.lm.generate`); it ends
  when code 0 is end-of-audio -- codebook 0 only, the loop never looks at the other codebooks for it -- or
  after `max_frames`, and `<audiogen_end>` is appended;
- text sampling only allows ordinary text, `<audiogen_start>` and `<|endoftext|>` (the other special tokens
  are the loop's to place: an `audio_pad` sampled as text would be a frame without codes).

Two interchangeable backends feed the loop the next hidden state: `CachedLM` (KV cache across all segments:
one prefill, then one cached step per token or frame) and `RecomputeLM` (the full forward over the whole
sequence at every step, no cache): the reference the cached path is tested against token for token.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.data import chat, formats
from bajax.data.text import ByteTokenizer
from bajax.lm import generate as lm_generate
from bajax.lm import special_tokens
from bajax.lm.audio_head import DEPTH

# Text segments end after one of these (the reference demo's stop strings; '. ' keeps decimals whole).
STOP_STRINGS = (",", "!", "?", "，", "。", "！", "？", ". ")
# Text sampling defaults of the reference demo's text steps (SPEC's defaults are those of the audio frames).
TEXT_SAMPLING = lm_generate.Sampling(temperature=0.3, top_k=20, top_p=0.85, repetition_penalty=1.05)
DEFAULT_SYSTEM = chat.DEFAULT_SYSTEM


class PromptError(ValueError):
    """An unusable prompt; the message names the flag and the fix."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_len: int = 1024          # prompt + generated tokens (= KV cache size)
    max_frames: int = 500        # frames per audio segment (40 s at 12.5 Hz; the reference demo's 500)
    max_text_tokens: int = 50    # tokens per text segment (the reference demo's 50)
    min_audio_frames: int = 0    # an end-of-text before this many frames were spoken starts speaking instead


@dataclasses.dataclass
class Segment:
    text: str
    codes: np.ndarray            # int32 [frames, 8], valid codes only (no end-of-audio row)


@dataclasses.dataclass
class Generation:
    segments: list[Segment]
    tokens: np.ndarray           # the whole sequence (prompt + generated), int32 [n]
    codes: np.ndarray            # its per-position codes, int32 [n, 8] (zeros off audio frames)
    prompt_len: int
    stop: str                    # 'eos' | 'max_len'

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)

    @property
    def frames(self) -> np.ndarray:
        """All generated frames [F, 8] in order."""
        parts = [s.codes for s in self.segments]
        return np.concatenate(parts) if parts else np.zeros((0, DEPTH), np.int32)


# ------------------------------------------------------------------------------------------------ prompts

def text_prompt(text: str, tok) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], codes [n, 8]) of `text <audiogen_start>`."""
    if not text or not text.strip():
        raise PromptError('--text is empty: give the words to speak, e.g. --text "Hello there."')
    ids = np.concatenate([tok.encode(text), [tok.special["audiogen_start"]]]).astype(np.int32)
    return ids, np.zeros((len(ids), DEPTH), np.int32)


def audio_prompt(codes: np.ndarray, tok, system: str = DEFAULT_SYSTEM) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], codes [n, 8]) of the speech-to-speech question layout around the prompt's frames."""
    codes = np.asarray(codes, np.int32).reshape(-1, DEPTH)
    if len(codes) == 0:
        raise PromptError("--audio: the prompt is shorter than one code frame (80 ms); record a longer question")
    turns = (chat.Turn("system", (chat.Part(system),)), chat.Turn("user", (chat.Part("", 0),)))
    return chat_prompt(turns, [codes], tok)


def chat_prompt(turns, codes, tok) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], codes [n, 8]) of a conversation (bajax.data.chat.Turn; `codes[i]` = frames of span i) and
    the opening of the spoken reply: the layout of `chat` training rows (bajax.data.formats.chat_layout)."""
    for i, c in enumerate(codes):
        if len(c) == 0:
            raise PromptError(f"audio span {i} of the conversation is shorter than one code frame (80 ms)")
    return formats.chat_prompt(turns, [np.asarray(c, np.int32).reshape(-1, DEPTH) for c in codes], tok, DEPTH)


# ----------------------------------------------------------------------------------------------- backends

# The jitted pieces are module-level with the graphdef and the sampling settings static, so every
# generation with the same model shape reuses one compilation.

@functools.partial(jax.jit, static_argnums=0, donate_argnums=5)
def _extend(graphdef, state, tokens, codes, positions, cache):
    """Appends tokens [1, T] to the cache; -> (hidden of the last one [1, H], cache)."""
    m = nnx.merge(graphdef, state)
    h, cache = lm_generate.prefill(m, tokens, codes, positions, jnp.ones_like(tokens), cache)
    return h[:, -1], cache


@functools.partial(jax.jit, static_argnums=0)
def _last_hidden(graphdef, state, tokens, codes, n):
    """Full forward over tokens [1, S] of which the first n are real; -> hidden of position n - 1 [1, H]."""
    m = nnx.merge(graphdef, state)
    idx = jnp.arange(tokens.shape[1], dtype=jnp.int32)[None]
    batch = {"tokens": tokens, "audio_codes": codes, "positions": idx, "segment_ids": (idx < n).astype(jnp.int32)}
    return jax.lax.dynamic_index_in_dim(m.hidden(batch)[0], n - 1, keepdims=True)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _sample_text(graphdef, state, h, key, history, sampling, allowed):
    logits = nnx.merge(graphdef, state).text_logits(h).astype(jnp.float32)
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    return lm_generate.sample_logits(logits, key, sampling, history)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _sample_frame(graphdef, state, h, key, history, sampling):
    return lm_generate.sample_frame(nnx.merge(graphdef, state), h, key, sampling, history)


class CachedLM:
    """Hidden state of the last position, advancing a KV cache: `start(prompt)`, then `append(token, codes)`."""

    def __init__(self, model, max_len: int):
        self.graphdef, self.state = nnx.split(model)
        self.cache = model.init_cache(1, max_len)
        self.length = 0

    def _run(self, tokens: np.ndarray, codes: np.ndarray) -> jax.Array:
        n = len(tokens)
        positions = np.arange(self.length, self.length + n, dtype=np.int32)[None]
        h, self.cache = _extend(self.graphdef, self.state, jnp.asarray(tokens[None]), jnp.asarray(codes[None]),
                                jnp.asarray(positions), self.cache)
        self.length += n
        return h

    def start(self, tokens, codes):
        return self._run(np.asarray(tokens, np.int32), np.asarray(codes, np.int32))

    def append(self, token: int, codes=None):
        codes = np.zeros((1, DEPTH), np.int32) if codes is None else np.asarray(codes, np.int32).reshape(1, DEPTH)
        return self._run(np.array([token], np.int32), codes)


class RecomputeLM:
    """The no-cache reference: every call runs the full forward over the whole sequence so far (padded to
    `max_len` with segment-0 padding, which real tokens never attend to, so one compiled shape serves)."""

    def __init__(self, model, max_len: int):
        self.graphdef, self.state = nnx.split(model)
        self.tokens = np.zeros(max_len, np.int32)
        self.codes = np.zeros((max_len, DEPTH), np.int32)
        self.length = 0

    def _run(self, tokens, codes):
        n = len(tokens)
        self.tokens[self.length:self.length + n] = tokens
        self.codes[self.length:self.length + n] = codes
        self.length += n
        return _last_hidden(self.graphdef, self.state, jnp.asarray(self.tokens[None]),
                            jnp.asarray(self.codes[None]), jnp.int32(self.length))

    def start(self, tokens, codes):
        return self._run(np.asarray(tokens, np.int32), np.asarray(codes, np.int32))

    def append(self, token: int, codes=None):
        return self._run([token], np.zeros(DEPTH, np.int32) if codes is None else np.asarray(codes, np.int32))


# -------------------------------------------------------------------------------------------------- loop

def text_vocabulary(tok, vocab_size: int) -> np.ndarray:
    """bool [vocab_size]: ids the text steps may sample -- ids the text tokenizer produces (not the unused
    ids between the 256 bytes and the special tokens of a byte vocabulary, nor the padding of a Qwen
    vocabulary), plus `<audiogen_start>` and `<|endoftext|>`."""
    allowed = np.zeros(vocab_size, bool)
    allowed[:special_tokens.BYTE_VOCAB if isinstance(tok, ByteTokenizer) else min(tok.vocab_size, vocab_size)] = True
    allowed[list(tok.special.values())] = False
    allowed[[tok.special["audiogen_start"], tok.special["endoftext"]]] = True
    return allowed


def _ends_segment(text: str) -> bool:
    return text.endswith(STOP_STRINGS)


def run(model, tok, prompt_tokens: np.ndarray, prompt_codes: np.ndarray, *, key: jax.Array,
        audio_sampling: lm_generate.Sampling = lm_generate.Sampling(),
        text_sampling: lm_generate.Sampling = TEXT_SAMPLING, limits: Limits = Limits(),
        cache: bool = True, on_frame=None) -> Generation:
    """Generates text and speech after a prompt (see the module docstring); `cache=False` is the reference.
    `on_frame(frame [8])` is called with each audio code frame as it is sampled (streaming synthesis)."""
    special = tok.special
    eos, gen_start, gen_end, pad = (special[k] for k in ("endoftext", "audiogen_start", "audiogen_end",
                                                        "audio_pad"))
    eoa = int(model.codebook_sizes[0])
    n_prompt = len(prompt_tokens)
    if n_prompt + 2 > limits.max_len:  # room for at least one frame or token and its closing token
        raise PromptError(f"the prompt is {n_prompt} tokens but --max-len is {limits.max_len}: shorten the "
                          f"prompt or raise --max-len (at most the context the LM was trained for)")
    lm = (CachedLM if cache else RecomputeLM)(model, limits.max_len)
    graphdef, state = nnx.split(model)
    allowed = jnp.asarray(text_vocabulary(tok, int(model.embed_tokens.num)))
    tokens = list(np.asarray(prompt_tokens, np.int32))
    codes = [np.asarray(c, np.int32) for c in np.asarray(prompt_codes, np.int32)]
    zero = np.zeros(DEPTH, np.int32)

    def push(token: int, frame=None):
        tokens.append(token)
        codes.append(zero if frame is None else frame)
        return lm.append(token, frame)

    def text_history():
        hist = np.full((1, limits.max_len), -1, np.int32)
        hist[0, :len(tokens)] = tokens
        return jnp.asarray(hist)

    h = lm.start(np.asarray(tokens), np.stack(codes))
    in_audio = tokens[-1] == gen_start
    segments, text_ids, stop = [], [], None
    step = 0
    spoken = 0  # frames generated so far
    while stop is None:
        if not in_audio:
            text_ids = []
            while True:
                if len(tokens) + 2 > limits.max_len:
                    stop = "max_len"
                    break
                step += 1
                t = int(_sample_text(graphdef, state, h, jax.random.fold_in(key, step), text_history(), text_sampling,
                                     allowed)[0])
                if t == eos and spoken >= limits.min_audio_frames:
                    stop = "eos"
                    break
                if t == eos:  # a reply must speak: too early to end, so the LM starts an audio segment
                    break
                if t == gen_start:
                    break
                h = push(t)
                text_ids.append(t)
                if _ends_segment(tok.decode(text_ids)) or len(text_ids) >= limits.max_text_tokens:
                    break
            if stop is not None:
                if text_ids:
                    segments.append(Segment(tok.decode(text_ids), np.zeros((0, DEPTH), np.int32)))
                break
            h = push(gen_start)
        # An audio segment; the history of the repetition penalty is this segment's frames.
        frames = []
        history = np.full((1, limits.max_frames, DEPTH), -1, np.int32)
        while len(frames) < limits.max_frames and len(tokens) + 2 <= limits.max_len:
            step += 1
            frame = np.asarray(_sample_frame(graphdef, state, h, jax.random.fold_in(key, step),
                                             jnp.asarray(history), audio_sampling))[0]
            if frame[0] == eoa:  # end of audio: decided by codebook 0 alone
                break
            history[0, len(frames)] = frame
            frames.append(frame)
            if on_frame is not None:
                on_frame(frame)
            spoken += 1
            h = push(pad, frame)
        h = push(gen_end)
        segments.append(Segment(tok.decode(text_ids),
                                np.stack(frames) if frames else np.zeros((0, DEPTH), np.int32)))
        text_ids, in_audio = [], False
        if len(tokens) + 2 > limits.max_len:
            stop = "max_len"
    return Generation(segments, np.asarray(tokens, np.int32), np.stack(codes).astype(np.int32), n_prompt, stop)
