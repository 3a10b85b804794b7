"""`train.eval_speech`: PESQ, STOI, mel L1 and STFT distance of fixed held-out utterances at every evaluation,
for tokenizer, flow and vocoder runs (bajax/train/speech_eval.py, bajax/eval/during_training.py)."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bajax import models
from bajax.config import load
from bajax.eval import during_training
from bajax.train import speech_eval
from bajax.train.trainer import Trainer, train

pytest.importorskip("pesq")
pytest.importorskip("pystoi")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ONE = jax.devices()[:1]
SPEECH = ("eval_speech_mel_l1", "eval_speech_mr_stft", "eval_speech_pesq", "eval_speech_stoi", "eval_speech_failed",
          "eval_speech_utterances")
# Tiny runs: two steps, evaluated at the end on 2 utterances (one held-out batch for the loss metrics).
RUN = ["train.steps=2", "train.eval_every=2", "train.eval_batches=1", "train.eval_speech=2", "metrics.log_every=1",
       "metrics.tensorboard=false", "checkpoint.async_save=false", "checkpoint.every=2", "train.batch_size=2"]


@pytest.fixture(scope="module")
def utterance():
    """A whole held-out utterance of the embedded corpus: 24 kHz wave and its flow mel."""
    from bajax.audio.mel import flow_mel_24k
    from bajax.eval.copy_synthesis import held_out_waves

    wave = held_out_waves(1, 3.0)[0]
    return wave, flow_mel_24k(wave)


def _logged(workdir) -> dict:
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "eval_speech_pesq" in r][-1]


def _check_ranges(row: dict, utterances: int):
    assert all(np.isfinite(row[k]) for k in SPEECH), row
    assert row["eval_speech_utterances"] == utterances and row["eval_speech_failed"] == 0
    assert row["eval_speech_mel_l1"] > 0 and row["eval_speech_mr_stft"] > 0
    assert 0.999 <= row["eval_speech_pesq"] <= 4.65      # P.862.2's mapping: 0.999 + 4 / (1 + e^...)
    assert -1.0 <= row["eval_speech_stoi"] <= 1.0


def _same_checkpoint_same_numbers(cfg, workdir, logged: dict):
    """A new trainer on the run's newest checkpoint scores it twice: identical, and equal to what was logged."""
    trainer = Trainer(cfg, str(workdir), devices=ONE)
    with trainer.scope():
        state = trainer.restore_latest()
        first = trainer.evaluate(state)
        second = trainer.evaluate(state)
    for k in SPEECH:
        assert first[k] == second[k] == logged[k], k


# -- the pair scores ------------------------------------------------------------------------------------------

def test_a_perfect_estimate_scores_perfectly(utterance):
    wave, mel = utterance
    perfect = during_training.score([during_training.Pair(wave, wave, 24000)])
    assert perfect["speech_mel_l1"] == 0 and perfect["speech_mr_stft"] == 0
    assert perfect["speech_pesq"] == pytest.approx(4.64, abs=0.01)
    assert perfect["speech_stoi"] == pytest.approx(1.0, abs=1e-4)
    assert perfect["speech_failed"] == 0 and perfect["speech_utterances"] == 1
    # The flow's and the tokenizer's path: an estimated mel equal to the target gives equal Griffin-Lim waves.
    from bajax.flow.vocoder import GriffinLim

    mels = jnp.asarray(np.stack([mel, np.roll(mel, 7, axis=0)]))
    lengths = jnp.array([len(mel), len(mel) - 20])
    out = jax.device_get(jax.jit(lambda a, b, n: during_training.mel_pair_outputs(GriffinLim(), a, b, n))(
        mels, mels, lengths))
    pairs = during_training.pairs_of(out, 24000, 2)
    assert [len(p.ref) for p in pairs] == [len(mel) * 480, (len(mel) - 20) * 480]
    scores = during_training.score(pairs)
    assert scores["speech_mel_l1"] == 0 and scores["speech_mr_stft"] == 0
    assert scores["speech_pesq"] == pytest.approx(4.64, abs=0.01)
    assert scores["speech_stoi"] == pytest.approx(1.0, abs=1e-4)
    # ... and a worse estimate scores worse.
    noisy = during_training.score([during_training.Pair(wave, wave + 0.05 * np.random.default_rng(0).standard_normal(
        len(wave)).astype(np.float32), 24000)])
    assert noisy["speech_pesq"] < 4 and noisy["speech_stoi"] < 1 and noisy["speech_mr_stft"] > 0


def test_griffin_lim_batch_equals_griffin_lim_of_each_utterance_but_its_last_frames(utterance):
    from bajax.flow.vocoder import GriffinLim

    _, mel = utterance
    gl = GriffinLim(n_iter=4)
    padded = np.concatenate([mel, np.zeros((10, 80), np.float32)])       # zeros are loud: must be silenced
    batch = np.asarray(jax.jit(lambda m, n: during_training.griffin_lim_batch(gl, m, n))(
        jnp.asarray(padded[None]), jnp.array([len(mel)])))[0]
    alone = gl(mel)
    overlap = gl.n_iter * gl.n_fft // gl.hop        # frames the padding can reach: one window per iteration
    np.testing.assert_allclose(batch[: (len(mel) - overlap) * 480], alone[: (len(mel) - overlap) * 480], atol=1e-4)
    # The padding stays near silence (the zero log-mel, magnitude 1 in every bin, would be loud).
    tail = batch[len(mel) * 480:]
    assert np.sqrt(np.mean(tail**2)) < 0.1 * np.sqrt(np.mean(alone**2))


def test_an_utterance_pesq_cannot_score_is_counted_not_dropped(utterance):
    wave, _ = utterance
    silent = np.zeros_like(wave)
    scores = during_training.score([during_training.Pair(wave, wave, 24000), during_training.Pair(silent, wave, 24000)])
    assert scores["speech_failed"] == 1 and scores["speech_utterances"] == 2
    assert scores["speech_pesq"] == pytest.approx(4.64, abs=0.01)     # the mean of those PESQ could score
    alone = during_training.score([during_training.Pair(silent, wave, 24000)])
    assert alone["speech_failed"] == 1 and np.isnan(alone["speech_pesq"]) and np.isnan(alone["speech_stoi"])


# -- the held-out set and the errors ---------------------------------------------------------------------------

def test_the_held_out_set_is_whole_utterances_not_training_crops():
    cfg = load(str(CONFIGS / "vocoder" / "tiny.py"), ["data.audio.crop_seconds=0.16"])
    utts = speech_eval.held_out_utterances(cfg.data, cfg.data.eval_split, 3, ("wave16", "wave24", "mel24"))
    again = speech_eval.held_out_utterances(cfg.data, cfg.data.eval_split, 3, ("wave16", "wave24", "mel24"))
    assert len(utts) == 3
    for u, v in zip(utts, again):
        assert u["frames"] == v["frames"] and np.array_equal(u["wave24"], v["wave24"])
        assert speech_eval.MIN_SECONDS * 12.5 <= u["frames"] <= speech_eval.MAX_SECONDS * 12.5
        assert len(u["wave24"]) == 1920 * u["frames"] and len(u["mel24"]) == 4 * u["frames"]
        assert len(u["wave16"]) == 1280 * u["frames"]
    batch = speech_eval.batch_of(utts, 4)
    assert batch["wave24"].shape[0] == 4 and list(batch["mel_lengths"][:3]) == [4 * u["frames"] for u in utts]


def test_eval_speech_errors_name_the_fix(monkeypatch):
    lm = load(str(CONFIGS / "lm" / "tiny.py"), ["train.eval_speech=2"])
    with pytest.raises(ValueError, match="train.eval_speech=2.*set it to 0"):
        speech_eval.check(lm, models.get("lm"))
    flow = load(str(CONFIGS / "flow" / "tiny.py"), ["train.eval_speech=2"])
    monkeypatch.setitem(sys.modules, "pesq", None)                      # the eval extra not installed
    with pytest.raises(ImportError, match=r"pip install 'bajax\[eval\]'.*eval_speech=0"):
        speech_eval.check(flow, models.get("flow"))
    off = load(str(CONFIGS / "flow" / "tiny.py"), ["train.eval_speech=0"])
    speech_eval.check(off, models.get("flow"))                           # off: the extra is not needed


# -- tiny runs of each kind ------------------------------------------------------------------------------------

def test_flow_run_logs_speech_metrics_and_a_checkpoint_scores_the_same(tmp_path):
    cfg = load(str(CONFIGS / "flow" / "tiny.py"), RUN + ["data.audio.crop_seconds=0.32"])
    train(cfg, str(tmp_path), quiet=True, devices=ONE)
    row = _logged(tmp_path)
    assert row["step"] == 2 and "eval_loss" in row
    _check_ranges(row, 2)
    from bajax.sweep import final_metrics

    # What `bajax sweep` tabulates and plots: the last value of each metric in metrics.jsonl.
    assert {k: final_metrics(tmp_path)[k] for k in SPEECH} == {k: row[k] for k in SPEECH}
    _same_checkpoint_same_numbers(cfg, tmp_path, row)


@pytest.mark.slow
def test_tokenizer_run_logs_speech_metrics_and_a_checkpoint_scores_the_same(tmp_path):
    cfg = load(str(CONFIGS / "tokenizer" / "tiny.py"), RUN + ["data.audio.crop_seconds=0.32", "train.eval_batches=1",
                                                              "model.loss.align_weight=0.0"])
    train(cfg, str(tmp_path), quiet=True, devices=ONE)
    row = _logged(tmp_path)
    _check_ranges(row, 2)
    _same_checkpoint_same_numbers(cfg, tmp_path, row)


@pytest.mark.slow
def test_vocoder_run_logs_speech_metrics_and_a_checkpoint_scores_the_same(tmp_path):
    from tests.test_vocoder_train import FAST

    cfg = load(str(CONFIGS / "vocoder" / "tiny.py"), FAST + RUN + ["train.batch_size=8"])
    train(cfg, str(tmp_path), quiet=True, devices=ONE)
    row = _logged(tmp_path)
    _check_ranges(row, 2)
    _same_checkpoint_same_numbers(cfg, tmp_path, row)


@pytest.mark.slow
def test_speech_eval_on_eight_devices_pads_rows_and_matches_one_device(tmp_path):
    """2 utterances on a batch axis of 8 devices: padded to 8 rows (copies, not scored), same scores."""
    cfg = load(str(CONFIGS / "flow" / "tiny.py"), RUN + ["data.audio.crop_seconds=0.32"])
    scores = []
    for devices in (ONE, None):
        trainer = Trainer(cfg, str(tmp_path), devices=devices)
        with trainer.scope():
            evaluator = speech_eval.SpeechEvaluator(trainer)
            scores.append(evaluator(trainer.fresh_state()))
    assert evaluator.batch["mel24"].shape[0] == 8
    for k in scores[0]:
        np.testing.assert_allclose(scores[1][k], scores[0][k], rtol=2e-3, err_msg=k)
