"""Building blocks shared by all models (norms, linear/embedding, RoPE, attention, masks, KV cache, MLPs,
stacked layers). They know no model."""

from bajax.layers.attention import Attention, dot_product_attention
from bajax.layers.kv_cache import KVCache, init_cache
from bajax.layers.linear import Embedding, Linear
from bajax.layers.masks import attention_mask
from bajax.layers.mlp import GeluMLP, SwiGLU
from bajax.layers.norms import LayerNorm, RMSNorm
from bajax.layers.rope import apply_rope
from bajax.layers.stack import REMAT_POLICIES, Stack, remat

__all__ = ["Attention", "Embedding", "GeluMLP", "KVCache", "LayerNorm", "Linear", "REMAT_POLICIES", "RMSNorm",
           "Stack", "SwiGLU", "apply_rope", "attention_mask", "dot_product_attention", "init_cache", "remat"]
