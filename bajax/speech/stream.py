"""Streaming speech out: code frames in as the audio LLM emits them, 24 kHz audio chunks out.

Every `chunk_codes` frames (default: the flow decoder's attention chunk, 100 mel frames = 25 code frames =
2 s) one compiled call turns the new frames into mel:
  tokenizer decoder  the codes so far (padded to a bucket) -> `hidden_states_before_dconv2`; only the new
                     frames' features are used. Its two GroupNorm(1) layers normalise with statistics of
                     the whole input, so the features of early chunks are computed from the codes so far,
                     not from the whole reply as offline: the one place where streaming cannot equal
                     offline synthesis (tests/test_stream.py measures it).
  flow decoder       the Pre-Net and each Euler step of the estimator on the new frames only, with the
                     caches of earlier chunks (bajax.flow.streaming): exact, given the same features. The
                     starting noise of a frame is the offline one (`pipeline.frame_noise`).
Then the vocoder (HiFT or Griffin-Lim) runs on a fixed-length window of the mel: `overlap` frames already
emitted plus `context` frames before them (left context for its convolutions) plus the new frames. The
last `overlap` frames of a window are held back (they lack right context) and cross-faded with the next
window's version of them (a Hann ramp, as CosyVoice 2 joins chunks); the final chunk emits everything.

Compiled shapes are fixed: one flow call per power-of-two bucket of chunks (the key length of its attention),
two vocoder windows (the first chunk and the steady window). `warmup()` compiles them all (AOT) before the
first frame, so no chunk waits for a compilation. A reply longer than `capacity_seconds` continues as a new
piece (fresh caches, as `Synthesizer.long` splits offline synthesis), joined by the same cross-fade.
"""

from __future__ import annotations

import dataclasses
import math
import queue
import threading
import time
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bajax.flow import cfm, streaming
from bajax.speech.pipeline import Synthesizer, frame_noise, vocoder_mels

LOG_MEL_SILENCE = float(np.log(1e-5))    # the mel floor (bajax.audio.mel), silence for padding a window


@dataclasses.dataclass(frozen=True)
class AudioChunk:
    """`pcm` float32 [n] at `sample_rate`, covering [start, start + n / sample_rate) s of the reply;
    `ready_s`: wall seconds from the stream's start (the prompt's end) until it was ready."""
    pcm: np.ndarray
    start: float
    sample_rate: int
    index: int
    ready_s: float
    final: bool

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.sample_rate

    def int16(self) -> np.ndarray:
        return (np.clip(self.pcm, -1.0, 1.0) * 32767.0).round().astype(np.int16)


class FlowStream:
    """Codes -> mel chunk by chunk with a loaded `Synthesizer`'s tokenizer decoder and flow decoder."""

    def __init__(self, synth: Synthesizer, *, chunk_codes: int | None = None, capacity_seconds: float = 30.0,
                 seed: int = 0):
        model = nnx.merge(synth.flow_graphdef, synth.flow_state)
        self.synth, self.per_code = synth, synth.mel_per_code
        attention_chunk = int(model.estimator.down.blocks.layers.chunk)
        self.chunk_codes = int(chunk_codes or max(1, attention_chunk // self.per_code))
        self.frames = self.chunk_codes * self.per_code                  # mel frames per chunk
        if self.frames % attention_chunk:
            raise ValueError(f"a stream chunk of {self.chunk_codes} code frames is {self.frames} mel frames, not "
                             f"a multiple of the flow decoder's attention chunk ({attention_chunk} frames, "
                             f"model.chunk): pass a multiple of {max(1, attention_chunk // self.per_code)} "
                             "code frames")
        wanted = max(1, int(capacity_seconds * synth.code_rate + 1e-6) // self.chunk_codes)
        self.max_chunks = max(1, min(wanted, synth.max_codes // self.chunk_codes))
        if synth.max_codes < self.chunk_codes:
            raise ValueError(f"a stream chunk of {self.chunk_codes} code frames exceeds the tokenizer decoder's "
                             f"{synth.max_codes} frames; pass fewer --chunk-codes")
        self.buckets = tuple(sorted({min(2 ** i, self.max_chunks)
                                     for i in range(math.ceil(math.log2(self.max_chunks)) + 1)}))
        self.n_mels, self.seed = int(model.n_mels), int(seed)
        capacity = self.max_chunks * self.frames
        self._fresh_caches = lambda: (
            streaming.prenet_cache(model.prenet, 1, capacity),
            jax.tree.map(lambda a: jnp.broadcast_to(a, (synth.steps, *a.shape)),
                         streaming.estimator_cache(model.estimator, 2, capacity)))
        self._fns: dict[int, object] = {}
        self._jit = jax.jit(self._chunk, static_argnums=(0,), donate_argnums=(7, 8))
        self.compile_seconds = 0.0
        self.reset()

    def _chunk(self, n_chunks, flow_state, decode_state, codes, n_codes, piece_key, offset, prenet_kv, caches):
        """codes [1, n_chunks * chunk_codes, 8] (-1 past n_codes): mel of frames [offset, offset + frames)."""
        synth, f = self.synth, self.frames
        model = nnx.merge(synth.flow_graphdef, flow_state)
        hidden, _ = synth.decode(decode_state, codes, n_codes[None])    # [1, 4 n - 1, d]
        i = offset + jnp.arange(f)
        # The offline Pre-Net resamples 4L - 1 features onto 4L mel frames: frame i reads feature i - 1.
        cond = hidden[:, jnp.clip(i - 1, 0, hidden.shape[1] - 1)]
        end = jnp.minimum(offset + f, n_codes * self.per_code)
        valid = (i < end)[None]
        keys = n_chunks * f
        mu, prenet_kv = streaming.prenet_step(model.prenet, cond, valid, prenet_kv, offset, end, keys)
        noise = synth.temperature * frame_noise(piece_key, offset, f, self.n_mels)[None]
        mel, caches = streaming.sample_step(model.estimator, mu, noise, valid, caches, offset, end, keys,
                                            grid=jnp.asarray(cfm.time_grid(synth.steps)),
                                            guidance=synth.guidance)
        return mel[0], prenet_kv, caches

    def _args(self, n_chunks: int):
        codes = jax.ShapeDtypeStruct((1, n_chunks * self.chunk_codes, len(self.synth.codebook_sizes)), jnp.int32)
        scalar = jax.ShapeDtypeStruct((), jnp.int32)
        return (self.synth.flow_state, self.synth.decode_state, codes, scalar, jax.random.key(0), scalar,
                *self._fresh_caches())

    def compile(self, n_chunks: int) -> object:
        bucket = next(b for b in self.buckets if b >= n_chunks)
        if bucket not in self._fns:
            t0 = time.perf_counter()
            self._fns[bucket] = self._jit.lower(bucket, *self._args(bucket)).compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._fns[bucket], bucket

    def warmup(self) -> float:
        t0 = time.perf_counter()
        for b in self.buckets:
            self.compile(b)
        return time.perf_counter() - t0

    def reset(self) -> None:
        """A new utterance: no codes, fresh caches, piece 0."""
        self._codes: list[np.ndarray] = []
        self._done = 0          # code frames turned into mel, in this piece
        self._piece = 0
        self._prenet_kv, self._caches = self._fresh_caches()

    def push(self, frames, *, final: bool = False) -> list[np.ndarray]:
        """Adds code frames [k, 8]; returns the mel chunks [frames, n_mels] that became complete (with `final`,
        also the partial last one)."""
        frames = np.asarray(frames, np.int32).reshape(-1, len(self.synth.codebook_sizes))
        if len(frames):
            self._codes.extend(self.synth.check_codes(frames))
        out = []
        while len(self._codes) - self._done >= self.chunk_codes or (final and len(self._codes) > self._done):
            if self._done == self.max_chunks * self.chunk_codes:      # capacity: a new piece
                self._codes = self._codes[self._done:]
                self._done, self._piece = 0, self._piece + 1
                self._prenet_kv, self._caches = self._fresh_caches()
            n_chunks = self._done // self.chunk_codes + 1
            fn, bucket = self.compile(n_chunks)
            n = min(len(self._codes), n_chunks * self.chunk_codes)
            codes = np.full((1, bucket * self.chunk_codes, frames.shape[-1] if frames.size else 8), -1, np.int32)
            codes[0, :n] = np.stack(self._codes[:n])
            key = jax.random.fold_in(jax.random.key(self.seed), self._piece)
            mel, self._prenet_kv, self._caches = fn(self.synth.flow_state, self.synth.decode_state,
                                                    jnp.asarray(codes), np.int32(n), key,
                                                    np.int32(self._done * self.per_code), self._prenet_kv,
                                                    self._caches)
            new = n - self._done
            out.append(np.asarray(mel, np.float32)[:new * self.per_code])
            self._done = n
        return out


class VocoderStream:
    """Mel chunks -> audio chunks with any `Vocoder` on fixed-length windows, joined by cross-fades."""

    def __init__(self, vocoder, chunk_frames: int, *, overlap: int = 8, context: int = 8):
        self.vocoder, self.hop = vocoder, int(vocoder.hop)
        self.chunk_frames, self.overlap, self.context = int(chunk_frames), int(overlap), int(context)
        if not 0 < self.overlap < self.chunk_frames:
            raise ValueError(f"the vocoder overlap ({overlap} frames) must be in 1..{self.chunk_frames - 1}")
        self.window = self.context + self.overlap + self.chunk_frames
        n = self.overlap * self.hop
        self.fade_in = (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        self._mel = np.zeros((0, vocoder_mels(self.vocoder)), np.float32)
        self._emitted = 0       # frames whose audio is out (the held-back tail not included)
        self._tail = None       # audio of the held-back frames from the previous window
        self._f0 = np.zeros((0,), np.float64)   # f0 of the emitted frames (a vocoder with `window`, as HiFT)

    def warmup(self) -> float:
        """Compiles the vocoder for both window lengths (when it compiles per length, as HiFTVocoder does)."""
        t0 = time.perf_counter()
        n_mels = vocoder_mels(self.vocoder)
        for frames in (self.chunk_frames, self.window):
            self.vocoder(np.full((frames, n_mels), LOG_MEL_SILENCE, np.float32))
        return time.perf_counter() - t0

    def push(self, mel: np.ndarray, *, final: bool = False) -> np.ndarray:
        """Adds mel frames; returns the audio that is final now (the last `overlap` frames wait for the next
        call unless `final`)."""
        self._mel = np.concatenate([self._mel, np.asarray(mel, np.float32)])
        total = len(self._mel)
        if total == self._emitted:
            return np.zeros((0,), np.float32)
        first = self._tail is None
        start = max(0, self._emitted - self.context)                  # the window's first mel frame
        length = self.chunk_frames if first and total <= self.chunk_frames else self.window
        length = max(length, total - start)
        window = np.full((length, self._mel.shape[1]), LOG_MEL_SILENCE, np.float32)
        window[:total - start] = self._mel[start:]
        stop = total if final else max(self._emitted, total - self.overlap)
        if hasattr(self.vocoder, "window"):
            # A source-filter vocoder (HiFT) continues the utterance: its noise is that of these frames and
            # its sines have turned as often as the f0 of the frames before the window says.
            cycles = float(np.sum(self._f0[:start])) * self.hop / self.vocoder.sample_rate
            wave, f0 = self.vocoder.window(window, start, cycles, self._f0[start:])
            # Each frame's f0 from the window it is emitted from: the context before it, nothing held back.
            self._f0 = np.concatenate([self._f0, f0[self._emitted - start:stop - start].astype(np.float64)])
        else:
            wave = self.vocoder(window)
        wave = np.asarray(wave, np.float32)
        piece = wave[(self._emitted - start) * self.hop:(stop - start) * self.hop].copy()
        if self._tail is not None:                                     # cross-fade the held-back frames
            n = min(len(self._tail), len(piece))
            piece[:n] = self._tail[:n] * (1.0 - self.fade_in[:n]) + piece[:n] * self.fade_in[:n]
        self._tail = None if final else wave[(stop - start) * self.hop:(total - start) * self.hop]
        self._emitted = stop
        return piece


class Streamer:
    """Code frames in (`push`), `AudioChunk`s out; `finish()` flushes the last partial chunk.

    `synthesis_seconds`: wall time spent inside `push`/`finish` since `reset` (tokenizer decoder, flow decoder
    and vocoder: the synthesis share of the real-time factor); `reply`: the `Generated` of the last `stream`."""

    def __init__(self, synth: Synthesizer, *, chunk_codes: int | None = None, seed: int = 0,
                 capacity_seconds: float = 30.0, overlap: int = 8, context: int = 8):
        self.flow = FlowStream(synth, chunk_codes=chunk_codes, capacity_seconds=capacity_seconds, seed=seed)
        self.vocoder = VocoderStream(synth.vocoder, self.flow.frames, overlap=overlap, context=context)
        self.sample_rate = int(synth.vocoder.sample_rate)
        self.reset()

    def warmup(self) -> float:
        return self.flow.warmup() + self.vocoder.warmup()

    def reset(self, clock: float | None = None) -> None:
        self.flow.reset()
        self.vocoder.reset()
        self._index, self._samples = 0, 0
        self.synthesis_seconds, self.reply = 0.0, None
        self._t0 = time.perf_counter() if clock is None else clock

    def _chunks(self, mels, final: bool) -> list[AudioChunk]:
        out = []
        for j, mel in enumerate(mels):
            last = final and j == len(mels) - 1
            pcm = self.vocoder.push(mel, final=last)
            out.append(self._emit(pcm, last))
        if final and not mels:                  # nothing new: the held-back tail is the last audio
            out.append(self._emit(self.vocoder.push(np.zeros((0, self.flow.n_mels), np.float32), final=True),
                                  True))
        return out

    def _emit(self, pcm, final) -> AudioChunk:
        chunk = AudioChunk(pcm=pcm, start=self._samples / self.sample_rate, sample_rate=self.sample_rate,
                           index=self._index, ready_s=time.perf_counter() - self._t0, final=final)
        self._index += 1
        self._samples += len(pcm)
        return chunk

    def push(self, frames) -> list[AudioChunk]:
        t0 = time.perf_counter()
        try:
            return self._chunks(self.flow.push(frames), final=False)
        finally:
            self.synthesis_seconds += time.perf_counter() - t0

    def finish(self) -> list[AudioChunk]:
        t0 = time.perf_counter()
        try:
            return self._chunks(self.flow.push(np.zeros((0, len(self.flow.synth.codebook_sizes))), final=True),
                                final=True)
        finally:
            self.synthesis_seconds += time.perf_counter() - t0

    def codes(self, frames) -> Iterator[AudioChunk]:
        """All chunks of a whole code sequence [L, 8] (as if the frames arrived one by one)."""
        frames = np.asarray(frames).reshape(-1, len(self.flow.synth.codebook_sizes))
        for i in range(0, len(frames), self.flow.chunk_codes):
            yield from self.push(frames[i:i + self.flow.chunk_codes])
        yield from self.finish()


def stream(talker, *, text: str | None = None, question=None, seed: int | None = None, history=None,
           chunk_codes: int | None = None, streamer: Streamer | None = None) -> Iterator[AudioChunk]:
    """A spoken reply as it is generated: `for chunk in bajax.speech.stream(talker, text="...")` yields
    `AudioChunk`s (24 kHz float32 pcm with timestamps) while the audio LLM is still generating.

    `talker` is a `bajax.speech.reply.Talker` (the loaded runs); `streamer` a warmed-up `Streamer` to reuse.
    The LM runs in a worker thread and hands each code frame over as it is sampled."""
    seed = talker.req.seed if seed is None else seed
    streamer = streamer or Streamer(talker.synth, chunk_codes=chunk_codes, seed=seed)
    frames: queue.Queue = queue.Queue()
    result: dict = {}

    def generate():
        try:
            result["reply"] = talker(text=text, question=question, seed=seed, history=history,
                                     on_frame=frames.put, synthesize=False)
        except BaseException as e:            # re-raised in the caller's thread
            result["error"] = e
        finally:
            frames.put(None)

    streamer.reset()
    worker = threading.Thread(target=generate, name="bajax-lm", daemon=True)
    worker.start()
    pending = []
    while True:
        frame = frames.get()
        if frame is None:
            break
        pending.append(frame)
        if len(pending) >= streamer.flow.chunk_codes:
            yield from streamer.push(np.stack(pending))
            pending = []
    worker.join()
    if "error" in result:
        raise result["error"]
    streamer.reply = result["reply"]          # text, frames, segments, stop, LM seconds (its wave is empty)
    if pending:
        yield from streamer.push(np.stack(pending))
    yield from streamer.finish()
