"""The `data` section of every training config: `default_data_config()` lists each field with its default."""

from __future__ import annotations

import ml_collections

from bajax.data.manifest import TASKS

# Paper Table 4 (section 3.3.1): LLM pre-training hours per task; the default mixture weights.
TABLE4_HOURS = {
    "asr": 185.0,
    "aqa": 21.0,
    "s2tt": 15.0,
    "intlv": 393.0,
    "tts": 51.0,
    "itts": 142.0,
    "audio": 80.0,
}


def default_data_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # 'embedded' = the corpus shipped in bajax/data/corpus (prepared on first use into cache_dir), or the
    # directory written by `bajax prepare` (local path or gs://).
    c.source = "embedded"
    c.cache_dir = ""  # where the embedded corpus is prepared; '' = $XDG_CACHE_HOME/bajax
    c.text_tokenizer = "bytes"  # 'bytes' or the path of a Hugging Face tokenizer.json
    # Relative weights; 0 drops a task. `text` (text-only LM data from the ASR transcripts) is off by default:
    # text pre-training and the text-only evaluation of the two-stage ablation switch it on. `chat` (dialogues,
    # not pre-training data) is off too: the `:sft` presets of configs/lm/ train on it alone.
    c.mixture = ml_collections.ConfigDict({task: TABLE4_HOURS.get(task, 0.0) for task in TASKS} | {"text": 0.0})
    # Chat rows (supervised fine-tuning): which assistant speech carries audio loss: 'itts' (all of it),
    # 'intlv' (none: text loss only) or 'last' (the last reply's); bajax/data/chat.py AUDIO_LOSS.
    c.chat_audio_loss = "itts"
    c.seq_len = 1024  # packed row length (lm_dataset's seq_len argument wins when given)
    c.pack_bins = 0  # first-fit packing bins; 0 = batch_size (more bins pack tighter)
    c.shuffle_seed = 0
    c.num_threads = 2  # Grain read threads for the per-record map stage
    c.prefetch = 4  # batches prefetched by a background thread (0 = none)
    c.read_buffer = 64  # records read ahead by the read threads
    c.worker_count = 0  # Grain worker processes (0 = in-process; >0 needs absl flags parsed)
    c.worker_buffer_size = 2
    c.train_split = "train"
    c.eval_split = "valid"
    c.audio = ml_collections.ConfigDict()
    c.audio.tasks = TASKS  # segments used for audio models
    c.audio.mode = "crop"  # 'crop': every item cropped/padded to crop_seconds;
    #                                  'bucket': a batch is padded to the smallest bucket fitting its longest
    c.audio.crop_seconds = 4.0  # crop length (rounded down to whole 80 ms code frames)
    c.audio.bucket_seconds = (2.0, 4.0, 8.0)  # 'bucket' mode lengths; longer items are cropped to the last
    c.audio.text_len = 256  # transcript tokens per item for the tokenizer's alignment loss
    c.audio.require_codes = False  # flow: fail when the shards hold no codes (else the key is absent)
    return c
