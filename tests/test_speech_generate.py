"""Speech generation (issue 5 item 7): the LM loop, codes -> 24 kHz wave, and `bajax generate` end to end.

The loop tests use a randomly initialised tiny LM (fast, no training). The synthesis and CLI tests share
one module-scoped set of tiny runs trained for two steps each through the trainer: a tokenizer, an LM on
the embedded corpus and a flow decoder conditioned on that tokenizer (the paper path, 4L - 1 frames).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from bajax import config as config_lib
from bajax.data.text import ByteTokenizer
from bajax.lm.generate import GREEDY
from bajax.lm.model import AudioLLM
from bajax.speech import generate as gen

CORPUS_WAV = "bajax/data/corpus/audio/d0000-en.flac"


def _tiny_lm(seed=0):
    cfg = config_lib.defaults("lm").model
    return AudioLLM(cfg, rngs=nnx.Rngs(seed)), ByteTokenizer(cfg.vocab_size)


def _run(model, tok, prompt, *, cache, limits=gen.Limits(max_len=96, max_frames=6, max_text_tokens=6), **kw):
    tokens, codes = prompt
    kw.setdefault("audio_sampling", GREEDY)
    kw.setdefault("text_sampling", GREEDY)
    return gen.run(model, tok, tokens, codes, key=jax.random.key(0), limits=limits, cache=cache, **kw)


# ------------------------------------------------------------------------------------------ the LM loop

@pytest.mark.parametrize("layout", ["text", "audio"])
@pytest.mark.slow
def test_kv_cache_generation_equals_recomputing_the_whole_sequence(layout):
    model, tok = _tiny_lm()
    if layout == "text":
        prompt = gen.text_prompt("Hello there.", tok)
    else:
        frames = np.random.default_rng(0).integers(0, 64, size=(5, 8))
        prompt = gen.audio_prompt(frames, tok, "Be brief.")
    cached = _run(model, tok, prompt, cache=True)
    reference = _run(model, tok, prompt, cache=False)
    np.testing.assert_array_equal(cached.tokens, reference.tokens)
    np.testing.assert_array_equal(cached.codes, reference.codes)
    assert cached.text == reference.text and cached.stop == reference.stop
    generated = cached.tokens[cached.prompt_len:]
    assert len(generated) > 4 and (generated == tok.special["audio_pad"]).any()   # frames were generated
    if layout == "audio":   # the speech-to-speech layout opens the answer with <C_A>
        assert cached.tokens[cached.prompt_len - 1] == tok.special["C_A"]


def test_end_of_audio_comes_only_from_codebook_0():
    model, tok = _tiny_lm(1)
    # Codebooks 1..7 want end-of-audio above everything, codebook 0 never: the frames must run to the
    # limit with every code inside its codebook (the loop never stops on codebooks 1..7).
    for k, head in enumerate(model.audio_head.heads):
        head.bias[...] = head.bias[...].at[-1].set(-1e4 if k == 0 else 1e4)
    prompt = gen.text_prompt("Hi.", tok)
    limits = gen.Limits(max_len=64, max_frames=5, max_text_tokens=4)
    out = _run(model, tok, prompt, cache=True, limits=limits, audio_sampling=gen.lm_generate.Sampling())
    first = out.segments[0].codes
    assert first.shape == (5, 8)
    assert (first < np.array(model.codebook_sizes)).all() and (first >= 0).all()
    # Codebook 0 wants it: the segment closes at once with no frame.
    model.audio_head.heads[0].bias[...] = model.audio_head.heads[0].bias[...].at[-1].set(1e4)
    out = _run(model, tok, prompt, cache=True, limits=limits)
    assert out.segments[0].codes.shape == (0, 8)
    s = tok.special
    assert out.tokens[out.prompt_len - 1:out.prompt_len + 1].tolist() == [s["audiogen_start"], s["audiogen_end"]]


def test_loop_stops_audio_on_codebook_0_and_text_at_punctuation(monkeypatch):
    """Scripted samplers: an end-of-audio value in codebook 3 does not stop a segment, code 0 does; text
    segments end at ',' and the LM's <|endoftext|> ends the generation."""
    model, tok = _tiny_lm()
    eoa = model.codebook_sizes[0]
    s = tok.special
    frames = iter([[1, 2, model.codebook_sizes[3], 4, 5, 6, 7, 8], [3] * 8, [eoa] + [0] * 7,
                   [9] * 8, [eoa] + [0] * 7])
    text = iter([*tok.encode("Hi, you"), s["endoftext"]])
    monkeypatch.setattr(gen, "_sample_frame", lambda *a: jnp.asarray([next(frames)], jnp.int32))
    monkeypatch.setattr(gen, "_sample_text", lambda *a: jnp.asarray([next(text)], jnp.int32))
    out = _run(model, tok, gen.text_prompt("Go.", tok), cache=True,
               limits=gen.Limits(max_len=96, max_frames=8, max_text_tokens=8))
    assert [(seg.text, len(seg.codes)) for seg in out.segments] == [("", 2), ("Hi,", 1), (" you", 0)]
    assert out.stop == "eos"
    assert tok.decode(out.tokens[out.prompt_len:]).count("<audiogen_start>") == 1   # forced after "Hi,"


def test_text_steps_only_sample_text_audiogen_start_and_eos():
    _, tok = _tiny_lm()
    allowed = gen.text_vocabulary(tok, 384)
    assert allowed[:256].all() and not allowed[256:tok.special["endoftext"]].any()
    assert allowed[tok.special["audiogen_start"]] and allowed[tok.special["endoftext"]]
    assert not allowed[tok.special["audio_pad"]] and not allowed[tok.special["audiogen_end"]]


def test_prompt_errors_name_the_flag_and_the_fix():
    model, tok = _tiny_lm()
    for empty in ("", "   "):
        with pytest.raises(gen.PromptError, match=r"--text is empty"):
            gen.text_prompt(empty, tok)
    with pytest.raises(gen.PromptError, match=r"shorter than one code frame"):
        gen.audio_prompt(np.zeros((0, 8)), tok)
    prompt = gen.audio_prompt(np.zeros((40, 8)), tok)
    with pytest.raises(gen.PromptError, match=r"raise --max-len"):
        _run(model, tok, prompt, cache=True, limits=gen.Limits(max_len=32))


# ------------------------------------------------------------------------------- trained tiny runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tokenizer, LM and flow runs, two training steps each (about a minute on 2 CPU cores)."""
    from bajax.train.trainer import train

    root = tmp_path_factory.mktemp("speech_runs")
    one = jax.devices()[:1]   # batch 2 on one device: the 8 fake test devices would need batch 8
    fast = ["train.steps=2", "train.batch_size=2", "train.eval_every=0", "checkpoint.async_save=false",
            "metrics.tensorboard=false"]
    # The tokenizer's codebooks match the LM's (the embedded corpus's bootstrap codes are 8 x 64).
    tok = config_lib.load("configs/tokenizer/tiny.py", fast + [
        "data.audio.crop_seconds=0.8", "model.rvq.codebook_sizes=(64, 64, 64, 64, 64, 64, 64, 64)"])
    train(tok, str(root / "tok"), quiet=True, devices=one)
    lm = config_lib.load("configs/lm/tiny.py", fast + ["data.seq_len=128"])
    train(lm, str(root / "lm"), quiet=True, devices=one)
    flow = config_lib.load("configs/flow/tiny.py", fast + [
        "data.audio.crop_seconds=0.8", "model.cond_source=tokenizer", "model.cond_dim=64",
        f"model.tokenizer_checkpoint={root / 'tok'}"])
    train(flow, str(root / "flow"), quiet=True, devices=one)
    return {name: str(root / name) for name in ("tok", "lm", "flow")}


def test_load_restores_only_the_model_from_a_workdir_or_a_step_dir(runs):
    from bajax import runs as load

    a = load.load(runs["lm"], "lm")
    b = load.load(f"{runs['lm']}/checkpoints/2", "lm")
    assert a.step == b.step == 2 and isinstance(a.model, AudioLLM)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(nnx.state(a.model)),
                 nnx.to_pure_dict(nnx.state(b.model)))
    with pytest.raises(load.LoadError, match="is a 'lm' run, expected a 'flow' run"):
        load.load(runs["lm"], "flow")
    with pytest.raises(load.LoadError, match="not a `bajax train` run"):
        load.load(runs["lm"] + "/nowhere", "lm")


def test_output_is_frames_x_480_samples_at_24khz_and_seeded(runs):
    from bajax.speech.pipeline import Synthesizer

    synth = Synthesizer.load(runs["flow"])            # the tokenizer comes from the flow run's config
    assert synth.mel_per_code == 4 and synth.vocoder.sample_rate == 24000 and synth.vocoder.hop == 480
    codes = np.random.default_rng(0).integers(0, 64, size=(7, 8))
    wave, mel = synth(codes, seed=3)
    assert mel.shape == (4 * 7, 80)                   # 4L mel frames from 4L - 1 decoder frames
    assert wave.shape == (mel.shape[0] * 480,) and np.isfinite(wave).all()
    again, mel_again = synth(codes, seed=3)
    np.testing.assert_array_equal(mel, mel_again)
    np.testing.assert_array_equal(wave, again)
    assert not np.array_equal(synth.mel(codes, seed=4), mel)
    long_wave, long_mel = synth.long(codes, seed=3)   # one piece: the same as a single call
    np.testing.assert_array_equal(long_mel, mel)
    with pytest.raises(ValueError, match="codebook 2 holds codes outside"):
        synth(np.where(np.arange(8) == 2, 64, codes))


def _generate(args, capsys):
    from bajax import cli

    code = cli.main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bajax_generate_end_to_end(runs, tmp_path, capsys):
    out_wav = tmp_path / "hello.wav"
    code, stdout, err = _generate(["--lm", runs["lm"], "--flow", runs["flow"], "--tokenizer", runs["tok"],
                                   "--text", "Hello there.", "-o", str(out_wav), "--max-frames", "12",
                                   "--seed", "1"], capsys)
    assert code == 0, err
    m = re.search(r"wrote .*: (\d+) samples = .* at 24000 Hz from (\d+) code frames", stdout)
    samples, frames = int(m.group(1)), int(m.group(2))
    wave, rate = sf.read(out_wav)
    assert rate == 24000 and len(wave) == samples == frames * 4 * 480
    assert (tmp_path / "hello.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The spoken-question layout: the prompt is encoded by the tokenizer (its own run, from the flow config).
    code, stdout, err = _generate(["--lm", runs["lm"], "--flow", runs["flow"], "--audio", CORPUS_WAV,
                                   "-o", str(tmp_path / "answer.wav"), "--max-len", "400", "--max-frames", "6",
                                   "--greedy"], capsys)
    assert code == 0, err
    assert sf.info(str(tmp_path / "answer.wav")).samplerate == 24000


def test_bajax_generate_bad_requests_get_clear_errors(runs, tmp_path, capsys):
    common = ["--lm", runs["lm"], "--flow", runs["flow"], "-o", str(tmp_path / "x.wav")]
    code, _, err = _generate([*common, "--text", " "], capsys)
    assert code == 2 and "--text is empty" in err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    code, _, err = _generate([*common, "--audio", str(bad)], capsys)
    assert code == 2 and f"--audio {bad}" in err and "re-encode" in err
    code, _, err = _generate([*common, "--audio", str(tmp_path / "missing.wav")], capsys)
    assert code == 2 and "file not found" in err
    code, _, err = _generate([*common, "--audio", CORPUS_WAV, "--max-len", "64"], capsys)
    assert code == 2 and "over --max-len 64" in err and "trim the recording or raise --max-len" in err
    code, _, err = _generate(["--lm", runs["flow"], "--flow", runs["flow"], "--text", "Hi.", "-o",
                              str(tmp_path / "x.wav")], capsys)
    assert code == 2 and "is a 'flow' run, expected a 'lm' run" in err


# ------------------------------------------------------------------------------------------- streaming

# The tiny flow decoder's attention chunk is 100 mel frames = 25 code frames, the smallest stream chunk: a
# reply of more than 25 frames streams as more than one chunk. Seed 3 with these limits speaks 37 frames.
STREAM_LIMITS = ["--max-frames", "60", "--min-audio-frames", "60", "--seed", "3", "--stream-chunk", "25"]


def test_bajax_generate_stream_writes_the_wav_chunk_by_chunk(runs, tmp_path, capsys):
    out_wav = tmp_path / "streamed.wav"
    code, stdout, err = _generate(["--lm", runs["lm"], "--flow", runs["flow"], "--tokenizer", runs["tok"],
                                   "--text", "Hello there.", "-o", str(out_wav), "--stream", "--stream-warmup",
                                   *STREAM_LIMITS], capsys)
    assert code == 0, err
    assert re.search(r"warmup: compiled \d+ flow bucket\(s\) of 25 code frames .* in [\d.]+ s", stdout)
    chunk_lines = re.findall(r"chunk (\d+): ([\d.]+) s of audio at [\d.]+ s, ready at ([\d.]+) s", stdout)
    m = re.search(r"wrote .*: (\d+) samples = .* at 24000 Hz from (\d+) code frames .* streamed in (\d+) "
                  r"chunk\(s\); first packet ([\d.]+) s after generation started; real-time factor ([\d.]+) "
                  r".* synthesis only ([\d.]+)", stdout)
    assert m, stdout
    samples, frames, n_chunks, first = int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))
    with capsys.disabled():                 # the latency and real-time factors, shown with pytest -s
        print("\n" + m.group(0))
    wave, rate = sf.read(out_wav, dtype="int16")
    assert rate == 24000 and len(wave) == samples == frames * 4 * 480
    assert sf.info(str(out_wav)).subtype == "PCM_16"
    assert len(chunk_lines) == n_chunks >= 1 and [int(c[0]) for c in chunk_lines] == list(range(n_chunks))
    assert first > 0 and first == pytest.approx(float(chunk_lines[0][2]), abs=1e-3)
    assert frames > 25 and n_chunks > 1
    code, _, err = _generate(["--lm", runs["lm"], "--flow", runs["flow"], "--text", "Hi.", "-o",
                              "gs://bucket/x.wav", "--stream"], capsys)
    assert code == 2 and "--stream" in err and "local path" in err


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_bajax_serve_streams_pcm_over_http(runs):
    import http.client
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "BAJAX_MALLOC": "glibc"}
    proc = subprocess.Popen([sys.executable, "-m", "bajax.cli", "serve", "--lm", runs["lm"], "--flow", runs["flow"],
                             "--port", str(port), *STREAM_LIMITS], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on http://" in line:
                break
        assert any(f"listening on http://127.0.0.1:{port}" in line for line in lines), "".join(lines)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("GET", "/health")
        r = conn.getresponse()
        health = json.loads(r.read())
        assert r.status == 200 and health["lm"] == runs["lm"] and health["flow"] == runs["flow"]
        assert health["sample_rate"] == 24000 and health["stream_chunk"] == 25

        conn.request("POST", "/speak", body=json.dumps({"seed": 1}), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 400 and "text" in json.loads(r.read())["error"]

        # A real client on a socket, reading the chunked body chunk by chunk as the server sends it.
        t0 = time.perf_counter()
        conn.request("POST", "/speak", body=json.dumps({"text": "Hello there.", "seed": 3}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
        assert r.getheader("Content-Type").startswith("audio/L16") and r.getheader("X-Sample-Rate") == "24000"
        chunks, first_s = [], None
        while True:
            data = r.read1(1 << 20)
            if not data:
                break
            first_s = time.perf_counter() - t0 if first_s is None else first_s
            chunks.append(data)
        body = b"".join(chunks)
        pcm = np.frombuffer(body, "<i2")
        assert len(body) == 2 * len(pcm) and len(pcm) > 0 and len(pcm) % 480 == 0
        frames = len(pcm) // (4 * 480)
        print(f"serve: {frames} code frames = {len(pcm) / 24000:.2f} s in {len(chunks)} reads, first bytes after "
              f"{first_s:.3f} s, whole reply after {time.perf_counter() - t0:.3f} s")
        assert frames > 25 and len(chunks) > 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert "stopped" in out
