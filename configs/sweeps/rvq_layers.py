"""Ablation: how many residual VQ layers the audio tokenizer needs (the paper uses 8).

  python launch/sweep.py configs/sweeps/rvq_layers.py --root runs/sweeps/rvq_layers [--dry-run]

Each member keeps the paper's first k codebook sizes (8192, 4096, 2048, then 1024s).
"""

CONFIG = "configs/tokenizer/base.py"

PAPER_SIZES = (8192, 4096, 2048, 1024, 1024, 1024, 1024, 1024)


def get_sweep():
    members = []
    for k in (2, 4, 6, 8):
        sizes = ",".join(str(s) for s in PAPER_SIZES[:k])
        members.append((f"rvq{k}", [f"model.rvq.codebook_sizes=({sizes})"]))
    return members
