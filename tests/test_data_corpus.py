"""The embedded corpus: size, duration, all seven formats, held-out split, bootstrap codes, default LM source.

The LM test prepares the corpus once into the user cache (~35 s on 2 cores the first time, instant after).
"""

import collections
import pathlib

import absl.flags
import numpy as np

from bajax.audio import io as audio_io
from bajax.data import bootstrap_codes, config, manifest, pipeline, sources
from bajax.lm import batch as lm_batch

absl.flags.FLAGS.mark_as_parsed()


def test_corpus_size_duration_formats():
    root = pathlib.Path(str(sources.corpus_dir()))
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 20e6
    entries, rejects = manifest.read(str(root / sources.CORPUS_MANIFEST))
    assert not rejects
    tasks = collections.Counter((e.split, e.task) for e in entries)
    # The pre-training formats; `chat` has its own example manifest (tests/test_chat_sft.py).
    assert {t for _, t in tasks} == set(manifest.PRETRAINING_TASKS)
    assert all(tasks[("valid", t)] > 0 for t in manifest.PRETRAINING_TASKS)
    spans = {(e.audio[s.audio], s.start, s.end) for e in entries for s in e.segments}
    assert sum(b - a for _, a, b in spans) >= 20 * 60
    train_files = {a for e in entries if e.split == "train" for a in e.audio}
    assert not train_files & {a for e in entries if e.split == "valid" for a in e.audio}
    langs = {(e.language, e.response_language) for e in entries if e.task == "s2tt"}
    assert {("en", "zh"), ("zh", "en")} <= langs


def test_bootstrap_quantiser_codes():
    root = pathlib.Path(str(sources.corpus_dir()))
    q = bootstrap_codes.BootstrapQuantiser.from_bytes((root / sources.CORPUS_QUANTISER).read_bytes())
    assert q.codebook_sizes == (64,) * 8
    wave = audio_io.load(next(iter(sorted((root / "audio").glob("*.flac")))), 16000)
    codes = q.encode(wave)
    assert codes.shape == (bootstrap_codes.num_frames(len(wave)), 8) and codes.max() < 64
    errs = [q.residual_error(wave, k) for k in (1, 4, 8)]
    assert errs[0] > errs[1] > errs[2]  # more levels, lower residual


def test_default_source_is_embedded_corpus():
    c = config.default_data_config()
    assert c.source == "embedded"
    ds = pipeline.lm_dataset(
        c, batch_size=2, seq_len=256, vocab="bytes", vocab_size=512, codebook_sizes=(64,) * 8
    )
    b = next(iter(ds))
    lm_batch.check(b)
    assert b["audio_weights"].sum() > 0 and b["text_weights"].sum() > 0
    assert np.all(b["audio_codes"] < 64) and b["audio_targets"][..., 0].max() <= 64
