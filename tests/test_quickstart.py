"""`bajax quickstart` end to end at a few steps per stage: every artifact, and a run interrupted between
stages (and inside the LM stage) completes when started again."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bajax import quickstart
from bajax.config import apply_override, load_file

pytestmark = pytest.mark.slow  # end to end / several processes: minutes each

ROOT = Path(__file__).resolve().parents[1]
FEW = ["text_steps=3", "tokenizer_steps=3", "stage1_steps=2", "stage2_steps=2", "flow_steps=2",
       "reply_frames=4", "seq_len=128", "prepare_workers=0", "vocoder_steps=2", "eval_utterances=2",
       "eval_spoken=1"]


def test_quickstart_interrupted_then_completes(tmp_path):
    q = load_file(str(ROOT / "configs" / "quickstart.py"))
    for item in FEW:
        apply_override(q, item)
    work = tmp_path / "qs"
    first = quickstart.run(q, str(work), quiet=True, stop_before="3_lm_stage1")
    assert list(first) == ["0_text_lm", "1_tokenizer", "2_prepare"]
    # Interrupt inside a stage too: LM stage 1 saved a checkpoint at step 1 but never finished.
    from bajax.train.trainer import train

    qs = quickstart.Quickstart(q, str(work), quiet=True)
    cfg = qs._config("configs/lm/tiny.py:stage1", [*qs._lm_data(), "train.steps=2", "train.eval_batches=0",
                                                   f"train.init_from={qs.path('0_text_lm') / 'checkpoints'}"])
    train(cfg, str(qs.path("3_lm_stage1")), quiet=True, stop_after=1)
    assert not (qs.path("3_lm_stage1") / "DONE").exists()

    results = quickstart.run(q, str(work), quiet=True)
    assert list(results) == [s.name for s in quickstart.STAGES]
    for stage in quickstart.STAGES:
        assert (work / stage.name / "DONE").exists(), stage.name
    assert json.loads((work / "0_text_lm" / "DONE").read_text())["seconds"] > 0
    wave, sr = soundfile.read(work / "7_generate" / "reply.wav")
    assert sr == 24000 and len(wave) > 0 and len(wave) % 1920 == 0 and np.isfinite(wave).all()
    assert (work / "7_generate" / "reply.png").stat().st_size > 1000
    for name in ("lm", "tokenizer", "flow", "vocoder"):
        assert any((work / "8_export" / name).glob("*.safetensors")), name
    summary = (work / "summary.md").read_text()
    assert "Codebook usage / perplexity per RVQ layer" in summary and "Held-out text-only loss" in summary
    assert "Held-out copy synthesis (2 valid-split utterances" in summary
    # bajax eval of the trained parts: every task wrote its results, and each scored its two utterances.
    for task, n in (("codec", 2), ("tts", 1), ("s2s", 1)):
        result = json.loads((work / "9_eval" / task / "results.json").read_text())
        assert result["rows"]["scored"] == n, task
    assert json.loads((work / "6_vocoder" / "eval" / "results.json").read_text())["rows"]["scored"] == 2
    done = json.loads((work / "9_eval" / "DONE").read_text())
    assert 1.0 < done["codec_pesq_wb"] < 4.7 and done["tts_wer"] >= 0.0
    assert "## Evaluation (bajax eval" in summary
