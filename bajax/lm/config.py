"""Default `model` section of an audio-LLM config: every key, with the tiny shape as its value."""

from ml_collections import ConfigDict

from bajax.lm.special_tokens import NAMES


def default_model_config() -> ConfigDict:
    m = ConfigDict()
    m.vocab = "bytes"                 # 'bytes' (tiny runs) or 'qwen' (tokenizer.json of Qwen2.5)
    m.vocab_size = 384                # bytes + special tokens, padded to a multiple of 128
    # Special-token ids (name -> id; -1 = the default of model.vocab). `bajax import-release` sets them from
    # the release's config.json and tokenizer; read them with bajax.lm.special_tokens.ids_of(model).
    m.special_ids = ConfigDict({name: -1 for name in NAMES})
    m.hidden = 128                    # the reference's audio head needs a multiple of 128
    m.layers = 2
    m.heads = 4
    m.kv_heads = 2
    m.head_dim = 32
    m.mlp = 352
    m.rope_theta = 1e6
    m.attention_causal_blocks = 1     # >1: query blocks skip the masked upper triangle (same result)
    # Training loss: the audio head runs only at positions with audio loss weight, gathered per batch shard into
    # the smallest of these capacities (fractions of the shard's positions) that holds them; () = everywhere
    m.audio_head_capacity = (0.125, 0.25, 0.5)
    # Text loss in pieces of this many positions (0 = the whole row at once): only [B, piece, vocab] logits
    # exist at a time (bajax/lm/losses.py text_cross_entropy); the large-vocabulary configs set it
    m.text_loss_chunk = 0
    m.attention = "auto"              # auto | xla | blockwise | splash | cudnn (bajax.kernels.attention)
    m.norm_eps = 1e-6
    m.tie_embeddings = False
    m.codebook_sizes = (64, 64, 64, 64, 64, 64, 64, 64)
    m.audio_head_layers = 3
    m.audio_head_heads = 0            # 0: hidden / 128, as the reference (other values cannot be exported)
    m.audio_head_ffn_bias = False     # the reference stores FFN biases but never adds them
    m.dtype = "float32"               # compute dtype; params stay fp32
    m.remat = "none"                  # none | full | dots | dots_no_batch
    m.scan_layers = True
    m.text_loss_weight = 1.0
    m.audio_loss_weight = 1.0
    return m


REFERENCE_HEAD_WIDTH = 128   # modeling_omni.CasualDepthTransformerLayer: num_heads = hidden // 128


def audio_head_heads(m: ConfigDict) -> int:
    """The depth transformer's attention heads: `model.audio_head_heads`, or hidden / 128 (the reference)."""
    if m.audio_head_heads:
        return int(m.audio_head_heads)
    if m.hidden % REFERENCE_HEAD_WIDTH:
        raise ValueError(f"model.audio_head_heads=0 means hidden / {REFERENCE_HEAD_WIDTH} heads as the reference, "
                         f"but model.hidden={m.hidden} is not a multiple of {REFERENCE_HEAD_WIDTH}: set "
                         f"model.hidden to a multiple of {REFERENCE_HEAD_WIDTH}, or model.audio_head_heads to a "
                         f"divisor of it (a model the reference code cannot build)")
    return m.hidden // REFERENCE_HEAD_WIDTH
