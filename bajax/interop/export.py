"""`bajax export`: a run directory -> safetensors in the reference (Baichuan-Audio) parameter layout + config.json.

The run's kind decides the component: lm -> model.* / lm_head / audio_head.*; tokenizer -> audio_tokenizer.*
(encoder, bridge with the codebook EMA buffers, decoder, refine net); flow -> the flow decoder keys
(audio_tokenizer.audio_flow_matching_decoder.*). Streaming: the output plan comes from checkpoint metadata,
then one tensor at a time is read (its sources as per-layer TensorStore slices), converted and appended, so
peak host memory is ~ the largest exported tensor with its sources.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bajax.interop import entries as ent
from bajax.interop import rundir
from bajax.interop.safetensors_io import ShardedWriter

DEFAULT_SHARD_BYTES = 5 * 1024**3        # Hugging Face's default max_shard_size


def layout(kind: str, shapes: dict) -> list[ent.Entry]:
    """Reference-layout entries of a run of this kind, from its leaf shapes."""
    if kind == "lm":
        from bajax.interop.layout_lm import baichuan_lm as build
    elif kind == "tokenizer":
        from bajax.interop.layout_tokenizer import baichuan_tokenizer as build
    elif kind == "flow":
        from bajax.interop.layout_flow import baichuan_flow as build
    else:
        raise ValueError(f"run kind {kind!r}: nothing to export (valid: lm, tokenizer, flow)")
    return build(shapes)


def not_exported(kind: str, path: ent.Path) -> bool:
    """bajax-only leaves with no reference tensor (see layout_tokenizer.py); anything else unmapped is a bug."""
    return kind == "tokenizer" and (path[0] == "align" or path[-1] == "unused_steps")


def reference_config(cfg) -> dict:
    """Reference-style names for the exported component (what a PyTorch model needs to be built)."""
    m = cfg.model
    if cfg.kind == "lm":
        return {"hidden_size": m.hidden, "num_hidden_layers": m.layers, "num_attention_heads": m.heads,
                "num_key_value_heads": m.kv_heads, "head_dim": m.head_dim, "intermediate_size": m.mlp,
                "rope_theta": m.rope_theta, "rms_norm_eps": m.norm_eps, "vocab_size": m.vocab_size,
                "tie_word_embeddings": False, "attention_qkv_pack": True, "attention_qkv_bias": True,
                "use_norm_head": False,
                "audio_config": {"audio_head_transformer_layers": m.audio_head_layers,
                                 "audio_head_attention_heads": m.audio_head_heads,
                                 "vq_config": {"codebook_sizes": list(m.codebook_sizes)}}}
    if cfg.kind == "tokenizer":
        return {"audio_config": {
            "d_model": m.d_model, "num_mel_bins": m.n_mels, "encoder_layers": m.encoder_layers,
            "encoder_attention_heads": m.encoder_heads, "encoder_ffn_dim": m.encoder_ffn, "avg_pooler": m.pool,
            "max_source_positions": m.max_source_positions, "decoder_layers": m.decoder_layers,
            "decoder_attention_heads": m.decoder_heads, "decoder_ffn_dim": m.decoder_ffn,
            "decoder_kernel_size": m.decoder_kernel, "decoder_stride_size": m.decoder_stride,
            "decoder_max_positions": m.decoder_positions,
            "vq_config": {"codebook_sizes": list(m.rvq.codebook_sizes)}},
            "vocoder_config": {"num_mel_bins": m.n_target_mels, "channels": list(m.refine_channels) + [m.n_target_mels],
                               "sampling_rate": m.target_sample_rate, "hop_length": m.target_hop}}
    return {"flow_matching_config": {
        "prenet_in_dim": m.cond_dim, "prenet_out_dim": m.n_mels, "prenet_d_model": m.prenet_hidden,
        "prenet_attention_heads": m.prenet_heads, "prenet_ffn_dim": m.prenet_ffn, "prenet_nlayers": m.prenet_layers,
        "prenet_in_hidden": m.prenet_in_hidden, "prenet_norm_eps": m.prenet_norm_eps, "norm_eps": m.norm_eps,
        "time_embed_dim": m.time_hidden, "ffn_dim": m.ffn,
        "in_channels": m.n_mels, "channels": [m.channels], "attention_head_dim": m.head_dim,
        "n_blocks": m.transformer_blocks, "num_mid_blocks": m.mid_blocks, "num_heads": m.heads,
        "diffusion_steps": m.sample_steps, "static_chunk_size": m.chunk,
        "cfm_params": {"sigma_min": m.sigma_min, "inference_cfg_rate": m.guidance}}}


def export(run_dir: str, out_dir: str, *, step: int | None = None,
           max_shard_bytes: int = DEFAULT_SHARD_BYTES, log=print) -> dict:
    """Writes OUT/model.safetensors (or shards + index) and OUT/config.json; returns a summary dict."""
    t0 = time.time()
    cfg = rundir.load_config(run_dir)
    step, sdir = rundir.state_dir(run_dir, step)
    meta = rundir.leaf_shapes(sdir)
    shapes = {k: v[0] for k, v in meta.items()}
    entries = layout(cfg.kind, shapes)
    used = {s.path for e in entries for s in e.srcs}
    unmapped = sorted("/".join(p) for p in shapes if p not in used and not not_exported(cfg.kind, p))
    if unmapped:
        raise ValueError(f"{run_dir}: checkpoint leaves with no reference name: {unmapped[:5]} "
                         f"({len(unmapped)} in all); the layout in bajax/interop does not know them")
    plan = [(e.name, e.torch_shape(shapes), meta[e.srcs[0].path][1] if e.srcs else e.rule.to_torch([]).dtype)
            for e in entries]
    meta_header = {"bajax_kind": cfg.kind, "bajax_step": str(step)}
    writer = ShardedWriter(out_dir, plan, max_shard_bytes=max_shard_bytes, metadata=meta_header)
    reader = rundir.LeafReader(sdir)
    largest = 0
    for e in entries:
        # One exported tensor at a time: its sources are per-layer slices read straight from TensorStore.
        arrays = [reader.read(s.path, s.index) for s in e.srcs]
        t = e.rule.to_torch(arrays)
        largest = max(largest, t.nbytes)
        writer.write(e.name, t)
        del arrays, t
    files = writer.close()
    config = {"format": "baichuan-audio", "component": cfg.kind, "step": step, **reference_config(cfg),
              "bajax": json.loads(cfg.to_json_best_effort())}
    (Path(out_dir) / "config.json").write_text(json.dumps(config, indent=2))
    summary = {"component": cfg.kind, "step": step, "tensors": len(plan), "files": files,
               "bytes": writer.total_bytes, "largest_tensor_bytes": largest, "seconds": round(time.time() - t0, 2)}
    if log:
        log(f"exported {cfg.kind} step {step}: {len(plan)} tensors, {writer.total_bytes / 1e6:.1f} MB in "
            f"{len(files)} file(s) -> {out_dir}")
    return summary


def expected_names(out_dir: str) -> list[str]:
    """Names in an export directory (for tests and tools)."""
    from bajax.interop.safetensors_io import Reader

    return sorted(Reader(out_dir).keys())

