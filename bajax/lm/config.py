"""Default `model` section of an audio-LLM config: every key, with the tiny shape as its value."""

from ml_collections import ConfigDict


def default_model_config() -> ConfigDict:
    m = ConfigDict()
    m.vocab = "bytes"                 # 'bytes' (tiny runs) or 'qwen' (tokenizer.json of Qwen2.5)
    m.vocab_size = 384                # bytes + special tokens, padded to a multiple of 128
    m.hidden = 64
    m.layers = 2
    m.heads = 4
    m.kv_heads = 2
    m.head_dim = 16
    m.mlp = 176
    m.rope_theta = 1e6
    m.attention_causal_blocks = 1     # >1: query blocks skip the masked upper triangle (same result)
    m.norm_eps = 1e-6
    m.tie_embeddings = False
    m.codebook_sizes = (64, 64, 64, 64, 64, 64, 64, 64)
    m.audio_head_layers = 3
    m.audio_head_heads = 4            # the reference uses hidden / 128
    m.audio_head_ffn_bias = False     # the reference stores FFN biases but never adds them
    m.dtype = "float32"               # compute dtype; params stay fp32
    m.remat = "none"                  # none | full | dots | dots_no_batch
    m.scan_layers = True
    m.text_loss_weight = 1.0
    m.audio_loss_weight = 1.0
    return m
