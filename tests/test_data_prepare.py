"""prepare: bad inputs counted and skipped, re-runs skip finished shards, records round-trip; audio I/O."""

import json

import numpy as np
import pytest

from bajax.audio import io as audio_io
from bajax.data import prepare, records
from tests import data_testing as testing


def _row(i, **kw):
    row = {
        "id": f"s{i}",
        "task": "asr",
        "language": "en",
        "audio": "good.wav",
        "segments": [{"start": 0.0, "end": 0.5, "text": "hello"}],
    }
    row.update(kw)
    return json.dumps(row)


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    w = testing.tone(0.8, 300)
    audio_io.write(d / "good.wav", w, 16000)
    audio_io.write(d / "nan.wav", np.where(np.arange(len(w)) == 100, np.nan, w), 16000, subtype="FLOAT")
    audio_io.write(d / "empty.wav", w[:0], 16000)
    audio_io.write(d / "long.flac", np.tile(w, 4), 16000)
    data = (d / "good.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    (d / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(200)))
    lines = [
        _row(0),
        _row(1),
        _row(2, audio="missing.wav"),
        _row(3, audio="truncated.wav"),
        _row(4, audio="corrupt.flac"),
        _row(5, audio="empty.wav"),
        _row(6, audio="nan.wav"),
        _row(7, segments=[{"start": 0.0, "end": 0.5, "text": "  "}]),
        _row(8, audio="long.flac", segments=[{"text": "long"}]),
        _row(9, task="karaoke"),
        '{"id": "s10", "task": "asr", "audio": ',
        _row(1),  # duplicate id
        _row(12, segments=[{"start": 0.0, "end": 1.5, "text": "past the end"}]),
        # past the end AND over --max-audio-seconds: the span error is the one to report
        _row(13, segments=[{"start": 0.0, "end": 3.0, "text": "past the end, too long"}]),
    ]
    (d / "m.jsonl").write_text("\n".join(lines) + "\n")
    return d


def test_bad_inputs_counted_and_skipped(bad_manifest, tmp_path, capsys):
    s = prepare.prepare(
        str(bad_manifest / "m.jsonl"),
        str(tmp_path / "out"),
        encode_fn=testing.FakeEncoder(),
        workers=0,
        max_audio_seconds=2.0,
        progress=False,
    )
    assert s["tasks"]["train/asr"]["samples"] == 2
    assert s["rejected"] == {
        "missing": 1,
        "truncated": 1,
        "corrupt": 1,
        "empty": 1,
        "nan": 1,
        "empty_text": 1,
        "too_long": 1,
        "unknown_task": 1,
        "malformed_json": 1,
        "duplicate_id": 1,
        "bad_span": 2,
    }
    text = prepare.format_summary(s)
    assert "REJECTED" in text and "missing.wav" in text and "line 11" in text
    assert "'s13'" in " ".join(s["rejected_examples"]["bad_span"])
    corrupt = s["rejected_examples"]["corrupt"][0]
    assert "corrupt.flac" in corrupt and "BytesIO" not in corrupt and " at 0x" not in corrupt, corrupt
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["rejected"]["nan"] == 1


def test_prepare_twice_does_work_once(tmp_path):
    m = testing.write_manifest(str(tmp_path / "c"), per_task=2, valid=0)
    calls = []

    def enc(w):
        calls.append(len(w))
        return testing.FakeEncoder()(w)

    kw = dict(
        encode_fn=enc,
        codes_name="fake",
        codebook_sizes=testing.CODEBOOK_SIZES,
        workers=2,
        samples_per_shard=1,
        progress=False,
    )
    first = prepare.prepare(m, str(tmp_path / "p"), **kw)
    n = len(calls)
    assert first["shards"]["written"] == 14 and n == 2 * 5 + 2 * 2 * 3  # segments: 10 single + 2x2x3 multi
    files = sorted(p.name for p in (tmp_path / "p" / "train" / "asr").iterdir())
    second = prepare.prepare(m, str(tmp_path / "p"), **kw)
    assert len(calls) == n, "the second run must not re-encode"
    assert second["shards"] == {"total": 14, "skipped_done": 14, "written": 0}
    assert second["tasks"] == first["tasks"]
    assert sorted(p.name for p in (tmp_path / "p" / "train" / "asr").iterdir()) == files
    # A changed encoder invalidates the shards.
    kw["codes_name"] = "fake2"
    assert prepare.prepare(m, str(tmp_path / "p"), **kw)["shards"]["written"] == 14


def test_records_roundtrip():
    arrays = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": np.ones((0, 8), np.float32)}
    meta, back = records.decode(records.encode({"x": "你好", "n": [1, 2]}, arrays))
    assert meta == {"x": "你好", "n": [1, 2]}
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_audio_io_formats_mono_resample(tmp_path, ext):
    stereo = np.stack([testing.tone(0.5, 440, sr=22050), np.zeros(11025, np.float32)], axis=1)
    import soundfile as sf

    sf.write(tmp_path / f"x.{ext}", stereo, 22050)
    w16, w24 = audio_io.load(tmp_path / f"x.{ext}", 16000), audio_io.load(tmp_path / f"x.{ext}", 24000)
    assert w16.ndim == 1 and w16.dtype == np.float32 and abs(len(w16) - 8000) <= 1200  # mp3 pads frames
    assert abs(len(w24) / len(w16) - 1.5) < 0.01
    assert 0.1 < np.abs(w16).max() < 0.25  # stereo averaged with a silent channel: half amplitude


def test_audio_io_memory_path():
    w = testing.tone(0.3, 200)
    audio_io.write("memory://bajax-test/x.flac", w, 16000)
    np.testing.assert_allclose(audio_io.load("memory://bajax-test/x.flac", 16000), w, atol=1e-4)


# ------------------------------------------------------------------ long spans, exit codes, input errors


def _read_records(path):
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    out = [records.decode(r) for r in reader.read_all()]
    reader.close()
    return out


def _tokenizer_run(path):
    """A tokenizer run directory (config.json + one checkpoint) of the tiny shape: Whisper window 30 s."""
    import jax.numpy as jnp
    from flax import nnx

    from bajax import config as config_lib
    from bajax.tokenizer.model import Tokenizer
    from bajax.train.checkpoint import Checkpointer

    cfg = config_lib.defaults("tokenizer")
    tok = Tokenizer(cfg.model, rngs=nnx.Rngs(0))
    path.mkdir()
    (path / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(path / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(1, {"step": jnp.int32(1), "model": nnx.state(tok), "opt": {}}, force=True)
    ckpt.close()
    return cfg


def test_prepare_tokenizer_splits_a_40s_sample_at_the_encoder_window(tmp_path, capsys):
    """Issue 17 item 7: `bajax prepare --tokenizer RUN` on a 40 s sample (under --max-audio-seconds 120, over
    the encoder's 30 s window) crashed the whole run; now it is encoded in windows: 12.5 Hz x 40 s = 500."""
    from bajax import cli

    cfg = _tokenizer_run(tmp_path / "tok")
    assert cfg.model.max_source_positions * 320 / 16000 == 30.0
    audio_io.write(tmp_path / "long.flac", np.tile(testing.tone(2.0, 220), 20), 16000)  # 40.0 s
    audio_io.write(tmp_path / "short.wav", testing.tone(1.0, 300), 16000)
    rows = [
        _row(0, audio="long.flac", segments=[{"text": "forty seconds"}]),
        _row(1, audio="short.wav", segments=[{"text": "one second"}]),
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    argv = ["prepare", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(out), "--tokenizer",
            str(tmp_path / "tok"), "--workers", "0", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected"] == {} and summary["tasks"]["train/asr"]["samples"] == 2
    codes = {meta["sample"]: arrays["codes"] for meta, arrays in
             _read_records(out / "train" / "asr" / "shard-00000.audio.array_record")}
    assert codes["s0"].shape == (500, 8) and codes["s1"].shape == (12, 8)
    lm = {meta["id"]: arrays for meta, arrays in _read_records(out / "train" / "asr" / "shard-00000.lm.array_record")}
    np.testing.assert_array_equal(lm["s0"]["codes_0"], codes["s0"])
    # The window is the run's own: 23 buckets of 1.28 s (29.44 s) fit 1500 positions; the first window's
    # codes are those of encoding that window alone.
    enc = prepare.load_encoder(str(tmp_path / "tok"))
    assert enc.max_samples == 471040
    wave16 = audio_io.load(tmp_path / "long.flac", 16000)
    wave16 = np.clip(np.round(wave16 * 32767), -32768, 32767).astype(np.int16).astype(np.float32) / 32767.0
    np.testing.assert_array_equal(codes["s0"][:368], enc(wave16[:471040]))


def test_encode_failure_rejects_only_that_sample(tmp_path):
    """An encoder error on one sample is counted as `encode_failed` with its message; the run goes on."""
    audio_io.write(tmp_path / "good.wav", testing.tone(0.8, 300), 16000)
    audio_io.write(tmp_path / "long.wav", testing.tone(3.0, 300), 16000)
    rows = [_row(0), _row(1, audio="long.wav", segments=[{"text": "long"}]), _row(2)]
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")

    def enc(w):
        if len(w) > 16000 * 2:
            raise ValueError("encoder input of 150 frames exceeds the 100 positions")
        return testing.FakeEncoder()(w)

    s = prepare.prepare(str(tmp_path / "m.jsonl"), str(tmp_path / "out"), encode_fn=enc, codes_name="fake",
                        codebook_sizes=testing.CODEBOOK_SIZES, workers=0, progress=False)
    assert s["tasks"]["train/asr"]["samples"] == 2 and s["rejected"] == {"encode_failed": 1}
    msg = s["rejected_examples"]["encode_failed"][0]
    assert "'s1'" in msg and "exceeds" in msg and "line 2" in msg
    ids = [m["id"] for m, _ in _read_records(tmp_path / "out" / "train" / "asr" / "shard-00000.lm.array_record")]
    assert ids == ["s0", "s2"]


def _bad_input(tmp_path, case):
    (tmp_path / "ok.jsonl").write_text(_row(0) + "\n")
    if case == "missing_manifest":
        return ["--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out")], "nope.jsonl"
    if case == "not_utf8":
        (tmp_path / "m.jsonl").write_bytes(b"\xff\xfe{\x00\"\x00i\x00d\x00")  # a UTF-16 export
        return ["--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out")], "m.jsonl"
    (tmp_path / "out").write_text("not a directory")
    return ["--manifest", str(tmp_path / "ok.jsonl"), "--out", str(tmp_path / "out")], "out"


@pytest.mark.parametrize("case", ["missing_manifest", "not_utf8", "out_is_a_file"])
def test_prepare_input_errors_one_line_exit_2(tmp_path, capsys, case):
    """Issue 17 item 8: user errors give one clear line on stderr naming the path, exit code 2."""
    from bajax import cli

    args, name = _bad_input(tmp_path, case)
    assert cli.main(["prepare", *args, "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bajax prepare: ") and name in err, err
    assert "Traceback" not in err
    if case != "out_is_a_file":
        assert not (tmp_path / "out").exists(), "nothing is written on an input error"


def test_prepare_exit_1_when_every_sample_is_rejected(tmp_path, capsys):
    """Issue 17 item 9: all rejected -> exit 1 (0 only when something usable was written)."""
    from bajax import cli

    (tmp_path / "m.jsonl").write_text(_row(0, audio="missing.wav") + "\n" + _row(1, task="karaoke") + "\n")
    argv = ["prepare", "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out"), "--workers", "0",
            "--no-progress"]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "missing=1" in captured.out and "no usable sample" in captured.err


def test_missing_data_source_is_one_line_naming_the_fix(tmp_path):
    from ml_collections import ConfigDict

    from bajax.data import sources

    missing = str(tmp_path / "prepared")
    with pytest.raises(FileNotFoundError) as e:
        sources.resolve(ConfigDict({"source": missing, "cache_dir": ""}))
    assert isinstance(e.value, sources.DataSourceError)
    msg = str(e.value)
    assert "\n" not in msg and missing in msg and "bajax prepare" in msg and "no such directory" in msg
