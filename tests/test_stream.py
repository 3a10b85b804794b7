"""Streaming synthesis (bajax.speech.stream, bajax.flow.streaming) against offline synthesis of the same codes
and seed, with a real (randomly initialised) tiny tokenizer decoder and flow decoder."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import config as config_lib
from bajax.flow.model import FlowDecoder
from bajax.speech.pipeline import Synthesizer
from bajax.speech.stream import Streamer, VocoderStream
from bajax.tokenizer.encode import frozen_decoder
from bajax.tokenizer.model import Tokenizer

CHUNK = 8          # the flow decoder's attention chunk in these tests: 2 code frames


@pytest.fixture(scope="module")
def parts():
    tok_cfg = config_lib.defaults("tokenizer")
    tok_cfg.model.rvq.codebook_sizes = (16,) * 8
    tok = Tokenizer(tok_cfg.model, rngs=nnx.Rngs(0))
    flow_cfg = config_lib.load("configs/flow/tiny.py", [
        "model.cond_source=tokenizer", f"model.cond_dim={tok_cfg.model.d_model}", f"model.chunk={CHUNK}"]).model
    flow = FlowDecoder(flow_cfg, rngs=nnx.Rngs(1))
    # Random weights give a flat field; scale the last projection so chunks actually differ from each other.
    flow.estimator.final_proj.kernel[...] *= 30.0
    return tok_cfg, frozen_decoder(tok), flow


def _codes(n, seed=0):
    return np.random.default_rng(seed).integers(0, 16, size=(n, 8)).astype(np.int32)


class FrameLocal:
    """A vocoder whose samples of a frame depend on that frame alone (a tone whose level is the frame's mean
    log-mel): streamed windows then must join into exactly the offline wave, cross-fades included."""
    sample_rate, hop, n_mels = 24000, 480, 80

    def __call__(self, mel):
        mel = np.asarray(mel, np.float32)
        level = np.exp(mel.mean(axis=1) / 10.0)[:, None]
        tone = np.sin(2 * np.pi * 200.0 * np.arange(self.hop) / self.sample_rate)[None, :]
        return (level * tone).astype(np.float32).reshape(-1)


def _streamed_mel(streamer, codes):
    mels, push = [], streamer.vocoder.push

    def record(mel, final=False):
        mels.append(mel)
        return push(mel, final=final)

    streamer.vocoder.push = record
    chunks = list(streamer.codes(codes))
    return np.concatenate(mels), chunks


def test_flow_chunks_equal_offline_synthesis_given_the_same_features(parts):
    """With the tokenizer decoder's features of the whole utterance (its GroupNorm statistics are the one
    non-causal part), every streamed chunk's mel equals offline sampling: cached keys/values and conv inputs
    per Euler step reproduce the block-causal U-Net exactly (to float rounding of the longer softmax)."""
    tok_cfg, decode, flow = parts
    codes = _codes(13)                                 # 6 chunks of 2 codes and a partial one
    full = decode(jnp.asarray(codes[None]), jnp.asarray([13]))

    def whole_utterance_features(c, lengths):
        return full

    offline = Synthesizer(decode, flow, tok_cfg, steps=3, vocoder=FrameLocal())
    streamed = Streamer(Synthesizer(whole_utterance_features, flow, tok_cfg, steps=3, vocoder=FrameLocal()),
                        seed=5, overlap=2, context=2)
    assert streamed.flow.chunk_codes == 2 and streamed.flow.frames == CHUNK
    mel_off = offline.mel(codes, seed=5)
    mel_st, chunks = _streamed_mel(streamed, codes)
    assert mel_st.shape == mel_off.shape == (52, 80)
    assert np.abs(mel_off).max() > 1.0 and np.abs(np.diff(mel_off, axis=0)).max() > 0.1
    # Float rounding only: XLA blocks a conv or matmul of 8 frames differently from one of 52, and 3 guided
    # Euler steps through a field scaled x30 amplify it; measured 1.05e-4 at |mel| <= 28 (3.7e-6 of the
    # scale). A wrong cache or conv context would be off by O(1).
    np.testing.assert_allclose(mel_st, mel_off, rtol=0, atol=1e-5 * np.abs(mel_off).max())
    # Buckets: chunk 7 attends over 8 chunks of keys, one compiled shape per power of two.
    assert set(streamed.flow._fns) == {1, 2, 4, 8}


def test_the_first_chunk_is_the_offline_synthesis_of_its_codes(parts):
    """With the features the stream computes itself (tokenizer decoder on the codes so far), chunk 0 is
    exactly what offline synthesis makes of those codes alone; later chunks differ only through the
    decoder's GroupNorm statistics (measured for the README by bench/stream.py)."""
    tok_cfg, decode, flow = parts
    synth = Synthesizer(decode, flow, tok_cfg, steps=3, vocoder=FrameLocal())
    codes = _codes(9, seed=1)
    mel_st, _ = _streamed_mel(Streamer(synth, seed=2, overlap=2, context=2), codes)
    first = synth.mel(codes[:2], seed=2)
    np.testing.assert_allclose(mel_st[:CHUNK], first, rtol=0, atol=1e-5 * np.abs(first).max())
    assert mel_st.shape == synth.mel(codes, seed=2).shape


def test_vocoder_windows_join_into_the_offline_wave(parts):
    """Fixed windows, held-back overlap and Hann cross-fades: with a frame-local vocoder the streamed audio is
    the offline audio sample for sample; chunk timestamps are contiguous and only the last is final."""
    mel = np.random.default_rng(0).normal(-4.0, 1.0, (37, 80)).astype(np.float32)
    voc = FrameLocal()
    stream = VocoderStream(voc, 8, overlap=3, context=2)
    pieces = [stream.push(mel[i:i + 8], final=i + 8 >= len(mel)) for i in range(0, len(mel), 8)]
    np.testing.assert_allclose(np.concatenate(pieces), voc(mel), rtol=0, atol=1e-6)
    assert [len(p) for p in pieces] == [5 * 480, 8 * 480, 8 * 480, 8 * 480, 8 * 480]


def test_hift_windows_continue_the_utterance_phase_noise_and_f0(parts):
    """A HiFT window is the middle of its utterance, not a new signal: per-frame noise, sines carried on by the
    f0 of the frames before it, and the known f0 of its context frames. Away from the cross-fades the streamed
    audio is then the offline audio (to 1e-3 of a 0.08-rms wave); a window restarting its sines' phase was off
    by 0.03-0.05 in every frame after the first window."""
    from bajax.speech.hift import HiFTVocoder
    from bajax.vocoder.generator import HiFTGenerator

    gen = HiFTGenerator(config_lib.load("configs/vocoder/tiny.py", []).model, rngs=nnx.Rngs(0))
    # A random f0 predictor says ~0.1 Hz; a speaking pitch (1-220 Hz here) is what makes the phase matter.
    gen.f0_predictor.classifier.kernel[...] *= 1000.0
    gen.f0_predictor.classifier.bias[...] += 150.0
    voc = HiFTVocoder(gen, seed=1, bucket=16)
    rng = np.random.default_rng(0)
    mel = (rng.normal(-5, 1.5, (70, 80)) + 3 * np.sin(np.arange(70) / 5)[:, None]).astype(np.float32)
    offline, f0 = voc.window(mel)
    assert float(np.mean(f0)) > 30.0
    stream = VocoderStream(voc, 16, overlap=8, context=8)
    streamed = np.concatenate([stream.push(mel[i:i + 16], final=i + 16 >= len(mel)) for i in range(0, 70, 16)])
    np.testing.assert_array_equal(stream._f0, f0)          # each frame's f0 from the window that emitted it
    diff = np.abs(streamed - offline).reshape(70, 480).max(axis=1)
    faded = np.zeros(70, bool)
    for start in (8, 24, 40, 56):                          # the held-back frames, cross-faded at each join
        faded[start:start + 8] = True
    assert diff[~faded].max() < 1e-3, np.round(diff, 4)
    assert diff[faded].max() < 0.1


def test_stream_chunks_cover_the_reply_once_with_timestamps(parts):
    tok_cfg, decode, flow = parts
    streamer = Streamer(Synthesizer(decode, flow, tok_cfg, steps=2), seed=0, overlap=2, context=2)
    chunks = list(streamer.codes(_codes(7)))
    assert sum(len(c.pcm) for c in chunks) == 7 * 4 * 480
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    starts = np.cumsum([0] + [len(c.pcm) for c in chunks[:-1]]) / 24000
    np.testing.assert_allclose([c.start for c in chunks], starts)
    assert all(b.ready_s >= a.ready_s for a, b in zip(chunks, chunks[1:]))
    assert chunks[0].int16().dtype == np.int16


def test_a_chunk_that_is_not_a_whole_number_of_attention_chunks_is_refused(parts):
    tok_cfg, decode, flow = parts
    with pytest.raises(ValueError, match="not a multiple of the flow decoder's attention chunk .8 frames"):
        Streamer(Synthesizer(decode, flow, tok_cfg, steps=2), chunk_codes=3)


def test_a_reply_longer_than_the_capacity_continues_as_a_new_piece(parts):
    tok_cfg, decode, flow = parts
    synth = Synthesizer(decode, flow, tok_cfg, steps=2, vocoder=FrameLocal())
    per_piece = 4                                      # 2 chunks of 2 codes: 0.32 s at 12.5 Hz
    streamer = Streamer(synth, seed=1, capacity_seconds=per_piece / synth.code_rate, overlap=2, context=2)
    assert streamer.flow.max_chunks == 2
    codes = _codes(10, seed=3)
    mel_st, _ = _streamed_mel(streamer, codes)
    assert mel_st.shape == (40, 80)
    # Piece 1 starts afresh with its own noise: its first chunk is offline synthesis of its codes, piece seed 1.
    first_of_piece_1 = Synthesizer(decode, flow, tok_cfg, steps=2).mel(codes[4:6], seed=1, index=1)
    np.testing.assert_allclose(mel_st[16:24], first_of_piece_1, rtol=0,
                               atol=1e-5 * np.abs(first_of_piece_1).max())
    assert streamer.flow._prenet_kv[0].shape[2] == 2 * CHUNK        # keys of one piece at most
