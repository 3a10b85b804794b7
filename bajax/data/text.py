"""Text tokenizers: byte-level (tiny configs) or a user-supplied Hugging Face tokenizer.json (real runs).

Both expose `encode(text) -> int32 [n]`, `decode(ids) -> str`, `vocab_size` and `special` (name -> id for
every name in `bajax.lm.special_tokens.NAMES`). Byte-level text is UTF-8 bytes 0..255 with the special
tokens at the END of the model vocabulary (so the same names work at any vocab size). A tokenizer.json
must contain every special-token string of `special_tokens.TEXT` as an added token.
"""

from __future__ import annotations

import numpy as np

from bajax.lm import special_tokens


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; special tokens at the last ids of a `vocab_size` vocabulary."""

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


class HFTokenizer:
    """A `tokenizers` tokenizer.json; special tokens looked up by their Baichuan/Qwen strings."""

    def __init__(self, path: str):
        import tokenizers

        from bajax.audio.io import read_bytes

        try:
            self._tok = tokenizers.Tokenizer.from_str(read_bytes(path).decode("utf-8"))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"data.text_tokenizer: tokenizer file {path} not found; give the path "
                "to a Hugging Face tokenizer.json or 'bytes'"
            ) from e
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


def make(spec: str, *, vocab: str, vocab_size: int):
    """Tokenizer for config `data.text_tokenizer` ('bytes' or a tokenizer.json path) and the model's vocab.

    Checks that the ids fit the model: every id < vocab_size, and the Qwen reference ids for vocab 'qwen'.
    """
    if spec == "bytes":
        if vocab != "bytes":
            raise ValueError(
                f"data.text_tokenizer='bytes' needs model.vocab='bytes', got {vocab!r}; "
                "set data.text_tokenizer to the path of the model's tokenizer.json"
            )
        return ByteTokenizer(vocab_size)
    tok = HFTokenizer(spec)
    if tok.vocab_size > vocab_size:
        raise ValueError(
            f"tokenizer {spec} has {tok.vocab_size} ids but the model vocab_size is {vocab_size}"
        )
    if vocab == "qwen" and tok.special != special_tokens.QWEN_IDS:
        bad = {k: v for k, v in tok.special.items() if special_tokens.QWEN_IDS[k] != v}
        raise ValueError(
            f"tokenizer {spec} special-token ids {bad} differ from the Qwen ids the model "
            "(model.vocab='qwen') expects"
        )
    return tok
