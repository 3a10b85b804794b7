"""`bajax generate --history FILE`: continue a multi-turn conversation.

The history file holds the previous turns in the schema of `chat` manifest rows (bajax/data/chat.py), audio as
file paths (relative ones relative to the file). The new prompt (--text or --audio) is the next user turn; a
history without a system turn gets `--system` first (as the single-turn spoken prompt does). Every audio span
is encoded by the tokenizer run, and the whole conversation is laid out by `bajax.data.formats.chat_layout`,
the layout the `chat` training rows get, ending with the opening of a spoken reply.

`--history-out FILE` writes the history, the new user turn and the generated reply as the next history: the
reply is one assistant turn whose parts are its text segments, each with its span of the output wav, so the
next call re-encodes the reply from the wav (as the reference web demo re-reads its saved reply wavs).
"""

from __future__ import annotations

import json
import os

import numpy as np

from bajax.data import chat

MIN_SAMPLES = 1280   # one 12.5 Hz code frame at 16 kHz


class HistoryError(ValueError):
    """A bad --history file or span; the message names the file, the turn or span, and the fix."""


def read(path: str) -> tuple[tuple[chat.Turn, ...], tuple[chat.Span, ...]]:
    """Checks a --history file before any model is loaded."""
    try:
        turns, spans = chat.load_history(path)
    except chat.ChatError as e:
        raise HistoryError(f"--history {e}") from e
    for i, s in enumerate(spans):
        if "://" not in s.path and not os.path.exists(s.path):
            raise HistoryError(f"--history {path}: audio span {i} names {s.path}, which does not exist; paths are "
                               f"relative to the history file")
    return turns, spans


def _span_wave(span: chat.Span, i: int, path: str) -> np.ndarray:
    from bajax.audio import io as audio_io

    try:
        wave = audio_io.load(span.path, 16000)
    except audio_io.AudioError as e:
        raise HistoryError(f"--history {path}: audio span {i} ({span.path}): {e}") from e
    a = round(span.start * 16000)
    b = len(wave) if span.end is None else min(round(span.end * 16000), len(wave))
    if b - a < MIN_SAMPLES:
        raise HistoryError(f"--history {path}: audio span {i} ({span.path} [{span.start}, {span.end}] s) holds "
                           f"{max(b - a, 0)} samples, less than one 80 ms code frame; fix its start/end")
    return wave[a:b]


def with_system(history, system: str):
    turns, spans = history
    if not turns or turns[0].role != "system":
        turns = (chat.Turn("system", (chat.Part(system),)), *turns)
    return tuple(turns), spans


def prompt(history, tok, encode_fn, *, path: str, system: str, max_len: int, text: str | None = None,
           wave=None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, codes) of history + the new user turn (`text`, or a 16 kHz `wave`) + the reply's opening."""
    from bajax.speech import generate as gen

    turns, spans = with_system(history, system)
    codes = [np.asarray(encode_fn(_span_wave(s, i, path))) for i, s in enumerate(spans)]
    if text is not None:
        user = chat.Turn("user", (chat.Part(text.strip()),))
    else:
        if len(wave) < MIN_SAMPLES:
            raise HistoryError("--audio: the question is shorter than one code frame (80 ms); record a longer one")
        codes.append(np.asarray(encode_fn(wave)))
        user = chat.Turn("user", (chat.Part("", len(spans)),))
    tokens, all_codes = gen.chat_prompt((*turns, user), codes, tok)
    if len(tokens) + 2 > max_len:
        frames = sum(len(c) for c in codes)
        raise HistoryError(f"--history {path}: the conversation with the new turn is {len(tokens)} tokens "
                           f"({frames} of them audio frames), over --max-len {max_len}; drop early turns from the "
                           "history or raise --max-len (at most the context the LM was trained for)")
    return tokens, all_codes


def _absolute(items: list[dict]) -> list[dict]:
    for t in items:
        for p in t["content"]:
            if "audio" in p and "://" not in p["audio"]:
                p["audio"] = os.path.abspath(p["audio"])
    return items


def next_history(history, *, system: str, text: str | None, audio: str | None, parts, wav: str,
                 seconds_per_frame: float) -> list[dict]:
    """The history after this reply, as JSON turns (absolute audio paths, so the file can live anywhere).

    parts: the reply's (text, frames) segments in order; their speech lies back to back in `wav`."""
    turns, spans = with_system(history, system)
    out = _absolute(chat.to_json(turns, spans))
    out.append({"role": "user", "text": text.strip()} if text is not None
               else {"role": "user", "audio": os.path.abspath(audio)})
    content, at = [], 0
    for seg_text, frames in parts:
        part = {"text": seg_text} if seg_text.strip() else {}
        if frames:
            part |= {"audio": os.path.abspath(wav), "start": round(at * seconds_per_frame, 4),
                     "end": round((at + frames) * seconds_per_frame, 4)}
            at += frames
        if part:
            content.append(part)
    if content:
        out.append({"role": "assistant", "content": content})
    return out


def write(path: str, items: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(items, f, ensure_ascii=False, indent=1)
        f.write("\n")
