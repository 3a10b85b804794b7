"""Ablation (paper Table 1): how many residual VQ layers the tokenizer needs; held-out mel MAE per member.

  bajax sweep configs/sweeps/rvq_layers.py --workdir runs/sweeps/rvq_layers
  python launch/sweep.py configs/sweeps/rvq_layers.py --root runs/sweeps/rvq_layers [--dry-run]

Each member trains the tiny tokenizer on the embedded corpus with the first k codebooks of the tiny config
(64, 64, 32, 32, 16, 16, 16, 16); `eval_mel_mae` is the refined mel's MAE on the held-out split with greedy
codes; `eval_speech_pesq` / `eval_speech_stoi` score Griffin-Lim of the reconstructed mel against Griffin-Lim
of the target mel on the first 4 held-out utterances (`train.eval_speech`, README "bajax train"). The paper's
figures (k = 1, 4, 6, 8): 0.677, 0.516, 0.485, 0.466. At full size use
CONFIG = "configs/tokenizer/base.py" with PAPER_SIZES.
"""

CONFIG = "configs/tokenizer/tiny.py"
METRICS = ("eval_mel_mae", "eval_speech_pesq", "eval_speech_stoi", "eval_speech_mr_stft", "eval_coarse_mae",
           "eval_align_loss", "eval_loss")

LAYERS = (1, 4, 6, 8)
TINY_SIZES = (64, 64, 32, 32, 16, 16, 16, 16)      # model.rvq.codebook_sizes of configs/tokenizer/tiny.py
PAPER_SIZES = (8192, 4096, 2048, 1024, 1024, 1024, 1024, 1024)


def get_sweep(sizes=TINY_SIZES):
    members = []
    for k in LAYERS:
        codebooks = ",".join(str(s) for s in sizes[:k])
        members.append((f"rvq{k}", [f"model.rvq.codebook_sizes=({codebooks},)"]))
    return members
