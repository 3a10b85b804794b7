"""Text tokenizers: byte-level (tiny configs) or a Hugging Face tokenizer (real runs and imported releases).

Both expose `encode(text) -> int32 [n]`, `decode(ids) -> str`, `vocab_size`, `special` (name -> id for
every name in `bajax.lm.special_tokens.NAMES`) and `chat_template` (the Jinja template of the tokenizer's
tokenizer_config.json, or None). Byte-level text is UTF-8 bytes 0..255 with the special tokens at the END
of the model vocabulary (so the same names work at any vocab size).

A Hugging Face tokenizer is given as (config `data.text_tokenizer`) a tokenizer.json file, or a DIRECTORY
holding tokenizer.json, or vocab.json + merges.txt (a Qwen2Tokenizer: byte-level BPE with Qwen's
pre-tokenizer regex, its added tokens from tokenizer_config.json's `added_tokens_decoder` or
added_tokens.json). `bajax import-release` points the LM run's `data.text_tokenizer` at the release's
tokenizer files it carries, so generation and data preparation use the release's vocabulary, special
tokens and chat template. Every special-token string of `special_tokens.TEXT` must be an added token.

`make(spec, vocab=, vocab_size=, special=)` builds one and checks it against the model; `for_model(spec,
model_cfg)` passes the model's own ids (`special_tokens.ids_of`), so a model whose `model.special_ids` came
from a release accepts exactly the tokenizer that agrees with them.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bajax.lm import special_tokens

# Qwen2Tokenizer's pre-tokenizer pattern (transformers models/qwen2/tokenization_qwen2.py PRETOKENIZE_REGEX).
QWEN_PRETOKENIZE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                    r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; special tokens at the last ids of a `vocab_size` vocabulary."""

    chat_template = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.special = special_tokens.byte_level_ids(vocab_size)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        names = {v: k for k, v in self.special.items()}
        out, buf = [], bytearray()
        for i in np.asarray(ids).tolist():
            if i < special_tokens.BYTE_VOCAB:
                buf.append(i)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            out.append(f"<{names.get(i, i)}>")
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)


def _read_text(path: str) -> str:
    from bajax.audio.io import read_bytes

    return read_bytes(path).decode("utf-8")


def _exists(path: str) -> bool:
    if "://" in path:
        from etils import epath

        return epath.Path(path).exists()
    return os.path.exists(path)


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if "://" in base else os.path.join(base, name)


def _added_tokens(folder: str) -> dict[int, str]:
    """{id: string} of the added tokens of a slow-tokenizer directory (tokenizer_config.json's
    added_tokens_decoder, else added_tokens.json)."""
    cfg_path = _join(folder, "tokenizer_config.json")
    if _exists(cfg_path):
        decoder = json.loads(_read_text(cfg_path)).get("added_tokens_decoder") or {}
        if decoder:
            return {int(i): t["content"] for i, t in decoder.items()}
    added_path = _join(folder, "added_tokens.json")
    if _exists(added_path):
        return {int(i): s for s, i in json.loads(_read_text(added_path)).items()}
    return {}


def _from_vocab_merges(folder: str):
    """A Qwen2Tokenizer directory (vocab.json + merges.txt) as a `tokenizers.Tokenizer`."""
    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers

    vocab = json.loads(_read_text(_join(folder, "vocab.json")))
    merges = [tuple(line.split(" ")) for line in _read_text(_join(folder, "merges.txt")).splitlines()
              if line and not line.startswith("#version")]
    tok = tokenizers.Tokenizer(models.BPE(vocab, merges, unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(QWEN_PRETOKENIZE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    added = _added_tokens(folder)
    for i in sorted(added):
        tok.add_special_tokens([tokenizers.AddedToken(added[i], special=True, normalized=False)])
        if tok.token_to_id(added[i]) != i:
            raise ValueError(f"{folder}: added token {added[i]!r} has id {i} in tokenizer_config.json / "
                             f"added_tokens.json but lands at {tok.token_to_id(added[i])} after vocab.json's "
                             f"{len(vocab)} entries; the files do not belong together")
    return tok


class HFTokenizer:
    """A Hugging Face tokenizer (file or directory, see the module docstring); special tokens looked up by
    their Baichuan/Qwen strings."""

    def __init__(self, path: str):
        import tokenizers

        folder = path
        try:
            if _exists(_join(path, "tokenizer.json")):
                self._tok = tokenizers.Tokenizer.from_str(_read_text(_join(path, "tokenizer.json")))
            elif _exists(_join(path, "vocab.json")) and _exists(_join(path, "merges.txt")):
                self._tok = _from_vocab_merges(path)
            else:
                self._tok = tokenizers.Tokenizer.from_str(_read_text(path))
                folder = os.path.dirname(path) if "://" not in path else path.rsplit("/", 1)[0]
        except (FileNotFoundError, IsADirectoryError) as e:
            raise FileNotFoundError(
                f"data.text_tokenizer: no tokenizer at {path}; give a Hugging Face tokenizer.json, a directory "
                "with tokenizer.json or vocab.json + merges.txt, or 'bytes'") from e
        self.path = path
        cfg_path = _join(folder, "tokenizer_config.json")
        self.chat_template = json.loads(_read_text(cfg_path)).get("chat_template") if _exists(cfg_path) else None
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.special, missing = {}, []
        for name in special_tokens.NAMES:
            tid = self._tok.token_to_id(special_tokens.TEXT[name])
            if tid is None:
                missing.append(special_tokens.TEXT[name])
            else:
                self.special[name] = tid
        if missing:
            raise ValueError(
                f"tokenizer {path} lacks the special tokens {missing}; add them with "
                "`tokenizer.add_special_tokens([...])` and save it again"
            )

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self._tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def make(spec: str, *, vocab: str, vocab_size: int, special: dict[str, int] | None = None):
    """Tokenizer for config `data.text_tokenizer` ('bytes', a tokenizer.json or a tokenizer directory) and the
    model's vocab.

    Checks that the ids fit the model: every id < vocab_size, and the special-token ids equal `special` (the
    model's, `special_tokens.ids_of`) when given, else the Qwen reference ids for vocab 'qwen'."""
    if spec == "bytes":
        if vocab != "bytes":
            raise ValueError(
                f"data.text_tokenizer='bytes' needs model.vocab='bytes', got {vocab!r}; "
                "set data.text_tokenizer to the path of the model's tokenizer.json"
            )
        tok = ByteTokenizer(vocab_size)
    else:
        tok = HFTokenizer(spec)
        if tok.vocab_size > vocab_size:
            raise ValueError(
                f"tokenizer {spec} has {tok.vocab_size} ids but the model vocab_size is {vocab_size}"
            )
    want = special if special is not None else (special_tokens.QWEN_IDS if vocab == "qwen" else None)
    if want is not None and any(tok.special[k] != want[k] for k in want):
        bad = {k: (tok.special[k], want[k]) for k in want if tok.special[k] != want[k]}
        whose = "the model's" if special is not None else "the Qwen ids the model (model.vocab='qwen') expects"
        raise ValueError(
            f"tokenizer {spec} special-token ids differ from {whose} (name: (tokenizer, model)): {bad}; "
            "use the tokenizer the model was trained with (set model.special_ids.NAME for a model whose ids "
            "differ from its model.vocab defaults)"
        )
    return tok


def for_model(spec: str, model_cfg):
    """`make` for an LM `model` config: its vocab, vocab_size and special-token ids (`special_tokens.ids_of`)."""
    return make(spec, vocab=model_cfg.vocab, vocab_size=int(model_cfg.vocab_size),
                special=special_tokens.ids_of(model_cfg))
