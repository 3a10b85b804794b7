"""A trained HiFT vocoder run as the `Vocoder` of speech generation (bajax/speech/hift.py), `bajax vocode` and
`bajax generate --vocoder`.

The vocoder run is a random-weight model written straight to a run directory (`rundir.write_run`, no
training): a narrow HiFT generator (the same upsampling 8 x 5 x 3 and iSTFT 16 / 4, so 480 samples per frame).
Shapes, seeding and plumbing only; no audio quality. The flow decoder's own sampling is tested in
tests/test_speech_generate.py; here a stand-in turns the conditioning into a mel in one step.
"""

import re

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from bajax import config as config_lib
from bajax import models
from bajax import runs as runs_lib
from bajax.audio.mel import LOG_MEL_FLOOR
from bajax.interop import rundir
from bajax.speech.hift import HiFTVocoder

# A narrow generator (and small discriminators) so the model builds and compiles in seconds.
SMALL = ["model.base_channels=8", "model.f0_cond_channels=8", "model.nb_harmonics=2", "model.f0_layers=2",
         "model.resblock_kernel_sizes=(3,)", "model.resblock_dilation_sizes=((1,),)",
         "model.source_resblock_dilation_sizes=((1,), (1,), (1,))", "model.disc.mpd_periods=(2,)",
         "model.disc.mrd_fft_sizes=(512,)"]


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    """The vocoder run, and a run of another kind: a flow run's config.json (the kind check reads nothing
    else, and a flow decoder takes seconds to build)."""
    root = tmp_path_factory.mktemp("vocode_runs")
    voc_cfg = config_lib.load("configs/vocoder/tiny.py", SMALL)
    vocoder = models.get("vocoder").build_model(voc_cfg.model, nnx.Rngs(0))
    (root / "flow" / "checkpoints").mkdir(parents=True)
    runs_lib.write_config(root / "flow", config_lib.load("configs/flow/tiny.py", []))
    return {"vocoder": rundir.write_run(str(root / "vocoder"), voc_cfg, nnx.state(vocoder)),
            "flow": str(root / "flow")}


@pytest.fixture(scope="module")
def vocoder(run_dirs):
    return HiFTVocoder.load(run_dirs["vocoder"], seed=3)


def _mel(frames, seed=0):
    return np.random.default_rng(seed).normal(-5.0, 2.0, (frames, 80)).astype(np.float32)


# ------------------------------------------------------------------------------------------ HiFTVocoder

def test_hift_vocoder_is_the_generator_under_jit_padded_to_a_bucket_and_seeded(run_dirs, vocoder):
    mel = _mel(37)
    wave = vocoder(mel)
    assert vocoder.sample_rate == 24000 and vocoder.hop == 480 and vocoder.n_mels == 80
    assert wave.shape == (37 * 480,) and wave.dtype == np.float32 and np.isfinite(wave).all()
    assert np.abs(wave).max() > 0
    np.testing.assert_array_equal(vocoder(mel), wave)                   # the same key every call
    # The same computation as the generator itself on the mel padded with silence to 50 frames, with each
    # frame's noise keyed by its index (frame_source_noise: a streamed window gets the same draws).
    from bajax.vocoder.source import frame_source_noise

    generator = runs_lib.load(run_dirs["vocoder"], "vocoder").model.generator
    padded = np.concatenate([mel, np.full((13, 80), LOG_MEL_FLOOR, np.float32)])[None]
    direct = nnx.jit(lambda g, m, k: g(m, None, inject=frame_source_noise(k, 0, 50, g.hop, g.harmonics))[0])(
        generator, padded, jax.random.key(3))
    assert direct.shape == (1, 50 * 480)
    # Two separate XLA compilations of the same fp32 graph: equal up to reassociation.
    np.testing.assert_allclose(wave, np.asarray(direct)[0, :37 * 480], rtol=0, atol=1e-6)
    # One executable per bucket of 50 frames.
    assert vocoder(_mel(50, 1)).shape == (50 * 480,)
    assert vocoder.buckets == (50,)
    assert vocoder.padded_frames(1) == 50 and vocoder.padded_frames(51) == 100
    # Reproducible from the run and the seed; another seed draws other source phases and noise.
    np.testing.assert_array_equal(HiFTVocoder.load(run_dirs["vocoder"], seed=3)(mel), wave)
    assert not np.array_equal(HiFTVocoder.load(run_dirs["vocoder"], seed=4)(mel), wave)


@pytest.mark.parametrize("mel, problem", [
    (np.zeros((0, 80), np.float32), "has no frames"),
    (np.zeros((10, 81), np.float32), "has 81 bins per frame"),
    (np.zeros((80, 12), np.float32), r"\[80, frames\].*pass mel\.T"),
    (np.zeros((2, 10, 80), np.float32), r"2-D mel \[frames, 80\]"),
    (np.where(np.arange(80) == 5, np.nan, np.zeros((4, 80), np.float32)), "4 NaN or infinite values"),
    (np.full((3, 80), np.inf, np.float32), "NaN or infinite values .the first in frame 0"),
    (np.array([["a"] * 80]), "not a numeric array"),
])
def test_bad_mels_are_value_errors_naming_the_problem(vocoder, mel, problem):
    with pytest.raises(ValueError, match=problem):
        vocoder(mel)


# ------------------------------------------------------------------------------ speech generation

class StandInFlow(nnx.Module):
    """`sample` of a flow decoder: conditioning [B, Tc, 80] -> a mel [B, length, 80] (nearest frames + noise)."""

    def __init__(self):
        self.offset = nnx.Param(jax.numpy.full((80,), -5.0))
        self.n_mels, self.temperature = 80, 1.0

    def sample(self, cond, cond_lengths, mel_lengths, length, rng, *, steps, guidance, noise):
        frames = jax.numpy.minimum(jax.numpy.arange(length), cond.shape[1] - 1)
        return cond[:, frames] + self.offset[...] + noise


def test_synthesizer_speaks_through_hift(vocoder):
    """The flow decoder's mel goes to the HiFT vocoder: 4 mel frames x 480 samples per code frame."""
    from bajax.speech.pipeline import Synthesizer

    tok_cfg = config_lib.defaults("tokenizer")
    hidden = np.random.default_rng(0).normal(size=(1, 64, 80)).astype(np.float32)

    def decode(codes, lengths):     # stands in for the tokenizer decoder: 4L - 1 frames of 80-d features
        n = 4 * codes.shape[1] - 1
        return jax.numpy.asarray(hidden[:, :n]), 4 * lengths - 1

    synth = Synthesizer(decode, StandInFlow(), tok_cfg, steps=2, vocoder=vocoder)
    assert synth.mel_per_code == 4
    codes = np.random.default_rng(1).integers(0, 16, size=(7, 8))
    wave, mel = synth(codes, seed=1)
    assert mel.shape == (28, 80) and wave.shape == (28 * 480,)
    np.testing.assert_array_equal(wave, vocoder(mel))
    empty, empty_mel = synth(np.zeros((0, 8), np.int32))      # no codes: no samples, the vocoder not called
    assert empty.shape == (0,) and empty_mel.shape == (0, 80)


def test_generate_vocoder_flag_picks_hift_and_names_a_wrong_run(run_dirs, tmp_path, capsys):
    from bajax import cli
    from bajax.cli.generate import request
    from bajax.flow.vocoder import GriffinLim
    from bajax.speech.reply import Request, make_vocoder

    args = cli.build_parser().parse_args(["generate", "--lm", "L", "--flow", "F", "--text", "Hi.", "-o", "x.wav",
                                          "--vocoder", run_dirs["vocoder"], "--seed", "5"])
    req = request(args)
    assert req.vocoder == run_dirs["vocoder"]
    hift = make_vocoder(req)
    assert isinstance(hift, HiFTVocoder) and hift.seed == 5
    assert isinstance(make_vocoder(Request(lm="L", flow="F", output="x.wav", gl_iters=3)), GriffinLim)
    # The vocoder run is loaded before the LM: a wrong one fails first, naming --vocoder.
    code = cli.main(["generate", "--lm", "nowhere", "--flow", "nowhere", "--text", "Hi.",
                     "-o", str(tmp_path / "x.wav"), "--vocoder", run_dirs["flow"]])
    err = capsys.readouterr().err
    assert code == 2 and f"--vocoder {run_dirs['flow']}" in err and "expected a 'vocoder' run" in err


# ---------------------------------------------------------------------------------------- bajax vocode

def _vocode(args, capsys):
    from bajax import cli

    code = cli.main(["vocode", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bajax_vocode_copy_synthesis_and_a_npy_mel(run_dirs, tmp_path, capsys):
    from bajax.audio import io as audio_io
    from bajax.audio.mel import flow_mel_24k

    t = np.arange(4960) / 16000.0                                 # 0.31 s at 16 kHz: resampled to 24 kHz
    recording = tmp_path / "speech.wav"
    sf.write(recording, (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32), 16000)
    frames = len(flow_mel_24k(audio_io.load(str(recording), 24000)))
    out = tmp_path / "copy.wav"
    code, stdout, err = _vocode([str(recording), "--checkpoint", run_dirs["vocoder"], "-o", str(out)], capsys)
    assert code == 0, err
    wave, rate = sf.read(out)
    assert rate == 24000 and len(wave) == frames * 480 == 15 * 480
    assert re.search(rf"wrote .*: {frames * 480} samples = 0\.30 s at 24000 Hz from {frames} mel frames", stdout)
    assert re.search(r"real-time factor \d+\.\d+", stdout)

    mel = tmp_path / "mel.npy"
    np.save(mel, _mel(23))
    out = tmp_path / "from_mel.flac"
    code, stdout, err = _vocode([str(mel), "--checkpoint", run_dirs["vocoder"], "-o", str(out), "--step", "0",
                                 "--seed", "1"], capsys)
    assert code == 0, err
    assert sf.info(str(out)).samplerate == 24000 and sf.info(str(out)).frames == 23 * 480


def _bad_inputs(tmp_path, run_dirs):
    """(argument list, what the one-line error must say) for each bad input."""
    good = tmp_path / "good.npy"
    np.save(good, _mel(5))
    cases = []

    def npy(name, array, problem):
        path = tmp_path / name
        np.save(path, array)
        cases.append(([str(path)], [str(path), problem]))

    npy("bins.npy", np.zeros((9, 81), np.float32), "81 bins per frame")
    npy("transposed.npy", np.zeros((80, 9), np.float32), "pass mel.T")
    npy("nan.npy", np.full((9, 80), np.nan, np.float32), "NaN")
    npy("empty.npy", np.zeros((0, 80), np.float32), "no frames")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    cases.append(([str(junk)], [str(junk), "cannot read it as a .npy array"]))
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros((0,), np.float32), 24000)
    cases.append(([str(silent)], [str(silent), "has no samples"]))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    cases.append(([str(broken)], [str(broken), "re-encode"]))
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros((100,), np.float32), 24000)
    cases.append(([str(short)], [str(short), "shorter than one mel frame"]))
    missing = tmp_path / "missing.wav"
    cases.append(([str(missing)], [str(missing), "file not found"]))
    cases.append(([str(good), "--checkpoint", run_dirs["flow"]],
                  [f"--checkpoint {run_dirs['flow']}", "expected a 'vocoder' run"]))
    cases.append(([str(good), "--checkpoint", str(tmp_path)], [str(tmp_path), "not a `bajax train` run"]))
    cases.append(([str(good), "--step", "7"], ["no checkpoint step 7", "steps present: [0]"]))
    cases.append(([str(good), "-o", str(tmp_path / "x.mp3")], ["x.mp3", "must end in .wav"]))
    return cases


def test_bajax_vocode_bad_inputs_exit_2_with_one_line_naming_the_file(run_dirs, tmp_path, capsys):
    for args, wanted in _bad_inputs(tmp_path, run_dirs):
        defaults = [a for a in ("--checkpoint", "-o") if a not in args]
        extra = {"--checkpoint": run_dirs["vocoder"], "-o": str(tmp_path / "out.wav")}
        code, stdout, err = _vocode([*args, *(x for a in defaults for x in (a, extra[a]))], capsys)
        assert code == 2, (args, err)
        assert err.startswith("bajax vocode: ") and err.count("\n") == 1, err
        for text in wanted:
            assert text in err, (text, err)
    assert not (tmp_path / "out.wav").exists()
