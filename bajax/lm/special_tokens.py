"""Special tokens of Baichuan-Audio (SPEC section 3) and their ids in either vocabulary.

With the Qwen2.5 vocabulary the reference ids are used. With the byte-level vocabulary of tiny configs
(ids 0..255 are bytes) the same names take the last ids of the vocabulary, in the order below.

A model imported from a release directory carries its own ids (Baichuan-Omni-1.5 puts audio_start at 151676,
not 151657) in `model.special_ids` (name -> id, -1 = the default of `model.vocab`); `ids_of(model_cfg)` is
THE place the rest of bajax reads a model's ids from, and a text tokenizer built for that model
(`bajax.data.text.for_model`) must agree with them. `RELEASE_FIELDS` names the `audio_config` fields of a
release's config.json that hold the audio ids; the others (endoftext, B_SYS, C_Q, C_A) come from the
release's tokenizer files, looked up by their `TEXT` strings.
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


# The release config.json (`audio_config.<field>`) fields that hold a special-token id.
RELEASE_FIELDS = {name: f"{name}_token_id" for name in NAMES if name.startswith("audio")}


def ids_of(model_cfg) -> dict[str, int]:
    """The special-token ids of an LM `model` config: `model.special_ids` where set (>= 0), else the ids of
    `model.vocab`. Configs written before `special_ids` existed read as all unset."""
    given = {n: int(v) for n, v in dict(model_cfg.get("special_ids", None) or {}).items() if int(v) >= 0}
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise ValueError(f"model.special_ids has unknown names {unknown}; valid names: {list(NAMES)}")
    ids = given if len(given) == len(NAMES) else {**ids_for(model_cfg.vocab, model_cfg.vocab_size), **given}
    too_big = {n: i for n, i in ids.items() if i >= model_cfg.vocab_size}
    if too_big:
        raise ValueError(f"special-token ids {too_big} do not fit model.vocab_size={model_cfg.vocab_size}; set "
                         "model.special_ids.NAME or a larger vocab_size")
    return ids
