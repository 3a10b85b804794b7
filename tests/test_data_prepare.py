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
        "bad_span": 1,
    }
    text = prepare.format_summary(s)
    assert "REJECTED" in text and "missing.wav" in text and "line 11" in text
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
