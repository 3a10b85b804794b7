"""`bajax eval codec|vocoder|tts|s2s` (bajax/eval/{protocol,runner,report,codec,vocoding,spoken}.py).

The runs are random-weight models written straight to run directories (`rundir.write_run`, no training): the
commands' plumbing, their bad-input accounting, the confidence intervals and the reproducibility of
results.json are what is tested here; the metrics themselves against known values in test_eval_metrics.py.
"""

import csv
import io
import json
import math

import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from bajax import config as config_lib
from bajax import models
from bajax.cli import main
from bajax.data import manifest, sources
from bajax.eval import protocol, text
from bajax.interop import rundir

pytest.importorskip("pesq")

# A narrow HiFT generator (tests/test_vocode.py's), so it builds and compiles in seconds.
SMALL_VOCODER = ["model.base_channels=8", "model.f0_cond_channels=8", "model.nb_harmonics=2", "model.f0_layers=2",
                 "model.resblock_kernel_sizes=(3,)", "model.resblock_dilation_sizes=((1,),)",
                 "model.source_resblock_dilation_sizes=((1,), (1,), (1,))", "model.disc.mpd_periods=(2,)",
                 "model.disc.mrd_fft_sizes=(512,)"]


def _write(root, kind, config, overrides):
    cfg = config_lib.load(config, overrides)
    model = models.get(kind).build_model(cfg.model, nnx.Rngs(0), {})
    return rundir.write_run(str(root / kind), cfg, nnx.state(model))


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_runs")
    tok = _write(root, "tokenizer", "configs/tokenizer/tiny.py",
                 ["model.rvq.codebook_sizes=(64, 64, 64, 64, 64, 64, 64, 64)", "model.loss.align_weight=0.0"])
    return {
        "tokenizer": tok,
        "lm": _write(root, "lm", "configs/lm/tiny.py", ["data.seq_len=128"]),
        "flow": _write(root, "flow", "configs/flow/tiny.py", [
            "model.cond_source=tokenizer", "model.cond_dim=64", f"model.tokenizer_checkpoint={tok}"]),
        "vocoder": _write(root, "vocoder", "configs/vocoder/tiny.py", SMALL_VOCODER),
    }


def _english_segments(n):
    entries, _ = manifest.read(str(sources.corpus_dir() / sources.CORPUS_MANIFEST))
    doc = next(e for e in entries if e.language == "en" and e.task == "asr")
    return doc.audio[0], doc.segments[:n]


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    """Two good English utterances (one re-saved at 22.05 kHz), then a missing file, a span past the end of
    its file, a row without text, and a line that is not JSON."""
    root = tmp_path_factory.mktemp("eval_manifest")
    audio, segs = _english_segments(2)
    wave, sr = sf.read(audio, dtype="float32")
    a = wave[int(segs[0].start * sr): int(segs[0].end * sr)]
    b = wave[int(segs[1].start * sr): int(segs[1].end * sr)]
    sf.write(root / "a.flac", a, sr)
    from bajax.audio.resample import resample

    sf.write(root / "b.wav", resample(b, sr, 22050), 22050)
    lines = [
        {"id": "good", "task": "tts", "language": "en", "split": "valid", "audio": "a.flac", "text": segs[0].text},
        {"id": "other_rate", "task": "tts", "language": "en", "split": "valid", "audio": "b.wav",
         "text": segs[1].text},
        {"id": "missing", "task": "tts", "language": "en", "split": "valid", "audio": "nowhere.flac",
         "text": "Hello."},
        {"id": "past_end", "task": "tts", "language": "en", "split": "valid", "audio": "a.flac",
         "segments": [{"start": 100.0, "end": 101.0, "text": "Hello."}]},
        {"id": "no_text", "task": "audio", "language": "en", "split": "valid", "audio": "b.wav"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json at all\n"
    (root / "m.jsonl").write_text(text)
    return str(root / "m.jsonl"), sr


# ------------------------------------------------------------------------------------------ protocol

def test_mean_ci_is_the_student_t_interval():
    s = protocol.mean_ci([1.0, 2.0, 3.0, float("nan")])
    half = 4.3026527297 * 1.0 / math.sqrt(3)   # t(0.975, 2) (tables: 4.3026527297) * s / sqrt(n), s = 1
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0)
    assert s["ci95"] == pytest.approx([2.0 - half, 2.0 + half], rel=1e-9)
    assert protocol.mean_ci([5.0]) == {"mean": 5.0, "ci95": None, "n": 1}
    assert protocol.mean_ci([]) == {"mean": None, "ci95": None, "n": 0}


def test_utterances_are_distinct_spans_of_one_split():
    utts, bad = protocol.read_utterances(split="valid")
    assert not bad
    keys = [(u.audio, u.start, u.end, u.text) for u in utts]
    assert len(keys) == len(set(keys))                      # one recording under several tasks: scored once
    entries, _ = manifest.read(protocol.default_manifest())
    valid_spans = {(e.audio[s.audio], s.start, s.end, s.text) for e in entries if e.split == "valid"
                   for s in e.segments}
    assert set(keys) == valid_spans
    assert len(protocol.read_utterances(split="valid", limit=3)[0]) == 3
    with pytest.raises(ValueError, match="no 'valid' rows in language 'en'"):
        protocol.read_utterances(split="valid", language="en")


def test_bad_rows_are_counted_never_dropped(bad_manifest, tmp_path):
    path, _ = bad_manifest
    utts, bad = protocol.read_utterances(path, "valid")
    assert [u.id for u in utts] == ["good", "other_rate", "missing", "past_end", "no_text"]
    assert [(r["id"], r["reason"]) for r in bad] == [("line 6", "malformed_json")]

    def score(utt):
        protocol.need_text(utt)
        wave, source_sr = protocol.load_audio(utt, 16000)
        return [{"source_sr": source_sr, "seconds": len(wave) / 16000}]

    rows = bad + protocol.score_rows(utts, score)
    counts = protocol.row_counts(len(utts), len(bad), rows, 16000)
    assert counts == {"total": 6, "scored": 2, "failed": 4, "resampled": 1,
                      "failures": {"empty_audio": 1, "empty_text": 1, "malformed_json": 1, "missing_audio": 1}}
    errors = {r["id"]: r["error"] for r in rows if r["status"] == "error"}
    assert "nowhere.flac" in errors["missing"] and "not found" in errors["missing"]
    assert "reference text is empty" in errors["no_text"]
    assert protocol.summarise(rows, ("seconds",))["seconds"]["n"] == 2


# ------------------------------------------------------------------------------------------ commands

def _results(out):
    return json.loads((out / "results.json").read_text())


def test_eval_vocoder_reports_bad_rows_and_is_reproducible(run_dirs, bad_manifest, tmp_path, capsys):
    path, _ = bad_manifest
    argv = ["eval", "vocoder", "--vocoder", run_dirs["vocoder"], "--manifest", path, "--baseline", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    a, b = _results(tmp_path / "a"), _results(tmp_path / "b")
    del a["command"], b["command"]                          # they differ in --out only
    assert a == b                                           # the same command gives the same numbers
    r = _results(tmp_path / "a")
    assert r["command"].startswith("bajax eval vocoder --vocoder ")
    # The vocoder needs no text: the row without one is scored; the others fail with their reason.
    assert r["rows"] == {"total": 6, "scored": 3, "failed": 3, "resampled": 3,
                         "failures": {"empty_audio": 1, "malformed_json": 1, "missing_audio": 1}}
    hift, gl = r["groups"]["hift"], r["groups"]["griffin_lim"]
    for name in ("mel_l1", "mr_stft", "pesq_wb", "stoi", "estoi", "voicing_error"):
        assert hift[name]["n"] == 3 and np.isfinite(hift[name]["mean"])
        assert hift[name]["ci95"][0] <= hift[name]["mean"] <= hift[name]["ci95"][1]
    assert gl["pesq_wb"]["mean"] > hift["pesq_wb"]["mean"]  # Griffin-Lim beats a random-weight generator
    assert {"jax", "pesq", "pystoi", "bajax"} <= set(r["versions"])
    assert r["seeds"] == {"seed": 0} and r["recognizer"] is None
    csv = (tmp_path / "a" / "utterances.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 * 2 + 3                        # header, 3 rows x 2 systems, 3 error rows
    assert "missing_audio" in (tmp_path / "a" / "results.md").read_text()
    assert (tmp_path / "a" / "results.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_eval_codec_per_rvq_depth(run_dirs, tmp_path):
    out = tmp_path / "codec"
    assert main(["eval", "codec", "--flow", run_dirs["flow"], "--layers", "1,8", "--limit", "2", "--quiet",
                 "--steps", "2", "--out", str(out)]) == 0
    r = _results(out)
    assert r["models"]["tokenizer"].startswith(run_dirs["tokenizer"])    # the flow run's tokenizer
    assert list(r["groups"]) == ["1", "8"] and r["rows"]["scored"] == 2
    one, eight = r["groups"]["1"], r["groups"]["8"]
    for name in ("tokenizer_mel_l1", "mel_l1", "mr_stft", "pesq_wb", "stoi"):
        assert one[name]["n"] == eight[name]["n"] == 2
    assert one["tokenizer_mel_l1"]["mean"] != eight["tokenizer_mel_l1"]["mean"]   # depth reaches the decoder
    assert main(["eval", "codec", "--tokenizer", run_dirs["tokenizer"], "--layers", "9", "--out",
                 str(tmp_path / "x")]) == 2


def test_eval_codec_without_flow_scores_the_tokenizer_alone(run_dirs, tmp_path):
    out = tmp_path / "tok"
    assert main(["eval", "codec", "--tokenizer", run_dirs["tokenizer"], "--limit", "2", "--quiet",
                 "--out", str(out)]) == 0
    r = _results(out)
    assert list(r["groups"]) == ["8"] and set(r["groups"]["8"]) == {"tokenizer_mel_l1"}


GENERATION = ["--max-frames", "6", "--max-text-tokens", "4", "--steps", "2", "--greedy", "--quiet"]


@pytest.mark.slow
def test_eval_tts_scores_intelligibility_speaker_and_mos(run_dirs, bad_manifest, tmp_path):
    path, _ = bad_manifest
    out = tmp_path / "tts"
    argv = ["eval", "tts", "--lm", run_dirs["lm"], "--flow", run_dirs["flow"], "--manifest", path,
            "--out", str(out), *GENERATION]
    assert main(argv) == 0
    r = _results(out)
    assert r["recognizer"] == "pocketsphinx"
    assert r["rows"]["scored"] == 2 and r["rows"]["failures"] == {
        "empty_audio": 1, "empty_text": 1, "malformed_json": 1, "missing_audio": 1}
    m = r["metrics"]
    for name in ("wer", "cer", "seconds"):
        assert m[name]["n"] == 2
    # Each reported rate is the rate of the transcript pair the CSV shows; the corpus rate is over both.
    rows = [r for r in csv.DictReader(io.StringIO((out / "utterances.csv").read_text())) if r["status"] == "ok"]
    assert len(rows) == 2
    for row in rows:
        assert float(row["wer"]) == pytest.approx(text.wer(row["text"], row["hypothesis"]), abs=1e-8)
        assert float(row["cer"]) == pytest.approx(text.cer(row["text"], row["hypothesis"]), abs=1e-8)
    assert r["corpus"]["utterances_en"] == 2
    assert r["corpus"]["wer_en"] == pytest.approx(text.wer([x["text"] for x in rows],
                                                           [x["hypothesis"] for x in rows]))
    assert m["wer"]["mean"] == pytest.approx(np.mean([float(x["wer"]) for x in rows]))


def test_eval_s2s_checks_text_speech_consistency(run_dirs, tmp_path):
    out = tmp_path / "s2s"
    assert main(["eval", "s2s", "--lm", run_dirs["lm"], "--flow", run_dirs["flow"], "--limit", "1",
                 "--reply-language", "en", "--no-mos", "--out", str(out), *GENERATION]) == 0
    r = _results(out)
    assert r["rows"]["total"] == 1
    row = (out / "utterances.csv").read_text().splitlines()
    assert "reply_text" in row[0] and "hypothesis" in row[0]


def test_eval_errors_name_the_flag(run_dirs, tmp_path, capsys):
    assert main(["eval", "vocoder", "--vocoder", run_dirs["flow"], "--out", str(tmp_path / "x")]) == 2
    assert "--vocoder" in capsys.readouterr().err
    assert main(["eval", "codec", "--out", str(tmp_path / "y")]) == 2
    assert "--tokenizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "tts", "--lm", run_dirs["lm"], "--out", str(tmp_path / "z")])   # --flow is required

