"""Ablation: the L2-norm constraint on the RVQ codebooks (paper eq. 5, `embed *= 1 - beta` after each EMA step).
beta = 0 disables it; larger beta bounds the codebook norms more tightly. The table shows what the
constraint does to the codebook norms (`norm_max_0`, `norm_mean_0` of the first layer), code usage and the
held-out reconstruction.

  bajax sweep configs/sweeps/l2_beta.py --workdir runs/sweeps/l2_beta
"""

CONFIG = "configs/tokenizer/tiny.py"
METRICS = ("eval_mel_mae", "norm_mean_0", "norm_max_0", "usage_0", "perplexity_0")

BETAS = (0.0, 1e-3, 1e-2)


def get_sweep():
    return [(f"beta{beta:g}", [f"model.rvq.beta={beta}"]) for beta in BETAS]
