"""Audio Grain pipelines for the tokenizer, the flow decoder and the vocoder (one record = one audio segment).

ArrayRecord (`*.audio.array_record` of the tasks in data.audio.tasks) -> shuffle -> repeat -> shard by
process -> crop (seeded per element, aligned to 80 ms code frames) -> batch (+ bucket padding) -> prefetch.
Padding is exact zeros (the tokenizer decoder's GroupNorm sees it, SPEC section 2).

TokenizerView batches (the tokenizer):
    wave          float32 [B, S]   16 kHz waveform, zero-padded; S = crop (or bucket) samples
    wave_lengths  int32   [B]      valid samples
    text_tokens   int32   [B, L]   transcript ids (data.text_tokenizer), L = data.audio.text_len
    text_weights  float32 [B, L]   1 on transcript tokens; 0 when the segment has no transcript or was cropped
                                   (a crop's transcript is unknown, so the alignment loss must skip it)
FlowView batches (the flow decoder):
    mel24         float32 [B, F, 80]  24 kHz log-mel (50 Hz, SPEC section 4), zero-padded; F = 4 x code frames
    mel_lengths   int32   [B]
    wave16        float32 [B, S]      the same span at 16 kHz, S = 1280 x code frames
    wave_lengths  int32   [B]
    codes         int32   [B, F/4, 8] the same span's 12.5 Hz codes (only when the shards hold codes)
    code_lengths  int32   [B]
VocoderView batches (the HiFT vocoder; crop mode only: GAN training reads fixed-length segments):
    wave24        float32 [B, 480 F]  24 kHz waveform (the target)
    mel24         float32 [B, F, 80]  its 24 kHz log-mel (the generator's input, the flow decoder's output)
    pitch         float32 [B, F]      its F0 in Hz, 0 = unvoiced (the F0 predictor's target)
    A segment shorter than the crop is padded with silence: zero samples, the mel's log floor ln(1e-5), F0 0,
    so every row is a consistent (mel, wave) pair and the losses need no mask.
"""

from __future__ import annotations

import grain
import numpy as np

from bajax.audio.mel import LOG_MEL_FLOOR
from bajax.data import records, sources
from bajax.data import text as text_lib
from bajax.data.lm_pipeline import _prefetch, pad_rows

FRAME16, FRAME_MEL = 1280, 4  # samples at 16 kHz and 24 kHz mel frames per 12.5 Hz code frame
FRAME24 = 1920                # samples at 24 kHz per code frame (4 mel frames of hop 480)


def _frames_of(seconds: float) -> int:
    return max(1, int(seconds * 12.5))


class TokenizerView:
    """What the tokenizer reads of a segment: the 16 kHz wave and its transcript (module docstring)."""

    wave_key = "wave"

    def __init__(self, data_cfg, root):
        self.spec, self.text_len, self._tok = data_cfg.text_tokenizer, data_cfg.audio.text_len, None

    def __getstate__(self):  # Grain workers build their own text tokenizer
        return {**self.__dict__, "_tok": None}

    def frames(self, arrays) -> int:
        return -(-len(arrays["wave16"]) // FRAME16)

    def take(self, meta, arrays, wave, start: int, n: int, cropped: bool) -> dict:
        if self._tok is None:
            self._tok = _text_tokenizer(self.spec)
        ids = self._tok.encode(meta["text"])[: self.text_len] if meta["text"] and not cropped else []
        tokens = np.zeros(self.text_len, np.int32)
        tokens[: len(ids)] = ids
        weights = (np.arange(self.text_len) < len(ids)).astype(np.float32)
        return {"wave": wave, "text_tokens": tokens, "text_weights": weights}


class FlowView:
    """What the flow decoder reads of a segment: 24 kHz mel, the 16 kHz wave and, when prepared, codes."""

    wave_key = "wave16"

    def __init__(self, data_cfg, root):
        self.use_codes = bool(sources.info(root).get("codes"))
        if data_cfg.audio.require_codes and not self.use_codes:
            raise ValueError(f"{root} holds no codes; re-run `bajax prepare --tokenizer CKPT` for flow training")

    def frames(self, arrays) -> int:
        frames = min(-(-len(arrays["wave16"]) // FRAME16), len(arrays["mel24"]) // FRAME_MEL)
        return min(frames, len(arrays["codes"])) if self.use_codes else frames

    def take(self, meta, arrays, wave, start: int, n: int, cropped: bool) -> dict:
        out = {"wave16": wave,
               "mel24": np.asarray(arrays["mel24"][start * FRAME_MEL : (start + n) * FRAME_MEL], np.float32)}
        if self.use_codes:
            out["codes"] = np.asarray(arrays["codes"][start : start + n], np.int32)
        return out


class VocoderView:
    """What the vocoder reads of a segment: the 24 kHz wave, its mel and F0, padded to the crop (docstring)."""

    wave_key = "wave16"

    def __init__(self, data_cfg, root):
        if data_cfg.audio.mode != "crop":
            raise ValueError(f"data.audio.mode={data_cfg.audio.mode!r}: vocoder training reads fixed-length "
                             "segments; set --config.data.audio.mode=crop (and data.audio.crop_seconds)")
        self.root, self.crop = root, _frames_of(data_cfg.audio.crop_seconds)

    def frames(self, arrays) -> int:
        if "wave24" not in arrays:
            raise ValueError(f"{self.root}: its audio records hold no 24 kHz waveform (prepared by an older "
                             "bajax); prepare the data again with `bajax prepare` for vocoder training")
        return min(len(arrays["wave24"]) // FRAME24, len(arrays["mel24"]) // FRAME_MEL)

    def take(self, meta, arrays, wave, start: int, n: int, cropped: bool) -> dict:
        from bajax.vocoder.pitch import f0_of

        samples, mels = self.crop * FRAME24, self.crop * FRAME_MEL
        w = np.zeros(samples, np.float32)
        w[: n * FRAME24] = arrays["wave24"][start * FRAME24 : (start + n) * FRAME24].astype(np.float32) / 32767.0
        mel = np.full((mels, arrays["mel24"].shape[-1]), LOG_MEL_FLOOR, np.float32)
        mel[: n * FRAME_MEL] = arrays["mel24"][start * FRAME_MEL : (start + n) * FRAME_MEL]
        return {"wave24": w, "mel24": mel, "pitch": f0_of(w, mels)}


class _Crop(grain.transforms.RandomMap):
    """Decodes a segment and crops it to at most `max_frames` code frames at a seeded random offset."""

    def __init__(self, view, max_frames: int):
        self.view, self.max_frames = view, max_frames

    def random_map(self, record: bytes, rng: np.random.Generator):
        meta, a = records.decode(record)
        frames = self.view.frames(a)
        start = int(rng.integers(0, frames - self.max_frames + 1)) if frames > self.max_frames else 0
        n = min(frames, self.max_frames)
        wave = a["wave16"][start * FRAME16 : (start + n) * FRAME16].astype(np.float32) / 32767.0
        return self.view.take(meta, a, wave, start, n, cropped=frames > self.max_frames)


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
    view: type,
    process_index: int = 0,
    process_count: int = 1,
    split: str = "train",
) -> grain.IterDataset:
    """Host-local audio batches of what `view` (TokenizerView, FlowView, VocoderView) reads of each segment."""
    acfg = data_cfg.audio
    root = sources.resolve(data_cfg)
    paths = [p for t in acfg.tasks for p in sources.shard_paths(root, split, t, "audio")]
    if not paths:
        raise ValueError(f"no audio shards for tasks {tuple(acfg.tasks)} under {root}/{split}")
    reader = view(data_cfg, root)
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
    ds = ds.random_map(_Crop(reader, buckets[-1]), seed=data_cfg.shuffle_seed)

    def batch_fn(items):
        if acfg.mode == "crop":
            return _pad_batch(items, buckets[0])
        longest = max(-(-len(it[reader.wave_key]) // FRAME16) for it in items)
        return _pad_batch(items, next(b for b in buckets if b >= longest))

    it = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=data_cfg.num_threads, prefetch_buffer_size=data_cfg.read_buffer)
    )
    it = it.batch(batch_size, drop_remainder=train, batch_fn=batch_fn)
    if not train:
        it = it.map(lambda b: pad_rows(b, batch_size))
    return _prefetch(it, data_cfg)
