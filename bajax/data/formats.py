"""Task formats (SPEC section 3, paper Table 4): one prepared sample -> unpacked LM arrays, shifted targets.

Layouts (`[x]` = no loss, `{x}` = loss; A = understanding audio `<audio_start> pad*N <audio_end>`,
G = generated audio `<audiogen_start> pad*N <audiogen_end>`; every sample ends with `<|endoftext|>`):

    asr    [prompt] A(all segments)  {transcript} {eos}
    aqa    [prompt] A(all segments)  {response}   {eos}
    s2tt   [prompt] A(all segments)  {translation}{eos}
    intlv  A(seg1) {text2} A(seg3) {text4} ...  {eos if the last segment is text}   (no loss on its audio)
    tts    [text(all segments)] {G(all segments)} {eos}
    itts   [text1] {G1} {text2} {G2} ... {eos}                   (no loss on the first text segment only)
    audio  {G(all segments)} {eos}
    text   {transcript} {eos}       (text-only LM data: the transcripts of the ASR samples, no audio)

Decisions (the paper leaves them open):
- Targets are shifted: position t predicts token t+1. A token "has loss" when it is the target, so the
  weight sits one position earlier (the first transcript token is predicted at the `<audio_end>` position).
- Text loss is never on a target that is `audio_pad` or a closing audio token: frames are predicted by the
  audio head, and the closing token follows the end-of-audio code deterministically.
- The opening `<audiogen_start>` of a generated segment WITH audio loss carries text loss: in
  interleaved generation the LM itself decides to start speaking. `<audio_start>` (input audio) never does.
- Audio loss: all 8 codebooks of every frame of a loss-bearing segment; after its last frame the target is
  end-of-audio (codebook 0 = cb_0, weight on codebook 0 only). Understanding audio gets no audio loss.
- `<|endoftext|>` carries loss when the segment before it does.
- Audio targets under zero weight are written as 0 (bajax/lm/batch.py); text targets always hold the true
  next id (0 at a sample's last position, weight 0).
- The prompt defaults to a short English instruction per task when the manifest gives none.
- Samples longer than seq_len are cut at seq_len (the cut keeps the true targets of the kept positions).
- Several segments of a continuous task (asr, tts, ...) are concatenated: their codes into one audio block
  and their texts joined with a space (no space for Chinese/Japanese).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PROMPTS = {
    "asr": "Transcribe the speech.",
    "aqa": "Listen to the question and answer it.",
    "s2tt": "Translate the speech into {language}.",
}
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "cmn": "Chinese"}
_NO_SPACE_LANGS = ("zh", "cmn", "ja", "yue")


def join_texts(texts, language: str) -> str:
    sep = "" if language.split("-")[0] in _NO_SPACE_LANGS else " "
    return sep.join(t for t in texts if t)


class _Builder:
    """Accumulates input tokens with per-token target weights; `finish` shifts them into targets."""

    def __init__(self, special: dict[str, int], eoa: int, num_codebooks: int):
        self.special, self.eoa, self.k = special, eoa, num_codebooks
        self.tokens, self.codes, self.text_w, self.audio_w, self.eoa_at = [], [], [], [], []
        self.last_loss = 0.0

    def text(self, ids: np.ndarray, loss: bool) -> None:
        n = len(ids)
        self.tokens.append(np.asarray(ids, np.int32))
        self.codes.append(np.zeros((n, self.k), np.int32))
        self.text_w.append(np.full(n, float(loss), np.float32))
        self.audio_w.append(np.zeros(n, np.float32))
        self.eoa_at.append(np.zeros(n, np.float32))
        self.last_loss = float(loss) if n else self.last_loss

    def audio(self, codes: np.ndarray, *, generated: bool, loss: bool) -> None:
        s = self.special
        open_id, close_id = (
            (s["audiogen_start"], s["audiogen_end"]) if generated else (s["audio_start"], s["audio_end"])
        )
        n = len(codes)
        self.text(np.array([open_id]), loss and generated)
        self.tokens.append(np.full(n, s["audio_pad"], np.int32))
        self.codes.append(np.asarray(codes, np.int32).reshape(n, self.k))
        self.text_w.append(np.zeros(n, np.float32))
        self.audio_w.append(np.full(n, float(loss), np.float32))
        eoa = np.zeros(n, np.float32)
        if n:
            eoa[-1] = float(loss)
        self.eoa_at.append(eoa)
        self.text(np.array([close_id]), False)
        self.last_loss = float(loss)

    def finish(self, seq_len: int) -> dict[str, np.ndarray]:
        self.text(np.array([self.special["endoftext"]]), bool(self.last_loss))
        tok = np.concatenate(self.tokens)
        codes = np.concatenate(self.codes)
        text_w, audio_w, eoa_at = (np.concatenate(x) for x in (self.text_w, self.audio_w, self.eoa_at))
        n = len(tok)
        is_frame = tok == self.special["audio_pad"]
        eoa_pos = np.zeros(n, bool)  # positions holding the last frame of an audio block
        eoa_pos[:-1] = is_frame[:-1] & ~is_frame[1:]
        out = {
            "tokens": tok,
            "audio_codes": np.where(is_frame[:, None], codes, 0).astype(np.int32),
            "text_targets": np.zeros(n, np.int32),
            "text_weights": np.zeros(n, np.float32),
            "audio_targets": np.zeros((n, self.k), np.int32),
            "audio_weights": np.zeros((n, self.k), np.float32),
        }
        out["text_targets"][:-1] = tok[1:]
        out["text_weights"][:-1] = text_w[1:]
        out["audio_targets"][:-1] = codes[1:]
        out["audio_weights"][:-1] = (audio_w[1:] * is_frame[1:])[:, None]
        out["audio_targets"][eoa_pos] = 0
        out["audio_targets"][eoa_pos, 0] = self.eoa
        out["audio_weights"][eoa_pos] = 0.0
        out["audio_weights"][eoa_pos, 0] = eoa_at[eoa_pos]
        out["audio_targets"] = np.where(out["audio_weights"] > 0, out["audio_targets"], 0).astype(np.int32)
        return {k: v[:seq_len] for k, v in out.items()}


def format_sample(meta: dict, codes: list[np.ndarray], tokenizer, *, codebook_sizes, seq_len: int):
    """LM arrays (bajax/lm/batch.py fields minus positions/segment_ids) of one prepared sample.

    `meta`: the LM record's metadata (task, language, texts per segment, prompt, response,
    response_language); `codes`: per-segment int [frames, 8] arrays.
    """
    task = meta["task"]
    b = _Builder(tokenizer.special, eoa=int(codebook_sizes[0]), num_codebooks=len(codebook_sizes))
    enc = tokenizer.encode
    texts, lang = meta["texts"], meta.get("language", "")
    all_codes = np.concatenate(codes) if codes else np.zeros((0, len(codebook_sizes)), np.int32)
    if task in ("asr", "aqa", "s2tt"):
        target_lang = meta.get("response_language") or lang
        prompt = meta.get("prompt") or DEFAULT_PROMPTS[task].format(
            language=LANGUAGE_NAMES.get(target_lang, target_lang)
        )
        b.text(enc(prompt), False)
        b.audio(all_codes, generated=False, loss=False)
        answer = join_texts(texts, lang) if task == "asr" else meta["response"]
        b.text(enc(answer), True)
    elif task == "intlv":
        for i, (text, c) in enumerate(zip(texts, codes, strict=True)):
            if i % 2 == 0:
                b.audio(c, generated=False, loss=False)
            else:
                b.text(enc(text), True)
    elif task == "tts":
        b.text(enc(join_texts(texts, lang)), False)
        b.audio(all_codes, generated=True, loss=True)
    elif task == "itts":
        for i, (text, c) in enumerate(zip(texts, codes, strict=True)):
            b.text(enc(text), i > 0)
            b.audio(c, generated=True, loss=True)
    elif task == "audio":
        b.audio(all_codes, generated=True, loss=True)
    elif task == "text":
        b.text(enc(join_texts(texts, lang)), True)
    else:
        raise ValueError(f"sample {meta.get('id')!r}: unknown task {task!r}")
    return b.finish(seq_len)
