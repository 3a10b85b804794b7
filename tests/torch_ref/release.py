"""A tiny release directory in the reference structure (no weights can be downloaded here): config.json with
every field of Baichuan-Omni-1.5's OmniConfig at tiny sizes, random bf16 weights of the reference modules
(tests/torch_ref) in one key space sharded with model.safetensors.index.json, keys of a visual encoder
bajax does not model, a byte-level BPE tokenizer.json (built with `tokenizers`) whose special tokens sit at
ids of their own (as Omni-1.5's do), tokenizer_config.json with a chat template, and hift.pt."""

import copy
import json
from pathlib import Path

import torch

from tests.torch_ref.flow import FlowRef
from tests.torch_ref.hift import from_config
from tests.torch_ref.lm import OmniLM
from tests.torch_ref.tokenizer import TokenizerRef

CODEBOOKS = [64, 64, 32, 32, 16, 16, 16, 16]
VOCAB = 384
# Added tokens in this order after the BPE vocabulary: ids differ from bajax's byte-level and Qwen ids.
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<B_SYS>", "<B_USYS>", "<C_Q>", "<C_A>",
         "<audio_start_baichuan>", "<audio_end_baichuan>", "<audio_pad_baichuan>", "<img_start_baichuan>",
         "<audio_delim_baichuan>", "<audiotext_start_baichuan>", "<audiotext_end_baichuan>",
         "<audiotext_pad_baichuan>", "<audiogen_start_baichuan>", "<audiogen_end_baichuan>"]
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def build_text_tokenizer(folder: Path, base_vocab: int = 300):
    """tokenizer.json + tokenizer_config.json + vocab.json/merges.txt of a tiny Qwen-style byte-level BPE."""
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=base_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20 + ["hello there, general"] * 20,
                            trainer)
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in ADDED])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    decoder = {str(tok.token_to_id(t)): {"content": t, "special": True} for t in ADDED}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"added_tokens_decoder": decoder, "chat_template": CHAT_TEMPLATE, "eos_token": "<|endoftext|>",
         "tokenizer_class": "Qwen2Tokenizer"}))
    return tok


def release_config(tok) -> dict:
    """Omni-1.5's config.json field for field, at tiny sizes, with the audio ids of `tok`."""
    ids = {name: tok.token_to_id(f"<{name}_baichuan>") for name in
           ("audio_start", "audio_end", "audio_pad", "audio_delim", "audiotext_start", "audiotext_end",
            "audiotext_pad", "audiogen_start", "audiogen_end")}
    visual = {"enable": True, "depth": 2, "embed_dim": 16, "hidden_act": "quick_gelu", "image_pad_token_id": 3,
              "image_mean": [0.5, 0.5, 0.5], "model_type": "clip_vision_model"}
    return {
        "_name_or_path": "_", "architectures": ["OmniForCausalLM"], "attention_qkv_bias": True,
        "attention_qkv_pack": True,
        "audio_config": {"audio_head_transformer_layers": 3, **{f"{k}_token_id": v for k, v in ids.items()},
                         "avg_pooler": 4, "d_model": 64, "decoder_attention_heads": 4, "decoder_ffn_dim": 256,
                         "decoder_kernel_size": 3, "decoder_layers": 2, "decoder_stride_size": 2, "enable": True,
                         "encoder_attention_heads": 4, "encoder_ffn_dim": 256, "encoder_layers": 2,
                         "hop_length": 160, "kernel_size": 3, "max_audio_seconds": 30, "n_fft": 400,
                         "num_mel_bins": 128, "sampling_rate": 16000, "stride_size": 2, "split_overlap": 0.0,
                         "vq_config": {"enable": True, "codebook_sizes": CODEBOOKS}},
        "auto_map": {"AutoConfig": "configuration_omni.OmniConfig",
                     "AutoModelForCausalLM": "modeling_omni.OmniForCausalLM"},
        "omni_tokenizer_type": "auto", "bos_token_id": 1, "eos_token_id": 2,
        "flow_matching_config": {
            "enable": True, "use_hires_mel": True, "sampling_rate": 24000, "hop_length": 480,
            "max_audio_seconds": 30, "split_overlap": 0.1, "use_hidden_states_before_dconv2": True,
            "prenet_in_dim": 64, "prenet_out_dim": 80, "prenet_d_model": 64, "prenet_attention_heads": 4,
            "prenet_ffn_dim": 256, "prenet_nlayers": 2, "prenet_activation_function": "gelu",
            "prenet_max_source_positions": 5000, "prenet_target_mel_length_scale_ratio": 1.0,
            "prenet_loss_weight": 1.0, "unet_use_omni_attn": False, "loss_weight": 1.0, "in_channels": 80,
            "spk_emb_dim": 0, "diffusion_steps": 10, "channels": [64], "dropout": 0.0, "attention_head_dim": 32,
            "n_blocks": 1, "num_mid_blocks": 2, "num_heads": 2, "act_fn": "gelu", "cal_mel_mae": True,
            "cfm_params": {"sigma_min": 1e-6, "solver": "euler", "t_scheduler": "cosine", "training_cfg_rate": 0.2,
                           "inference_cfg_rate": 0.7, "reg_loss_type": "l1"}},
        "head_dim": 32, "hidden_act": "silu", "hidden_size": 128, "initializer_range": 0.02,
        "intermediate_size": 352, "max_position_embeddings": 8192, "max_window_layers": 28, "model_type": "omni",
        "multimodal": ["audio", "image", "video", "audiogen"], "multimodal_special_token_list": sorted(ids.values()),
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pad_token_id": 0,
        "position_embedding_type": "rope", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "sliding_window": 131072,
        "sparse_attention_heads": None, "sparse_attention_layers": [], "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "train_multimodal_special_tokens_only": False,
        "transformers_version": "4.45.0.dev0", "use_cache": False, "use_norm_head": False,
        "use_sliding_window": False, "video_config": {**visual, "video_place_token_id": 4},
        "visual_config": visual, "vocab_size": VOCAB,
        "vocoder_config": {"enable": True, "enable_multi_scale": True, "max_audio_seconds": 30,
                           "sampling_rate": 16000, "hop_length": 256, "split_overlap": 0.0, "n_fft": 1024,
                           "num_mel_bins": 80, "channels": [64, 64, 64, 64, 80]}}


def reference_modules(cfg: dict):
    """The reference modules of a release config: (LM, tokenizer, flow) with the fields the torch references
    read (the position tables' lengths derived from max_audio_seconds, as the reference does)."""
    c = copy.deepcopy(cfg)
    a = c["audio_config"]
    a["decoder_max_positions"] = a["max_audio_seconds"] * a["sampling_rate"] // a["hop_length"]
    a["max_source_positions"] = a["decoder_max_positions"] // a["stride_size"]
    return OmniLM(c), TokenizerRef(c), FlowRef(c)


def hift_config() -> dict:
    from bajax import config

    return config.defaults("vocoder").model.to_dict()


def write_release(folder: Path, *, seed: int = 0, dtype=torch.bfloat16) -> dict:
    """The whole directory; returns its config. Every floating tensor random (biases and the Pre-Net table
    included, so a re-created constant would show)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tok = build_text_tokenizer(folder)
    tok.model.save(str(folder))                     # vocab.json + merges.txt (the slow-tokenizer files)
    cfg = release_config(tok)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    (folder / "modeling_omni.py").write_text("# the reference remote code would be here\n")
    g = torch.Generator().manual_seed(seed)
    shards = []
    for module in reference_modules(cfg):
        shards.append({k: (torch.randn(v.shape, generator=g) * 0.1).to(dtype).contiguous()
                       for k, v in module.state_dict().items()})
    shards[0].update({"model.visual_model.blocks.0.weight": torch.randn(16, 16, generator=g).to(dtype),
                      "model.visual_bridge_model.mlp.weight": torch.randn(16, 16, generator=g).to(dtype)})
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}))
    hift = from_config(hift_config())
    torch.save({k: torch.randn(v.shape, generator=g) * 0.1 for k, v in hift.state_dict().items()},
               folder / "hift.pt")
    return cfg
