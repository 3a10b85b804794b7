"""Audio Grain pipelines for the tokenizer and the flow decoder (one record = one audio segment).

ArrayRecord (`*.audio.array_record` of the tasks in data.audio.tasks) -> shuffle -> repeat -> shard by
process -> crop (seeded per element, aligned to 80 ms code frames) -> batch (+ bucket padding) -> prefetch.
Padding is exact zeros (the tokenizer decoder's GroupNorm sees it, SPEC section 2).

kind='tokenizer' batches:
    wave          float32 [B, S]   16 kHz waveform, zero-padded; S = crop (or bucket) samples
    wave_lengths  int32   [B]      valid samples
    text_tokens   int32   [B, L]   transcript ids (data.text_tokenizer), L = data.audio.text_len
    text_weights  float32 [B, L]   1 on transcript tokens; 0 when the segment has no transcript or was cropped
                                   (a crop's transcript is unknown, so the alignment loss must skip it)
kind='flow' batches:
    mel24         float32 [B, F, 80]  24 kHz log-mel (50 Hz, SPEC section 4), zero-padded; F = 4 x code frames
    mel_lengths   int32   [B]
    wave16        float32 [B, S]      the same span at 16 kHz, S = 1280 x code frames
    wave_lengths  int32   [B]
    codes         int32   [B, F/4, 8] the same span's 12.5 Hz codes (only when the shards hold codes)
    code_lengths  int32   [B]
"""

from __future__ import annotations

import grain
import numpy as np

from bajax.data import records, sources
from bajax.data import text as text_lib
from bajax.data.lm_pipeline import _prefetch, pad_rows

FRAME16, FRAME_MEL = 1280, 4  # samples at 16 kHz and 24 kHz mel frames per 12.5 Hz code frame


def _frames_of(seconds: float) -> int:
    return max(1, int(seconds * 12.5))


class _Crop(grain.transforms.RandomMap):
    """Decodes a segment and crops it to at most `max_frames` code frames at a seeded random offset."""

    def __init__(self, kind: str, max_frames: int, tokenizer_spec: str, text_len: int, use_codes: bool):
        self.kind, self.max_frames, self.text_len, self.use_codes = kind, max_frames, text_len, use_codes
        self._spec, self._tok = tokenizer_spec, None

    def __getstate__(self):
        return {**self.__dict__, "_tok": None}

    def random_map(self, record: bytes, rng: np.random.Generator):
        meta, a = records.decode(record)
        wave = a["wave16"]
        frames = -(-len(wave) // FRAME16)
        if self.kind == "flow":
            frames = min(frames, len(a["mel24"]) // FRAME_MEL)
            if self.use_codes:
                frames = min(frames, len(a["codes"]))
        start = int(rng.integers(0, frames - self.max_frames + 1)) if frames > self.max_frames else 0
        n = min(frames, self.max_frames)
        cropped = frames > self.max_frames
        w = wave[start * FRAME16 : (start + n) * FRAME16].astype(np.float32) / 32767.0
        if self.kind == "tokenizer":
            if self._tok is None:
                self._tok = _text_tokenizer(self._spec)
            ids = self._tok.encode(meta["text"])[: self.text_len] if meta["text"] and not cropped else []
            tokens = np.zeros(self.text_len, np.int32)
            tokens[: len(ids)] = ids
            weights = (np.arange(self.text_len) < len(ids)).astype(np.float32)
            return {"wave": w, "text_tokens": tokens, "text_weights": weights}
        out = {
            "wave16": w,
            "mel24": np.asarray(a["mel24"][start * FRAME_MEL : (start + n) * FRAME_MEL], np.float32),
        }
        if self.use_codes:
            out["codes"] = np.asarray(a["codes"][start : start + n], np.int32)
        return out


def _text_tokenizer(spec: str):
    if spec == "bytes":
        return text_lib.ByteTokenizer(text_lib.special_tokens.BYTE_VOCAB + len(text_lib.special_tokens.NAMES))
    return text_lib.HFTokenizer(spec)


def _pad_batch(items: list[dict], frames: int) -> dict:
    """Stacks items, zero-padding the time axes to `frames` code frames; adds *_lengths."""
    per_frame = {"wave": FRAME16, "wave16": FRAME16, "mel24": FRAME_MEL, "codes": 1}
    lengths_key = {
        "wave": "wave_lengths",
        "wave16": "wave_lengths",
        "mel24": "mel_lengths",
        "codes": "code_lengths",
    }
    out = {}
    for key in items[0]:
        if key not in per_frame:
            out[key] = np.stack([it[key] for it in items])
            continue
        size = frames * per_frame[key]
        arr = np.zeros((len(items), size, *items[0][key].shape[1:]), items[0][key].dtype)
        for i, it in enumerate(items):
            arr[i, : len(it[key])] = it[key]
        out[key] = arr
        out[lengths_key[key]] = np.array([len(it[key]) for it in items], np.int32)
    return out


def audio_dataset(
    data_cfg,
    *,
    batch_size: int,
    kind: str = "tokenizer",
    process_index: int = 0,
    process_count: int = 1,
    split: str = "train",
) -> grain.IterDataset:
    """Host-local audio batches for kind 'tokenizer' or 'flow' (dicts in the module docstring)."""
    if kind not in ("tokenizer", "flow"):
        raise ValueError(f"audio_dataset kind must be 'tokenizer' or 'flow', got {kind!r}")
    acfg = data_cfg.audio
    root = sources.resolve(data_cfg)
    paths = [p for t in acfg.tasks for p in sources.shard_paths(root, split, t, "audio")]
    if not paths:
        raise ValueError(f"no audio shards for tasks {tuple(acfg.tasks)} under {root}/{split}")
    use_codes = kind == "flow" and bool(sources.info(root).get("codes"))
    if kind == "flow" and acfg.require_codes and not use_codes:
        raise ValueError(f"{root} holds no codes; re-run `bajax prepare --tokenizer CKPT` for flow training")
    if acfg.mode == "crop":
        buckets = (_frames_of(acfg.crop_seconds),)
    elif acfg.mode == "bucket":
        buckets = tuple(sorted(_frames_of(s) for s in acfg.bucket_seconds))
    else:
        raise ValueError(f"data.audio.mode must be 'crop' or 'bucket', got {acfg.mode!r}")
    ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths))
    train = split == data_cfg.train_split
    if train:
        ds = ds.shuffle(seed=data_cfg.shuffle_seed).repeat()
    ds = ds[process_index::process_count]
    ds = ds.random_map(
        _Crop(kind, buckets[-1], data_cfg.text_tokenizer, acfg.text_len, use_codes),
        seed=data_cfg.shuffle_seed,
    )

    def batch_fn(items):
        if acfg.mode == "crop":
            return _pad_batch(items, buckets[0])
        longest = max(-(-len(it.get("wave", it.get("wave16"))) // FRAME16) for it in items)
        return _pad_batch(items, next(b for b in buckets if b >= longest))

    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=data_cfg.num_threads, prefetch_buffer_size=data_cfg.read_buffer)
    )
    it = it.batch(batch_size, drop_remainder=train, batch_fn=batch_fn)
    if not train:
        it = it.map(lambda b: pad_rows(b, batch_size))
    return _prefetch(it, data_cfg)
