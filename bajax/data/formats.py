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
    chat   [<B_SYS> system] [<C_Q> user] [(<audiotext_start>) <C_A>] {reply} [<C_Q> user] ... {reply} {eos}
           (`chat_layout` below: loss on the assistant replies only, their speech per data.chat_audio_loss)

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

from bajax.data import chat

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

    def audio(self, codes: np.ndarray, *, generated: bool, loss: bool, open_loss: bool | None = None) -> None:
        """`open_loss`: text loss on the opening token (default: generated audio with audio loss)."""
        s = self.special
        open_id, close_id = (
            (s["audiogen_start"], s["audiogen_end"]) if generated else (s["audio_start"], s["audio_end"])
        )
        n = len(codes)
        self.text(np.array([open_id]), (loss and generated) if open_loss is None else open_loss)
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

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(tokens [n], codes [n, k]) laid out so far, unshifted and without `<|endoftext|>`: a prompt."""
        return np.concatenate(self.tokens).astype(np.int32), np.concatenate(self.codes).astype(np.int32)

    def finish(self, seq_len: int, eos_loss: bool | None = None) -> dict[str, np.ndarray]:
        """`eos_loss`: loss on the closing `<|endoftext|>` (default: when the segment before it has loss)."""
        eos_loss = bool(self.last_loss) if eos_loss is None else eos_loss
        self.text(np.array([self.special["endoftext"]]), eos_loss)
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


def _turn_audio_loss(turn, index: int, last: int, policy: str) -> bool:
    if turn.audio_loss is not None:
        return turn.audio_loss
    if policy not in chat.AUDIO_LOSS:
        raise ValueError(f"data.chat_audio_loss={policy!r}; use one of {chat.AUDIO_LOSS}")
    return policy == "itts" or (policy == "last" and index == last)


def chat_layout(b: _Builder, turns, codes, encode, *, audio_loss: str = "itts", open_reply: bool = False) -> None:
    """Lays out a conversation into `b`: the one layout of training rows and `bajax generate` prompts.

    As the reference multi-turn web demo (Baichuan-Omni-1.5 web_demo/s2s_gradio_demo_cosy_multiturn.py:
    `role_prefix` in web_demo/constants.py, `preprocess_messages`, and the processor's audio wrapping in
    baichuan-omni/model/processor_omni.py `process_multimodal_chunk`):
      system     <B_SYS> text
      user       <C_Q> then its parts: text, or input audio <audio_start> pad*N <audio_end>
      assistant  <audiotext_start> <C_A> when the reply speaks (the demo's "response in audio"), else <C_A>;
                 then its parts: text, and a part's speech <audiogen_start> pad*N <audiogen_end> after its text
    Turns follow each other with no separator (the demo's history strips `<|endoftext|>` from earlier replies);
    `open_reply` appends `<audiotext_start> <C_A>`, the opening of a spoken reply (a generation prompt).
    Loss: only assistant parts -- their text, the `<audiogen_start>` that starts speaking, and (per
    `audio_loss`, see bajax/data/chat.py AUDIO_LOSS, or the turn's own `audio_loss`) their frames and
    end-of-audio. Role tokens are given, never predicted. Each text part is encoded on its own.
    """
    s = b.special
    replies = [i for i, t in enumerate(turns) if t.role == "assistant"]
    last = replies[-1] if replies else -1
    for i, turn in enumerate(turns):
        reply = turn.role == "assistant"
        if turn.role == "system":
            b.text(np.array([s["B_SYS"]]), False)
        elif turn.role == "user":
            b.text(np.array([s["C_Q"]]), False)
        else:
            spoken = any(p.span is not None for p in turn.parts)
            b.text(np.array([s["audiotext_start"], s["C_A"]] if spoken else [s["C_A"]]), False)
        speech_loss = reply and _turn_audio_loss(turn, i, last, audio_loss)
        for p in turn.parts:
            if p.text and (reply or p.span is None):   # a user's audio text is its transcript, not laid out
                b.text(encode(p.text), reply)
            if p.span is not None:
                b.audio(codes[p.span], generated=reply, loss=speech_loss, open_loss=reply)
    if open_reply:
        b.text(np.array([s["audiotext_start"], s["C_A"]]), False)


def chat_prompt(turns, codes, tokenizer, num_codebooks: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [n], codes [n, k]) of a conversation followed by the opening of a spoken reply."""
    b = _Builder(tokenizer.special, eoa=0, num_codebooks=num_codebooks)
    chat_layout(b, turns, codes, tokenizer.encode, open_reply=True)
    return b.arrays()


def format_sample(meta: dict, codes: list[np.ndarray], tokenizer, *, codebook_sizes, seq_len: int,
                  chat_audio_loss: str = "itts"):
    """LM arrays (bajax/lm/batch.py fields minus positions/segment_ids) of one prepared sample.

    `meta`: the LM record's metadata (task, language, texts per segment, prompt, response,
    response_language; `turns` for chat); `codes`: per-segment int [frames, 8] arrays.
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
    elif task == "chat":
        chat_layout(b, chat.from_meta(meta["turns"]), codes, enc, audio_loss=chat_audio_loss)
        return b.finish(seq_len, eos_loss=True)   # the row ends with the assistant's reply
    else:
        raise ValueError(f"sample {meta.get('id')!r}: unknown task {task!r}")
    return b.finish(seq_len)
