"""The flow-matching decoder (SPEC section 4): conditioning -> Pre-Net prior mu -> causal U-Net CFM estimator
-> guided cosine-Euler sampling -> 24 kHz mel -> vocoder.

  config.py        default_model_config(): every `model` key (tiny values; paper values in comments)
  conditioning.py  where the conditioning comes from ('tokenizer' = paper setting, 'mel16' = standalone)
  prenet.py        nearest resample, MLP, causal RMSNorm transformer -> mu (prior loss L1)
  estimator.py     the U-Net v(x_t, mu, t): ResNet1D + transformer blocks, block-causal attention
  attention.py     chunked block-causal / causal attention core; per-sample masks for `model.train_masks`
  cfm.py           OT-CFM loss, cosine time grid, guided Euler sampler
  model.py         FlowDecoder: loss_sums, prior, sample
  streaming.py     the Pre-Net and each Euler step on new frames only, with key/value and conv caches
  vocoder.py       Vocoder interface, Griffin-Lim
  flops.py         analytic FLOPs (train step, synthesis)
"""

from bajax.flow.model import FlowDecoder
from bajax.flow.vocoder import GriffinLim, Vocoder

__all__ = ["FlowDecoder", "GriffinLim", "Vocoder"]
