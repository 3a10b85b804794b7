"""The data manifest: JSONL, one sample per line. Parsing and the checks that need no audio decoding.

Schema (one JSON object per line; `bajax/data/README_SECTION.md` has the user-facing copy):

    {"id": "doc7-asr",                 # unique per manifest; defaults to "line<N>"
     "task": "asr",                    # asr | aqa | s2tt | intlv | tts | itts | audio | chat
     "language": "en",                 # language of the speech (free string, e.g. en, zh)
     "split": "train",                 # train | valid (default train)
     "audio": ["audio/doc7.flac"],     # one path or a list; relative paths are relative to the manifest
     "segments": [                     # ordered spans of audio, each with the transcript it belongs to
        {"audio": 0, "start": 0.0, "end": 2.31, "text": "The cat sleeps."},
        {"audio": 0, "start": 2.61, "end": 4.90, "text": "It is warm."}],
     "prompt": "Transcribe the speech.",   # optional instruction before the audio (asr, aqa, s2tt)
     "response": "...",                # aqa: the answer; s2tt: the translation (required for both)
     "response_language": "zh"}        # language of `response` (default: `language`)

`audio` in a segment indexes the `audio` list (default 0); `start`/`end` are seconds (default: whole file).
A line without `segments` but with `text` is one segment covering the whole of `audio[0]`.
Which segment texts are required depends on the task: every segment needs text for asr, intlv, tts and
itts; aqa and s2tt need `response` (segment texts, the question transcript or source sentence, are
optional and only feed the tokenizer's alignment loss); pure audio needs none.

A `chat` row (supervised chat fine-tuning) has `turns` instead of `segments`/`prompt`/`response`:

    {"id": "q0005-en-chat", "task": "chat", "language": "en",
     "turns": [{"role": "system", "text": "You are a helpful voice assistant."},
               {"role": "user", "audio": "audio/q0005-en.flac", "start": 0.0, "end": 1.34},
               {"role": "assistant", "text": "Four plus one is 5.",
                "audio": "audio/a0005.flac"}]}          # a spoken answer: the text, then its speech

The turn schema (roles, parts, `audio_loss`) is documented and checked in bajax/data/chat.py; the token
layout and loss weights are `chat_layout` in bajax/data/formats.py. A chat row's audio spans become its
`segments` (in order of appearance) so `bajax prepare` encodes them like any other; `audio` (top level) is
optional and, when given, turns may name its files by index.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

# The seven pre-training task formats (paper section 3.3.1) and `chat`, the multi-turn dialogues of supervised
# fine-tuning (bajax/data/chat.py); bajax/data/formats.py turns each into tokens and weights.
# This is the one list: configs, pipelines, the quickstart and sweeps read it from here.
TASKS = ("asr", "aqa", "s2tt", "intlv", "tts", "itts", "audio", "chat")
PRETRAINING_TASKS = TASKS[:-1]   # what the embedded corpus covers; `chat` has its own example manifest
SPLITS = ("train", "valid")
# Tasks whose every segment must carry its transcript.
_TEXT_TASKS = ("asr", "intlv", "tts", "itts")


class ManifestError(ValueError):
    """A bad manifest line; `reason` is the key under which the preparation summary counts it."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ManifestFileError(ValueError):
    """The manifest file as a whole is unusable (missing, unreadable, not UTF-8 text)."""


@dataclasses.dataclass(frozen=True)
class Segment:
    audio: int
    start: float
    end: float | None
    text: str


@dataclasses.dataclass(frozen=True)
class Entry:
    id: str
    task: str
    language: str
    split: str
    audio: tuple[str, ...]
    segments: tuple[Segment, ...]
    prompt: str
    response: str
    response_language: str
    line: int
    turns: tuple = ()            # chat rows: bajax.data.chat.Turn, whose parts index `segments`


def _resolve(path: str, base: str) -> str:
    if "://" in path or path.startswith("/") or not base:
        return path
    return (
        posixpath.join(base, path) if "://" in base else str(posixpath.normpath(posixpath.join(base, path)))
    )


def _text(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ManifestError("bad_field", f"{where} must be a string, got {type(value).__name__}")
    return value.strip()


def parse_line(line: str, lineno: int, base_dir: str = "") -> Entry:
    """Parses and checks one manifest line; raises ManifestError (with a reason key) when it is unusable."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(
            "malformed_json", f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})"
        ) from e
    if not isinstance(obj, dict):
        raise ManifestError(
            "malformed_json", f"line {lineno}: expected a JSON object, got {type(obj).__name__}"
        )
    sid = str(obj.get("id", f"line{lineno}"))
    where = f"line {lineno} (id {sid!r})"
    task = obj.get("task")
    if task not in TASKS:
        raise ManifestError("unknown_task", f"{where}: unknown task {task!r}; use one of {', '.join(TASKS)}")
    split = obj.get("split", "train")
    if split not in SPLITS:
        raise ManifestError("bad_field", f"{where}: split must be one of {SPLITS}, got {split!r}")
    if task == "chat":
        return _chat_entry(obj, sid, split, where, lineno, base_dir)
    audio = obj.get("audio")
    if isinstance(audio, str):
        audio = [audio]
    if not audio or not all(isinstance(a, str) and a for a in audio):
        raise ManifestError("bad_field", f"{where}: 'audio' must be a path or a non-empty list of paths")
    raw_segments = obj.get("segments")
    if raw_segments is None:
        raw_segments = [{"audio": 0, "text": obj.get("text")}]
    if not isinstance(raw_segments, list) or not raw_segments:
        raise ManifestError("bad_field", f"{where}: 'segments' must be a non-empty list")
    segments = []
    for i, seg in enumerate(raw_segments):
        if not isinstance(seg, dict):
            raise ManifestError("bad_field", f"{where}: segment {i} must be an object")
        idx = seg.get("audio", 0)
        if not isinstance(idx, int) or not 0 <= idx < len(audio):
            raise ManifestError("bad_field", f"{where}: segment {i} audio index {idx!r} is outside 'audio'")
        start, end = seg.get("start", 0.0), seg.get("end")
        if not isinstance(start, (int, float)) or (end is not None and not isinstance(end, (int, float))):
            raise ManifestError("bad_field", f"{where}: segment {i} start/end must be numbers (seconds)")
        if start < 0 or (end is not None and end <= start):
            raise ManifestError(
                "empty_audio", f"{where}: segment {i} span [{start}, {end}] is empty or negative"
            )
        text = _text(seg.get("text"), f"{where}: segment {i} text")
        if task in _TEXT_TASKS and not text:
            raise ManifestError(
                "empty_text",
                f"{where}: segment {i} has no text; task {task} needs a transcript for every segment",
            )
        segments.append(Segment(idx, float(start), None if end is None else float(end), text))
    if task == "intlv" and len(segments) < 2:
        raise ManifestError("bad_field", f"{where}: intlv needs at least 2 segments (audio, text, ...)")
    response = _text(obj.get("response"), f"{where}: response")
    if task in ("aqa", "s2tt") and not response:
        raise ManifestError("empty_text", f"{where}: task {task} needs a non-empty 'response'")
    language = str(obj.get("language", ""))
    return Entry(
        id=sid,
        task=task,
        language=language,
        split=split,
        audio=tuple(_resolve(a, base_dir) for a in audio),
        segments=tuple(segments),
        prompt=_text(obj.get("prompt"), f"{where}: prompt"),
        response=response,
        response_language=str(obj.get("response_language", language)),
        line=lineno,
    )


def _chat_entry(obj: dict, sid: str, split: str, where: str, lineno: int, base_dir: str) -> Entry:
    """A chat row: its turns checked by bajax/data/chat.py, its audio spans as segments."""
    from bajax.data import chat

    extra = sorted(k for k in ("segments", "text", "prompt", "response") if k in obj)
    if extra:
        raise ManifestError("bad_field", f"{where}: a chat row has 'turns', not {extra}; put text and audio in "
                                         "the turns (schema: bajax/data/chat.py)")
    audio = obj.get("audio")
    if isinstance(audio, str):
        audio = [audio]
    if audio is not None and not (isinstance(audio, list) and all(isinstance(a, str) and a for a in audio)):
        raise ManifestError("bad_field", f"{where}: 'audio' must be a path or a list of paths")
    listed = [_resolve(a, base_dir) for a in audio or ()]
    try:
        turns, spans = chat.parse_turns(obj.get("turns"), where, base_dir=base_dir, audio_list=listed)
    except chat.ChatError as e:
        raise ManifestError(e.reason, str(e)) from e
    paths = list(dict.fromkeys(s.path for s in spans))
    segments = tuple(Segment(paths.index(s.path), s.start, s.end, s.text) for s in spans)
    language = str(obj.get("language", ""))
    return Entry(id=sid, task="chat", language=language, split=split, audio=tuple(paths), segments=segments,
                 prompt="", response="", response_language=str(obj.get("response_language", language)),
                 line=lineno, turns=turns)


def read(path: str, *, base_dir: str | None = None) -> tuple[list[Entry], list[tuple[str, str]]]:
    """Reads a manifest: (usable entries, [(reason, message)] of rejected lines incl. duplicate ids)."""
    from bajax.audio.io import read_bytes  # local import: manifest parsing itself needs no audio stack

    if base_dir is None:
        base_dir = posixpath.dirname(str(path))
    try:
        data = read_bytes(path)
    except FileNotFoundError as e:
        raise ManifestFileError(f"manifest {path} not found; pass the path of an existing JSONL manifest") from e
    except OSError as e:
        raise ManifestFileError(f"cannot read manifest {path} ({e.strerror or e}); pass a readable JSONL file") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestFileError(
            f"manifest {path} is not UTF-8 text (byte {e.start} is invalid); it must be a JSONL file, one "
            "JSON object per line, saved as UTF-8"
        ) from e
    entries, rejects, seen = [], [], set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = parse_line(line, lineno, base_dir)
        except ManifestError as e:
            rejects.append((e.reason, str(e)))
            continue
        if entry.id in seen:
            rejects.append(("duplicate_id", f"line {lineno}: id {entry.id!r} appears earlier in {path}"))
            continue
        seen.add(entry.id)
        entries.append(entry)
    return entries, rejects
