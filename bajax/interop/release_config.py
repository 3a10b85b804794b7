"""A release's config.json (the reference `OmniConfig`) <-> the bajax configs of its components.

Every field of the release config is handled by exactly one rule, and a field no rule knows stops the
import naming it (nothing is silently defaulted or dropped):

  map      a bajax config key (`MAPS`; both directions, so export writes back what training changed)
  need     a value the reference reads and bajax can only honour at one value (`NEEDS`): another value,
           or a reference default that differs when the field is absent, stops the import naming the field
  carry    read by the reference only for parts bajax does not change (inference chunking, RoPE cache
           size, training-only flags of the reference) or never read: kept verbatim in the run
           (RUN/release/config.json) and written back unchanged (`CARRY`)
  skip     sections of parts bajax does not model (`SKIP`: visual_config, video_config): reported; the
           export writes them back with enable=false, because their weights are not carried
  special  the audio special-token ids (`audio_config.<name>_token_id`, `special_tokens.RELEASE_FIELDS`)

The reference's precedence and defaults are applied as the reference applies them: `rotary_emb_base` is
read before `rope_theta` (OmniConfig.get_rotary_base), an absent `use_norm_head` means a NormHead (True),
an absent `attention_qkv_bias` means no bias, `num_key_value_heads` / `head_dim` default from the heads,
WhisperConfig's defaults apply inside audio_config / vocoder_config (`activation_function` gelu,
`scale_embedding` false). The position tables' lengths follow from `max_audio_seconds` as the reference
computes them (encoder: seconds * rate // hop // stride; decoder: seconds * rate // hop).

Generic Hugging Face PretrainedConfig keys (`HF_GENERIC`) are carried at every level.
"""

from __future__ import annotations

import copy
import dataclasses

from bajax.lm import special_tokens

MISSING = object()


class ReleaseConfigError(ValueError):
    """A release config.json field bajax cannot honour (the message names every such field)."""


# (kind, bajax model key, release field) -- the same number in both places, both directions.
MAPS = [
    ("lm", "vocab_size", "vocab_size"), ("lm", "hidden", "hidden_size"), ("lm", "layers", "num_hidden_layers"),
    ("lm", "heads", "num_attention_heads"), ("lm", "mlp", "intermediate_size"),
    ("lm", "audio_head_layers", "audio_config.audio_head_transformer_layers"),
    ("tokenizer", "d_model", "audio_config.d_model"), ("tokenizer", "n_mels", "audio_config.num_mel_bins"),
    ("tokenizer", "encoder_layers", "audio_config.encoder_layers"),
    ("tokenizer", "encoder_heads", "audio_config.encoder_attention_heads"),
    ("tokenizer", "encoder_ffn", "audio_config.encoder_ffn_dim"), ("tokenizer", "pool", "audio_config.avg_pooler"),
    ("tokenizer", "decoder_layers", "audio_config.decoder_layers"),
    ("tokenizer", "decoder_heads", "audio_config.decoder_attention_heads"),
    ("tokenizer", "decoder_ffn", "audio_config.decoder_ffn_dim"),
    ("tokenizer", "decoder_kernel", "audio_config.decoder_kernel_size"),
    ("tokenizer", "decoder_stride", "audio_config.decoder_stride_size"),
    ("tokenizer", "sample_rate", "audio_config.sampling_rate"), ("tokenizer", "mel_hop", "audio_config.hop_length"),
    ("tokenizer", "n_target_mels", "vocoder_config.num_mel_bins"),
    ("tokenizer", "target_sample_rate", "vocoder_config.sampling_rate"),
    ("tokenizer", "target_hop", "vocoder_config.hop_length"),
    ("flow", "cond_dim", "flow_matching_config.prenet_in_dim"),
    ("flow", "n_mels", "flow_matching_config.prenet_out_dim"),
    ("flow", "prenet_hidden", "flow_matching_config.prenet_d_model"),
    ("flow", "prenet_heads", "flow_matching_config.prenet_attention_heads"),
    ("flow", "prenet_ffn", "flow_matching_config.prenet_ffn_dim"),
    ("flow", "prenet_layers", "flow_matching_config.prenet_nlayers"),
    ("flow", "prior_loss_weight", "flow_matching_config.prenet_loss_weight"),
    ("flow", "flow_loss_weight", "flow_matching_config.loss_weight"),
    ("flow", "sample_steps", "flow_matching_config.diffusion_steps"),
    ("flow", "head_dim", "flow_matching_config.attention_head_dim"),
    ("flow", "transformer_blocks", "flow_matching_config.n_blocks"),
    ("flow", "mid_blocks", "flow_matching_config.num_mid_blocks"),
    ("flow", "heads", "flow_matching_config.num_heads"),
    ("flow", "sigma_min", "flow_matching_config.cfm_params.sigma_min"),
    ("flow", "cfg_dropout", "flow_matching_config.cfm_params.training_cfg_rate"),
    ("flow", "guidance", "flow_matching_config.cfm_params.inference_cfg_rate"),
    ("flow", "t_schedule", "flow_matching_config.cfm_params.t_scheduler"),
]
# Fields with a reference default (applied when absent, as OmniConfig / WhisperConfig do).
MAP_DEFAULTS = {"rms_norm_eps": 1e-6, "tie_word_embeddings": False}

# field -> (the value bajax implements, the reference's default when absent or MISSING, why)
NEEDS = {
    "model_type": ("omni", MISSING, "the reference OmniConfig"),
    "attention_qkv_pack": (True, True, "bajax exports q|k|v as one W_pack"),
    "attention_qkv_bias": (True, False, "bajax's LLM has q/k/v biases (Qwen2.5)"),
    "use_norm_head": (False, True, "bajax's lm_head is a plain Linear, not the reference NormHead "
                                   "(OmniConfig defaults use_norm_head to true when absent)"),
    "hidden_act": ("silu", "silu", "bajax's LLM MLP is SwiGLU"),
    "position_embedding_type": ("rope", "rope", "bajax's LLM uses RoPE"),
    "sparse_attention_heads": (None, None, "bajax has no sparse attention layers"),
    "sparse_attention_layers": ([], [], "bajax has no sparse attention layers"),
    "train_multimodal_special_tokens_only": (False, False, "bajax trains the whole LM head"),
    "audio_config.enable": (True, MISSING, "the release must hold the audio parts"),
    "audio_config.vq_config.enable": (True, MISSING, "bajax's tokenizer quantises"),
    "audio_config.kernel_size": (3, MISSING, "bajax's encoder convolutions are 3 wide"),
    "audio_config.stride_size": (2, MISSING, "bajax's encoder down-samples by 2"),
    "audio_config.n_fft": (400, MISSING, "bajax's Whisper front end uses n_fft 400"),
    "audio_config.activation_function": ("gelu", "gelu", "bajax's Whisper layers use exact GELU"),
    "audio_config.scale_embedding": (False, False, "bajax's encoder does not scale its inputs"),
    "vocoder_config.enable": (True, MISSING, "bajax's tokenizer has the audio decoder"),
    "vocoder_config.n_fft": (1024, MISSING, "bajax's tokenizer target mel uses n_fft 1024"),
    "flow_matching_config.enable": (True, MISSING, "bajax's flow decoder"),
    "flow_matching_config.use_hidden_states_before_dconv2": (True, MISSING,
                                                             "bajax conditions the flow on them"),
    "flow_matching_config.sampling_rate": (24000, MISSING, "bajax's flow mel is 24 kHz"),
    "flow_matching_config.hop_length": (480, MISSING, "bajax's flow mel hop is 480"),
    "flow_matching_config.prenet_activation_function": ("gelu", MISSING, "bajax's Pre-Net uses GELU"),
    "flow_matching_config.prenet_target_mel_length_scale_ratio": (1.0, MISSING, "bajax resamples 1:1"),
    "flow_matching_config.unet_use_omni_attn": (False, MISSING, "bajax's U-Net attention is block-causal"),
    "flow_matching_config.spk_emb_dim": (0, MISSING, "bajax's flow has no speaker embedding"),
    "flow_matching_config.dropout": (0.0, MISSING, "bajax's U-Net has no dropout"),
    "flow_matching_config.act_fn": ("gelu", MISSING, "bajax's U-Net FFN uses GELU"),
    "flow_matching_config.cfm_params.solver": ("euler", MISSING, "bajax samples with Euler steps"),
    "flow_matching_config.cfm_params.reg_loss_type": ("l1", MISSING, "bajax's prior loss is L1"),
}

CARRY = {
    "_name_or_path", "architectures", "auto_map", "omni_tokenizer_type", "bos_token_id", "eos_token_id",
    "pad_token_id",            # nn.Embedding padding_idx: only the PyTorch gradient of that row; no forward effect
    "initializer_range", "max_position_embeddings", "max_window_layers", "multimodal",
    "multimodal_special_token_list", "sliding_window", "use_sliding_window", "torch_dtype", "transformers_version",
    "use_cache", "rope_scaling",
    "audio_config.split_overlap", "vocoder_config.enable_multi_scale", "vocoder_config.max_audio_seconds",
    "vocoder_config.split_overlap", "flow_matching_config.use_hires_mel", "flow_matching_config.max_audio_seconds",
    "flow_matching_config.split_overlap", "flow_matching_config.cal_mel_mae",
    "flow_matching_config.prenet_max_source_positions",   # the never-added Pre-Net table's length (carried too)
}
HF_GENERIC = {
    "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16", "tf_legacy_loss",
    "pruned_heads", "tie_encoder_decoder", "is_decoder", "is_encoder_decoder", "cross_attention_hidden_size",
    "add_cross_attention", "chunk_size_feed_forward", "id2label", "label2id", "problem_type", "tokenizer_class",
    "prefix", "task_specific_params", "finetuning_task", "_attn_implementation", "_commit_hash",
    "decoder_start_token_id", "sep_token_id", "max_length", "min_length", "do_sample", "early_stopping",
    "num_beams", "num_beam_groups",
    "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty", "length_penalty",
    "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
    "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id",
    "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "model_type", "_name_or_path", "transformers_version", "torch_dtype", "architectures",
}
SKIP = ("visual_config", "video_config")
SECTIONS = ("audio_config", "audio_config.vq_config", "vocoder_config", "flow_matching_config",
            "flow_matching_config.cfm_params")


def _get(d: dict, path: str, default=MISSING):
    for k in path.split("."):
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _set(d: dict, path: str, value) -> None:
    *head, last = path.split(".")
    for k in head:
        d = d.setdefault(k, {})
    d[last] = value


def _leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        p = prefix + k
        out += _leaves(v, p + ".") if isinstance(v, dict) and p in SECTIONS else [p]
    return out


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


@dataclasses.dataclass
class Derived:
    models: dict[str, dict]            # kind -> {model key: value} to apply to that kind's defaults
    special: dict[str, int]            # audio special-token names -> ids from audio_config
    notes: list[str]                   # carried / skipped / defaulted fields, for the import report
    skipped_sections: list[str]        # enabled sections of parts bajax does not model


def derive(release: dict, where: str) -> Derived:
    """The bajax model settings of a release config (`where` names it in errors); every problem at once."""
    seen, problems, notes = set(), [], []
    models: dict[str, dict] = {"lm": {}, "tokenizer": {}, "flow": {}}

    def get(path, default=MISSING):
        seen.add(path)
        v = _get(release, path)
        if v is MISSING:
            if default is MISSING:
                problems.append(f"{path}: missing (the reference reads it and has no default)")
            else:
                notes.append(f"{path}: absent, the reference's default {default!r} applies")
            return default
        return v

    for kind, key, path in MAPS:
        v = get(path)
        if v is not MISSING:
            models[kind][key] = v
    for path, default in MAP_DEFAULTS.items():
        models["lm"][{"rms_norm_eps": "norm_eps", "tie_word_embeddings": "tie_embeddings"}[path]] = get(path, default)
    heads = models["lm"].get("heads", 1)
    models["lm"]["kv_heads"] = get("num_key_value_heads", heads)
    models["lm"]["head_dim"] = get("head_dim", models["lm"].get("hidden", 0) // max(1, heads))
    sizes = get("audio_config.vq_config.codebook_sizes")
    if sizes is not MISSING:
        models["lm"]["codebook_sizes"] = tuple(sizes)
        models["tokenizer"]["rvq.codebook_sizes"] = tuple(sizes)
    # RoPE base: OmniConfig.get_rotary_base reads rotary_emb_base first; rope_theta is then never read.
    seen.update({"rotary_emb_base", "rope_theta"})
    if "rotary_emb_base" in release:
        models["lm"]["rope_theta"] = float(release["rotary_emb_base"])
        if "rope_theta" in release:
            notes.append(f"rope_theta={release['rope_theta']}: not read (rotary_emb_base takes precedence); carried")
    elif "rope_theta" in release:
        models["lm"]["rope_theta"] = float(release["rope_theta"])
    else:
        problems.append("rope_theta: missing, and no rotary_emb_base (the reference's get_rotary_base needs one)")
    for path, (want, default, why) in NEEDS.items():
        v = get(path, default)
        if v is not MISSING and v != want:
            problems.append(f"{path}={v!r}{' (absent: the reference default)' if path not in _present(release) else ''}"
                            f": bajax cannot honour it ({why}; it needs {want!r})")
    # Position tables, as the reference sizes them from max_audio_seconds.
    sec, rate, hop = (get(f"audio_config.{k}") for k in ("max_audio_seconds", "sampling_rate", "hop_length"))
    if MISSING not in (sec, rate, hop):
        models["tokenizer"]["decoder_positions"] = int(sec * rate // hop)
        models["tokenizer"]["max_source_positions"] = int(sec * rate // hop // 2)
    channels = get("vocoder_config.channels")
    if channels is not MISSING:
        if channels[-1] != _get(release, "vocoder_config.num_mel_bins"):
            problems.append(f"vocoder_config.channels={channels}: the last entry must equal num_mel_bins (the refine "
                            "net's output; bajax's refine net ends in the target mel)")
        models["tokenizer"]["refine_channels"] = tuple(channels[:-1])
    fchannels = get("flow_matching_config.channels")
    if fchannels is not MISSING:
        if len(fchannels) != 1:
            problems.append(f"flow_matching_config.channels={fchannels}: bajax's U-Net has one down and one up "
                            "block (a list of one width)")
        else:
            c = int(fchannels[0])
            models["flow"].update(channels=c, time_hidden=4 * c, ffn=4 * c)
    if "prenet_hidden" in models["flow"]:
        models["flow"]["prenet_in_hidden"] = 4 * int(models["flow"]["prenet_hidden"])
    in_ch = get("flow_matching_config.in_channels")
    if in_ch is not MISSING and in_ch != models["flow"].get("n_mels"):
        problems.append(f"flow_matching_config.in_channels={in_ch}: must equal prenet_out_dim "
                        f"({models['flow'].get('n_mels')}), the mel bins of both")
    if models["flow"].get("cond_dim") not in (None, models["tokenizer"].get("d_model")):
        problems.append(f"flow_matching_config.prenet_in_dim={models['flow']['cond_dim']}: must equal "
                        f"audio_config.d_model ({models['tokenizer'].get('d_model')}), the decoder states it reads")
    special = {}
    for name, field in special_tokens.RELEASE_FIELDS.items():
        v = get(f"audio_config.{field}")
        if v is not MISSING:
            special[name] = int(v)
    seen.update(CARRY)
    seen.add("audio_config.max_audio_seconds")
    skipped = []
    for section in SKIP:
        if section in release:
            seen.add(section)
            if isinstance(release[section], dict) and release[section].get("enable"):
                skipped.append(section)
    unknown = [p for p in _leaves(release) if p not in seen and p.rsplit(".", 1)[-1] not in HF_GENERIC]
    problems += [f"{p}: a field bajax does not know; it cannot tell whether the reference would compute "
                 "something else with it (remove it from config.json if it is inert, or add a rule in "
                 "bajax/interop/release_config.py)" for p in unknown]
    if problems:
        raise ReleaseConfigError(f"{where}: bajax cannot honour {len(problems)} field(s):\n  " + "\n  ".join(problems))
    notes += [f"{p}: carried unchanged (bajax does not compute with it)" for p in sorted(CARRY) if _get(release, p)
              is not MISSING]
    return Derived(models, special, notes, skipped)


def _present(release: dict) -> set[str]:
    return set(_leaves(release))


def build(cfgs: dict, special: dict[str, int], base: dict | None) -> dict:
    """The release config.json of bajax configs {'lm', 'tokenizer', 'flow': ConfigDict}. `base`: the release
    config the runs were imported from (carried and skipped fields come back verbatim), or None for runs
    trained from scratch (then a minimal complete OmniConfig, with the visual/video sections disabled, which
    the reference constructor still reads)."""
    out = copy.deepcopy(base) if base is not None else template()
    m = {kind: cfg.model for kind, cfg in cfgs.items()}
    for kind, key, path in MAPS:
        _set(out, path, _plain(_get_cfg(m[kind], key)))
    lm, tok, flow = m["lm"], m["tokenizer"], m["flow"]
    out.update(num_key_value_heads=int(lm.kv_heads), head_dim=int(lm.head_dim), rms_norm_eps=float(lm.norm_eps),
               tie_word_embeddings=bool(lm.tie_embeddings))
    out["rotary_emb_base" if "rotary_emb_base" in out else "rope_theta"] = float(lm.rope_theta)
    if list(lm.codebook_sizes) != list(tok.rvq.codebook_sizes):
        raise ReleaseConfigError(f"the LM predicts codebooks {tuple(lm.codebook_sizes)} but the tokenizer has "
                                 f"{tuple(tok.rvq.codebook_sizes)}; a release holds one audio_config.vq_config")
    _set(out, "audio_config.vq_config.codebook_sizes", list(lm.codebook_sizes))
    rate, hop = int(tok.sample_rate), int(tok.mel_hop)
    seconds = tok.decoder_positions * hop / rate
    if seconds != int(seconds) or tok.max_source_positions != tok.decoder_positions // 2:
        raise ReleaseConfigError(f"model.decoder_positions={tok.decoder_positions} and max_source_positions="
                                 f"{tok.max_source_positions}: the reference sizes both tables from "
                                 "audio_config.max_audio_seconds (seconds * rate // hop, and that // 2)")
    _set(out, "audio_config.max_audio_seconds", int(seconds))
    _set(out, "vocoder_config.channels", list(tok.refine_channels) + [int(tok.n_target_mels)])
    _set(out, "flow_matching_config.channels", [int(flow.channels)])
    _set(out, "flow_matching_config.in_channels", int(flow.n_mels))
    for name, field in special_tokens.RELEASE_FIELDS.items():
        _set(out, f"audio_config.{field}", int(special[name]))
    for section in SKIP:
        if isinstance(out.get(section), dict) and out[section].get("enable"):
            out[section]["enable"] = False        # its weights are not carried: the reference must not build it
    return out


def _get_cfg(m, key: str):
    for k in key.split("."):
        m = m[k]
    return m


def template() -> dict:
    """A complete OmniConfig for runs not imported from a release: the fixed fields at the values bajax
    implements, the sections the reference constructor reads (visual/video disabled)."""
    out = {"architectures": ["OmniForCausalLM"], "auto_map": {"AutoConfig": "configuration_omni.OmniConfig",
                                                             "AutoModelForCausalLM": "modeling_omni.OmniForCausalLM"},
           "torch_dtype": "float32", "visual_config": {"enable": False}, "video_config": {"enable": False},
           "multimodal_special_token_list": [], "max_position_embeddings": 8192, "pad_token_id": 0}
    for path, (want, _, _) in NEEDS.items():
        _set(out, path, want)
    _set(out, "audio_config.max_audio_seconds", 30)
    _set(out, "audio_config.split_overlap", 0.0)
    _set(out, "flow_matching_config.prenet_max_source_positions", 5000)
    return out
