"""Grain pipelines: packing, process sharding, exact iterator restore (also through Orbax), audio batches."""

import absl.flags
import grain
import jax
import numpy as np
import pytest

from bajax.data import config, pipeline, prepare
from bajax.lm import batch as lm_batch
from tests import data_testing as testing

absl.flags.FLAGS.mark_as_parsed()
LM = dict(vocab="bytes", vocab_size=512, codebook_sizes=testing.CODEBOOK_SIZES)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    m = testing.write_manifest(str(d / "c"), per_task=4, valid=1)
    prepare.prepare(
        m, str(d / "p"), encode_fn=testing.FakeEncoder(), workers=0, samples_per_shard=3, progress=False
    )
    return str(d / "p")


def cfg(src, **kw):
    c = config.default_data_config()
    c.source = src
    c.update(kw)
    return c


def test_batches_follow_contract_and_packing_isolates_segments(prepared):
    it = iter(pipeline.lm_dataset(cfg(prepared), batch_size=3, seq_len=96, **LM))
    for _ in range(4):
        b = next(it)
        lm_batch.check(b)
        for row in range(3):
            seg, pos = b["segment_ids"][row], b["positions"][row]
            assert seg[0] == 1 and np.all(np.diff(seg[seg > 0]) >= 0)
            for s in np.unique(seg[seg > 0]):
                idx = np.flatnonzero(seg == s)
                assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # contiguous
                np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))  # positions restart
            # The attention mask built from segment ids never links two segments (nor padding).
            mask = (seg[:, None] == seg[None, :]) & (seg[:, None] > 0) & np.tril(np.ones((96, 96), bool))
            assert not np.any(mask & (seg[:, None] != seg[None, :]))
            pad = seg == 0
            assert not b["text_weights"][row][pad].any() and not b["audio_weights"][row][pad].any()
            assert not b["tokens"][row][pad].any()


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_disjoint_and_cover(prepared, count):
    c = cfg(
        prepared,
        mixture={"asr": 1.0, "aqa": 0.0, "s2tt": 0.0, "intlv": 0.0, "tts": 0.0, "itts": 0.0, "audio": 0.0},
    )
    n = 4  # train samples of one task
    seen = []
    for p in range(count):
        ds = pipeline.lm_records(c, process_index=p, process_count=count)
        per_proc = -(-(n - p) // count)  # this process's share of epoch 0
        seen.append([ds[i][0]["id"] for i in range(per_proc)])
    flat = [x for s in seen for x in s]
    assert len(flat) == len(set(flat)) == n
    assert set(flat) == {f"asr-{j}" for j in range(n)}


def _take(it, n):
    return [next(it) for _ in range(n)]


def _equal(xs, ys):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(xs, ys, strict=True) for k in x)


def _assert_restore_continues(ds, skip: int, take: int):
    """A fresh iterator given the state saved after `skip` batches yields the same next `take` batches."""
    it = iter(ds)
    _take(it, skip)
    state = it.get_state()
    want = _take(it, take)
    fresh = iter(ds)
    fresh.set_state(state)
    assert _equal(_take(fresh, take), want)


def test_restore_mid_epoch_gives_next_batches(prepared):
    _assert_restore_continues(pipeline.lm_dataset(cfg(prepared), batch_size=2, seq_len=80, **LM), skip=3, take=4)


def test_restore_through_orbax_checkpoint_manager(prepared, tmp_path):
    import orbax.checkpoint as ocp

    ds = pipeline.lm_dataset(cfg(prepared), batch_size=2, seq_len=80, **LM)
    it = iter(ds)
    _take(it, 2)
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    state = {"w": jax.numpy.ones(3)}
    mngr.save(
        5,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data_iter=grain.checkpoint.CheckpointSave(it)
        ),
    )
    mngr.wait_until_finished()
    want = _take(it, 3)
    fresh = iter(ds)
    restored = mngr.restore(
        5,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state), data_iter=grain.checkpoint.CheckpointRestore(fresh)
        ),
    )
    assert restored["data_iter"] is fresh
    assert _equal(_take(fresh, 3), want)
    mngr.close()


def test_validation_split_single_padded_pass(prepared):
    batches = list(pipeline.lm_dataset(cfg(prepared), batch_size=4, seq_len=128, split="valid", **LM))
    assert batches and all(b["tokens"].shape == (4, 128) for b in batches)
    assert sum(len(np.unique(b["segment_ids"][b["segment_ids"] > 0])) > 0 for b in batches) >= 1


def test_codebook_mismatch_is_a_clear_error(prepared):
    with pytest.raises(ValueError, match="codebook sizes differ.*fake-energy-codes"):
        pipeline.lm_dataset(
            cfg(prepared), batch_size=2, seq_len=64, vocab="bytes", vocab_size=512, codebook_sizes=(64,) * 8
        )


@pytest.mark.parametrize("mode", ["crop", "bucket"])
def test_audio_pipelines(prepared, mode):
    c = cfg(prepared)
    c.audio.mode, c.audio.crop_seconds, c.audio.bucket_seconds = mode, 0.4, (0.4, 0.8)
    tb = next(iter(pipeline.audio_dataset(c, batch_size=4, view=pipeline.TokenizerView)))
    frames = tb["wave"].shape[1] // 1280
    assert tb["wave"].dtype == np.float32 and frames in ((5,) if mode == "crop" else (5, 10))
    for i in range(4):
        n = tb["wave_lengths"][i]
        assert 0 < n <= tb["wave"].shape[1] and not tb["wave"][i, n:].any()
    fb = next(iter(pipeline.audio_dataset(c, batch_size=4, view=pipeline.FlowView)))
    f = fb["codes"].shape[1]
    assert fb["mel24"].shape == (4, 4 * f, 80) and fb["wave16"].shape == (4, 1280 * f)
    np.testing.assert_array_equal(fb["mel_lengths"], 4 * fb["code_lengths"])
    np.testing.assert_array_equal(
        fb["wave_lengths"], np.minimum(1280 * fb["code_lengths"], fb["wave_lengths"])
    )


def test_audio_restore(prepared):
    ds = pipeline.audio_dataset(cfg(prepared), batch_size=2, view=pipeline.FlowView)
    _assert_restore_continues(ds, skip=2, take=2)


def test_to_global():
    mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    b = lm_batch.empty(8, 16)
    g = pipeline.to_global(b, mesh)
    assert g["tokens"].shape == (8, 16) and g["audio_codes"].shape == (8, 16, 8)
    assert g["tokens"].sharding.spec[0] == ("data", "fsdp")


def test_worker_processes_match_in_process(prepared):
    c0, c1 = cfg(prepared), cfg(prepared, worker_count=1)
    a = _take(iter(pipeline.lm_dataset(c0, batch_size=2, seq_len=64, **LM)), 2)
    b = _take(iter(pipeline.lm_dataset(c1, batch_size=2, seq_len=64, **LM)), 2)
    assert _equal(a, b)
