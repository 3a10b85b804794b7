"""`bajax import-hf --kind qwen2|whisper|baichuan --src HF_DIR --out CKPT`: Hugging Face safetensors -> a run dir.

qwen2    Qwen2ForCausalLM -> an `lm` run: the config's model section is set from the HF config.json (hidden,
         layers, heads, GQA kv heads, head_dim, intermediate size, rope theta, RMSNorm eps, tied or untied
         embeddings, q/k/v bias: a config with `attention_bias: false` imports zero biases). The vocabulary
         is padded to a multiple of `pad_vocab` (zero rows: logit 0 and never a target). The audio
         embeddings and the audio head have no Qwen2 counterpart: they KEEP THEIR FRESH INITIALISATION.
         Tensor mapping: layout_lm.qwen2 (the same transforms as the tests' reference mapping tests/hf_qwen2_ref.py,
         per tensor so that it streams; the tests check that both agree).
whisper  WhisperModel / WhisperForConditionalGeneration -> a `tokenizer` run whose ENCODER is initialised
         from Whisper (d_model, layers, heads, FFN, mel bins, positions from its config); the bridge, RVQ and
         decoder keep their fresh initialisation. Whisper's decoder tensors are skipped.
baichuan reference-layout safetensors (e.g. a `bajax export`): see import_torch.py.

`--config` (optional) is the base bajax config whose other settings (codebook sizes, training, mesh) the
run keeps, e.g. configs/lm/7b.py; without it the defaults of the kind are used.
"""

from __future__ import annotations

import json
from pathlib import Path

from bajax import models
from bajax.interop import layout_lm, layout_tokenizer, rundir
from bajax.interop.entries import Entry, Padded
from bajax.interop.import_torch import check_unknown, import_entries
from bajax.interop.safetensors_io import Reader
from bajax.lm.special_tokens import QWEN_IDS
from bajax.tokenizer.hf_whisper import PREFIXES as WHISPER_PREFIXES


def _hf_config(src: str) -> dict:
    path = Path(src) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{src}: no config.json (pass a directory written by save_pretrained)")
    return json.loads(path.read_text())


def _base(kind: str, config: str | None, overrides=()):
    from bajax.config import defaults, load

    cfg = load(config, overrides) if config else defaults(kind)
    models.require(cfg.kind, kind, f"--config {config}", "config")
    return cfg


def qwen2_config(hf: dict, cfg, pad_vocab: int = 128):
    """The `lm` config of a Qwen2 HF config (mutates and returns cfg); returns (cfg, padding rows)."""
    scaling = hf.get("rope_scaling") or {}
    if scaling.get("rope_type", scaling.get("type", "default")) != "default":
        raise ValueError(f"rope_scaling={hf['rope_scaling']} is not supported by bajax's RoPE")
    m, h, heads = cfg.model, int(hf["hidden_size"]), int(hf["num_attention_heads"])
    vocab = int(hf["vocab_size"])
    padded = -(-vocab // pad_vocab) * pad_vocab
    rope = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    m.hidden, m.layers, m.heads = h, int(hf["num_hidden_layers"]), heads
    m.kv_heads = int(hf.get("num_key_value_heads") or heads)
    m.head_dim = int(hf.get("head_dim") or h // heads)
    m.mlp, m.rope_theta, m.norm_eps = int(hf["intermediate_size"]), float(rope), float(hf["rms_norm_eps"])
    m.tie_embeddings = bool(hf.get("tie_word_embeddings", False))
    m.vocab = "qwen" if padded > max(QWEN_IDS.values()) else "bytes"
    m.vocab_size = padded
    # 0 = hidden / 128 heads, as the reference; a width it cannot build falls back to the backbone's heads
    # (`bajax export` then refuses the run by name)
    m.audio_head_heads = 0 if h % 128 == 0 else heads
    return cfg, padded - vocab


def import_qwen2(src: str, out_dir: str, *, config=None, overrides=(), pad_vocab: int = 128, log=print) -> str:
    hf = _hf_config(src)
    cfg, pad = qwen2_config(hf, _base("lm", config, overrides), pad_vocab)
    reader = Reader(src)
    if hf.get("attention_bias", True) is False:
        raise ValueError("attention_bias=false: bajax's Qwen2 layers have q/k/v biases; not supported yet")
    from bajax.interop.import_torch import _abstract_shapes

    entries = layout_lm.qwen2(_abstract_shapes(cfg), tied=cfg.model.tie_embeddings)
    if pad:
        entries = [Entry(e.name, Padded(e.rule, pad), e.srcs, e.load)
                   if e.name in ("model.embed_tokens.weight", "lm_head.weight") else e for e in entries]
    check_unknown(reader, entries, lambda n: True, None)
    state = import_entries(reader, entries, cfg, log=log)
    out = rundir.write_run(out_dir, cfg, state)
    if log:
        log(f"imported Qwen2 ({cfg.model.layers} layers, hidden {cfg.model.hidden}, vocab {cfg.model.vocab_size - pad}"
            f"{f' padded by {pad}' if pad else ''}) -> {out}; the audio embeddings and audio head are freshly "
            "initialised")
    return out


def whisper_config(hf: dict, cfg):
    m = cfg.model
    m.d_model, m.encoder_layers = int(hf["d_model"]), int(hf["encoder_layers"])
    m.encoder_heads, m.encoder_ffn = int(hf["encoder_attention_heads"]), int(hf["encoder_ffn_dim"])
    m.n_mels, m.max_source_positions = int(hf["num_mel_bins"]), int(hf["max_source_positions"])
    if m.d_model % m.decoder_heads:
        m.decoder_heads = m.encoder_heads
    return cfg


def import_whisper(src: str, out_dir: str, *, config=None, overrides=(), log=print) -> str:
    cfg = whisper_config(_hf_config(src), _base("tokenizer", config, overrides))
    reader = Reader(src)
    prefix = next((p for p in WHISPER_PREFIXES if f"{p}conv1.weight" in reader), None)
    if prefix is None:
        raise KeyError(f"{src}: no Whisper encoder (expected e.g. 'encoder.conv1.weight')")
    positions = "embed_positions.weight" if f"{prefix}embed_positions.weight" in reader else "positional_embedding"
    from bajax.interop.import_torch import _abstract_shapes

    entries = layout_tokenizer.encoder(_abstract_shapes(cfg), prefix=prefix, positions=positions)
    skipped = check_unknown(reader, entries, lambda n: n.startswith(prefix), None)
    state = import_entries(reader, entries, cfg, log=log)
    out = rundir.write_run(out_dir, cfg, state)
    if log:
        log(f"imported the Whisper encoder ({cfg.model.encoder_layers} layers, d {cfg.model.d_model}; "
            f"{skipped} other tensors skipped) -> {out}")
    return out
