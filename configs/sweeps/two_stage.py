"""Ablation (paper Table 5's question): does two-stage audio pre-training preserve language ability better
than training everything at once? Every member starts from the same text-only pre-trained tiny LM; the
table compares the held-out text-only loss after audio training (`eval_text_loss`) and the audio loss.

  bajax sweep configs/sweeps/two_stage.py --workdir runs/sweeps/two_stage
"""

from bajax.data.manifest import TASKS

CONFIG = "configs/lm/tiny.py"
METRICS = ("eval_text_loss", "eval_audio_loss", "audio_loss", "text_loss")

AUDIO_STEPS = 200   # audio-training steps of each recipe (two-stage splits them 50/50)


def get_sweep():
    text_only = [f"data.mixture.{t}={1.0 if t == 'text' else 0.0}"
                 for t in (*TASKS, "text")]
    start = "train.init_from={workdir}/text_pretrain/checkpoints"
    half = AUDIO_STEPS // 2
    return [
        ("text_pretrain", [*text_only, "train.steps=200"]),
        ("single_stage", [start, f"train.steps={AUDIO_STEPS}"]),
        ("two_stage_s1", [start, "train.stage=stage1", f"train.steps={half}"]),
        ("two_stage_s2", ["train.init_from={workdir}/two_stage_s1/checkpoints", "train.stage=stage2",
                          f"train.steps={AUDIO_STEPS - half}"]),
    ]
