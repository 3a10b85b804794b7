"""Special tokens of Baichuan-Audio (SPEC section 3) and their ids in either vocabulary.

With the Qwen2.5 vocabulary the reference ids are used. With the byte-level vocabulary of tiny configs
(ids 0..255 are bytes) the same names take the last ids of the vocabulary, in the order below.
"""

from __future__ import annotations

NAMES = (
    "endoftext",         # <|endoftext|>: bos = eos = pad
    "B_SYS",
    "C_Q",
    "C_A",
    "audio_start",
    "audio_end",
    "audio_pad",
    "audio_delim",
    "audiotext_start",
    "audiotext_end",
    "audiotext_pad",
    "audiogen_start",
    "audiogen_end",
)

QWEN_IDS = {
    "endoftext": 151643,
    "B_SYS": 151646,
    "C_Q": 151648,
    "C_A": 151649,
    "audio_start": 151657,
    "audio_end": 151658,
    "audio_pad": 151659,
    "audio_delim": 151674,
    "audiotext_start": 151675,
    "audiotext_end": 151676,
    "audiotext_pad": 151677,
    "audiogen_start": 151678,
    "audiogen_end": 151679,
}

# Strings of the special tokens in a Hugging Face tokenizer.json (Qwen2.5 / Baichuan spelling).
TEXT = {
    "endoftext": "<|endoftext|>",
    "B_SYS": "<B_SYS>",
    "C_Q": "<C_Q>",
    "C_A": "<C_A>",
    "audio_start": "<audio_start_baichuan>",
    "audio_end": "<audio_end_baichuan>",
    "audio_pad": "<audio_pad_baichuan>",
    "audio_delim": "<audio_delim_baichuan>",
    "audiotext_start": "<audiotext_start_baichuan>",
    "audiotext_end": "<audiotext_end_baichuan>",
    "audiotext_pad": "<audiotext_pad_baichuan>",
    "audiogen_start": "<audiogen_start_baichuan>",
    "audiogen_end": "<audiogen_end_baichuan>",
}

BYTE_VOCAB = 256


def byte_level_ids(vocab_size: int) -> dict[str, int]:
    """Ids of the special tokens at the end of a byte-level vocabulary of `vocab_size` entries."""
    if vocab_size < BYTE_VOCAB + len(NAMES):
        raise ValueError(f"a byte-level vocabulary needs at least {BYTE_VOCAB + len(NAMES)} entries "
                         f"(256 bytes + {len(NAMES)} special tokens), got vocab_size={vocab_size}")
    first = vocab_size - len(NAMES)
    return {name: first + i for i, name in enumerate(NAMES)}


def ids_for(vocab: str, vocab_size: int) -> dict[str, int]:
    """Special-token ids for config `model.vocab` ('bytes' or 'qwen')."""
    if vocab == "bytes":
        return byte_level_ids(vocab_size)
    if vocab == "qwen":
        return dict(QWEN_IDS)
    raise ValueError(f"model.vocab must be 'bytes' or 'qwen', got {vocab!r}")
