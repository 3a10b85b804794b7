"""The LM Grain pipeline: ArrayRecord -> shuffle -> repeat -> shard by process -> mix tasks -> format ->
first-fit pack -> batch -> prefetch. Yields host-local numpy batches in the bajax/lm/batch.py contract.

Every stage before packing is a Grain MapDataset (random access by index), packing and batching are
Grain IterDatasets with checkpointable state, so `iterator.get_state()` (or
`grain.checkpoint.CheckpointSave(iterator)` inside an Orbax checkpoint) resumes at exactly the next batch.
Sharding: every process builds the same seeded global shuffle and keeps elements i = process_index
(mod process_count), so the processes' shards are disjoint and cover each epoch.
"""

from __future__ import annotations

import grain
import numpy as np

from bajax.data import chat, formats, records, sources
from bajax.data import text as text_lib

PACKED_KEYS = ("tokens", "audio_codes", "text_targets", "text_weights", "audio_targets", "audio_weights")

# The text-only task reads the transcripts of the ASR shards (every document has one) and drops their audio:
# the language-modelling data of text pre-training and of the "text-only loss" of paper Table 5.
TEXT_ONLY, TEXT_SOURCE = "text", "asr"


def _source_task(task: str) -> str:
    return TEXT_SOURCE if task == TEXT_ONLY else task


def task_weights(data_cfg, root, split: str) -> dict[str, float]:
    """Mixture weights of the tasks that have LM shards (tasks without data are dropped)."""
    weights = {}
    for task, w in data_cfg.mixture.items():
        if task not in (*sources.TASKS, TEXT_ONLY):
            raise ValueError(f"data.mixture has unknown task {task!r}; valid tasks: {(*sources.TASKS, TEXT_ONLY)}")
        if w > 0 and sources.shard_paths(root, split, _source_task(task), "lm"):
            weights[task] = float(w)
    if not weights:
        raise ValueError(
            f"no LM shards for the tasks with positive data.mixture weight under {root}/{split}; "
            "check data.source and data.mixture"
        )
    return weights


def _decode(record: bytes):
    meta, arrays = records.decode(record)
    return meta, [arrays[f"codes_{i}"] for i in range(len(meta["texts"]))]


def _as_text_only(element):
    meta, _ = element
    return {**meta, "task": TEXT_ONLY}, []


def lm_records(
    data_cfg, *, process_index: int, process_count: int, split: str = "train", root=None
) -> grain.MapDataset:
    """Decoded (meta, codes) samples of this process, before formatting. Train: shuffled, repeated, mixed;
    other splits: one ordered pass over all tasks."""
    root = root if root is not None else sources.resolve(data_cfg)
    weights = task_weights(data_cfg, root, split)
    def task_source(task):
        ds = grain.MapDataset.source(
            grain.sources.ArrayRecordDataSource(sources.shard_paths(root, split, _source_task(task), "lm")))
        return ds.map(_decode).map(_as_text_only) if task == TEXT_ONLY else ds.map(_decode)

    if split != data_cfg.train_split:
        parts = [task_source(t) for t in weights]
        ds = parts[0] if len(parts) == 1 else grain.MapDataset.concatenate(parts)
        return ds[process_index::process_count]
    parts = []
    for i, task in enumerate(weights):
        ds = task_source(task).shuffle(seed=data_cfg.shuffle_seed * 1009 + i).repeat()
        parts.append(ds[process_index::process_count])
    return parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, list(weights.values()))


class _Format(grain.transforms.Map):
    """Record -> unpacked LM arrays; the tokenizer is built lazily so the transform pickles to workers."""

    def __init__(self, tokenizer_spec: str, vocab: str, vocab_size: int, codebook_sizes, seq_len: int,
                 special: dict | None = None, chat_audio_loss: str = "itts"):
        self._args = (tokenizer_spec, vocab, vocab_size, special)
        self._codebook_sizes, self._seq_len = tuple(codebook_sizes), seq_len
        self._chat_audio_loss = chat_audio_loss
        self._tok = None

    def __getstate__(self):
        return {**self.__dict__, "_tok": None}

    def map(self, element):
        if self._tok is None:
            spec, vocab, vocab_size, special = self._args
            self._tok = text_lib.make(spec, vocab=vocab, vocab_size=vocab_size, special=special)
        meta, codes = element
        return formats.format_sample(
            meta, codes, self._tok, codebook_sizes=self._codebook_sizes, seq_len=self._seq_len,
            chat_audio_loss=self._chat_audio_loss,
        )


def _rename(packed: dict) -> dict:
    out = {k: packed[k] for k in PACKED_KEYS}
    out["segment_ids"] = packed["tokens_segment_ids"].astype(np.int32)
    out["positions"] = packed["tokens_positions"].astype(np.int32)
    return out


def lm_dataset(
    data_cfg,
    *,
    batch_size: int,
    seq_len: int | None = None,
    vocab: str,
    vocab_size: int,
    codebook_sizes,
    special: dict | None = None,
    process_index: int = 0,
    process_count: int = 1,
    split: str = "train",
) -> grain.IterDataset:
    """Host-local LM batches `[batch_size, seq_len]` (bajax/lm/batch.py). See the module docstring.
    `special`: the model's special-token ids (`special_tokens.ids_of`), which the tokenizer must use."""
    seq_len = int(seq_len or data_cfg.seq_len)
    root = sources.resolve(data_cfg)
    if any(w > 0 and t != TEXT_ONLY for t, w in data_cfg.mixture.items()):  # text-only data has no codes
        sources.check_codebooks(root, codebook_sizes)
    text_lib.make(data_cfg.text_tokenizer, vocab=vocab, vocab_size=vocab_size, special=special)  # fail early
    ds = lm_records(
        data_cfg, process_index=process_index, process_count=process_count, split=split, root=root
    )
    chat_audio_loss = data_cfg.get("chat_audio_loss", "itts")
    if chat_audio_loss not in chat.AUDIO_LOSS:
        raise ValueError(f"data.chat_audio_loss={chat_audio_loss!r}; use one of {chat.AUDIO_LOSS} "
                         "(bajax/data/chat.py says what each trains)")
    ds = ds.map(_Format(data_cfg.text_tokenizer, vocab, vocab_size, codebook_sizes, seq_len, special,
                        chat_audio_loss))
    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=data_cfg.num_threads, prefetch_buffer_size=data_cfg.read_buffer)
    )
    it = grain.experimental.FirstFitPackIterDataset(
        it,
        length_struct={k: seq_len for k in PACKED_KEYS},
        num_packing_bins=data_cfg.pack_bins or batch_size,
        shuffle_bins=False,
    )
    it = it.map(_rename).batch(batch_size, drop_remainder=split == data_cfg.train_split)
    if split != data_cfg.train_split:  # the last evaluation batch is padded with empty rows (segment 0)
        it = it.map(lambda b: pad_rows(b, batch_size))
    return _prefetch(it, data_cfg)


def pad_rows(batch: dict, batch_size: int) -> dict:
    """Pads every array of a short final batch with zero rows up to batch_size."""

    def pad(x):
        x = np.asarray(x)
        return np.pad(x, [(0, batch_size - len(x))] + [(0, 0)] * (x.ndim - 1)) if len(x) < batch_size else x

    return {k: pad(v) for k, v in batch.items()}


def _prefetch(it: grain.IterDataset, data_cfg) -> grain.IterDataset:
    if data_cfg.worker_count > 0:
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=data_cfg.worker_count, per_worker_buffer_size=data_cfg.worker_buffer_size
            )
        )
    if data_cfg.prefetch > 0:
        it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=data_cfg.prefetch)
    return it
