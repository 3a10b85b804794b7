"""Chat turns: the schema shared by `chat` manifest rows and `bajax generate --history` files, and its checks.

A conversation is a list of turns (README: "Chat fine-tuning" has the user-facing copy):

    {"role": "system",    "text": "You are a helpful voice assistant."}          # optional, first turn only
    {"role": "user",      "audio": "q.flac", "start": 0.0, "end": 1.34,
                          "text": "What is four plus one?"}                        # spoken; text = transcript
    {"role": "user",      "text": "And five plus five?"}                           # typed
    {"role": "assistant", "text": "Four plus one is 5."}                           # a text answer
    {"role": "assistant", "content": [                                             # a spoken answer, part by
        {"text": "Four plus one", "audio": "a.flac", "start": 0.0, "end": 0.9},   # part: each text followed
        {"text": " is 5.", "audio": "a.flac", "start": 0.9}],                      # by its own speech
     "audio_loss": false}                                                          # optional, assistant only

A turn is either `content` (a list of parts) or the shorthand of one part (`text` and/or `audio` with
`start`/`end`). A part is a string, `{"text": ...}`, or `{"audio": PATH, "start": s, "end": s, "text": ...}`
(`start` defaults to 0, `end` to the end of the file). `audio` is a path (relative paths are relative to the
manifest or history file) or, in a manifest row with a top-level `audio` list, an index into that list.

What a part's text means depends on its role, because it follows the reference layout (bajax/data/formats.py
`chat_layout`): system and user audio is input audio, so a user part's text is only its transcript; an
assistant part's text is laid out and then spoken by its audio (`text <audiogen_start> frames <audiogen_end>`,
the ITTS layout the paper's SFT data uses: responses "segmented at natural conversational pauses before being
converted into audio"). System turns are text only. Nothing is dropped silently: an unknown role or key, an
empty turn or part, or a misplaced system turn is an error naming the line/file, the turn and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

ROLES = ("system", "user", "assistant")
# The system prompt `bajax generate` uses when a conversation has none (the reference demo always sends one).
DEFAULT_SYSTEM = "You are a helpful voice assistant. Answer the question in speech."
# Which assistant audio carries audio loss (config data.chat_audio_loss; a turn's `audio_loss` overrides it):
#   itts   every assistant turn's text and speech (the ITTS rule: the model learns to speak its answers)
#   intlv  assistant text only; its speech stays in the context without loss (the INTLV rule), e.g. when the
#          answers were spoken by a voice the model should not imitate
#   last   the speech of a row's last assistant turn only (earlier spoken answers are context)
AUDIO_LOSS = ("itts", "intlv", "last")

_TURN_KEYS = ("role", "text", "audio", "start", "end", "content", "audio_loss")
_PART_KEYS = ("text", "audio", "start", "end")


class ChatError(ValueError):
    """An unusable turn; `reason` is the key under which `bajax prepare` counts the rejected row."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Span:
    """An audio span of a conversation (a manifest row's segment)."""

    path: str
    start: float
    end: float | None
    text: str


@dataclasses.dataclass(frozen=True)
class Part:
    text: str
    span: int | None = None      # index into the conversation's spans; None = text only


@dataclasses.dataclass(frozen=True)
class Turn:
    role: str
    parts: tuple[Part, ...]
    audio_loss: bool | None = None   # assistant only; None = data.chat_audio_loss decides


def _resolve(path: str, base: str) -> str:
    if "://" in path or path.startswith("/") or not base:
        return path
    return posixpath.join(base, path) if "://" in base else posixpath.normpath(posixpath.join(base, path))


def _text(value, where: str) -> str:
    """The text as given: parts are laid out back to back, so their spaces are kept (a reply generated as
    "Hi," + " you" comes back as the same tokens); whitespace-only text counts as empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ChatError("bad_field", f"{where}: text must be a string, got {type(value).__name__}")
    return value if value.strip() else ""


def _span(obj: dict, where: str, base_dir: str, audio_list) -> Span:
    a = obj["audio"]
    if isinstance(a, bool) or not isinstance(a, (str, int)) or a == "":
        raise ChatError("bad_field", f"{where}: 'audio' must be a file path (or an index into the row's 'audio' "
                                     f"list), got {a!r}")
    if isinstance(a, int):
        if not audio_list or not 0 <= a < len(audio_list):
            raise ChatError("bad_field", f"{where}: audio index {a} is outside the row's 'audio' list "
                                         f"({len(audio_list or ())} paths); give a path instead")
        path = audio_list[a]
    else:
        path = _resolve(a, base_dir)
    start, end = obj.get("start", 0.0), obj.get("end")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or (
            end is not None and (isinstance(end, bool) or not isinstance(end, (int, float)))):
        raise ChatError("bad_field", f"{where}: start/end must be numbers (seconds)")
    if start < 0 or (end is not None and end <= start):
        raise ChatError("empty_audio", f"{where}: audio span [{start}, {end}] is empty or negative")
    return Span(path, float(start), None if end is None else float(end), _text(obj.get("text"), where))


def _unknown_keys(obj: dict, allowed, where: str) -> None:
    bad = sorted(set(obj) - set(allowed))
    if bad:
        raise ChatError("bad_field", f"{where}: unknown key(s) {bad}; valid keys: {', '.join(allowed)}")


def parse_turns(raw, where: str, *, base_dir: str = "", audio_list=None,
                need_reply: bool = True) -> tuple[tuple[Turn, ...], tuple[Span, ...]]:
    """Checks a list of turns -> (turns, spans). `where` prefixes every message (a manifest line or a file).

    need_reply: a training row must contain an assistant turn and end with one (turns after the last reply
    would carry no loss); a `--history` file need not (the new prompt is the next user turn)."""
    if not isinstance(raw, list) or not raw:
        raise ChatError("bad_field", f"{where}: 'turns' must be a non-empty list of turns")
    turns, spans = [], []
    for i, t in enumerate(raw):
        at = f"{where}: turn {i}"
        if not isinstance(t, dict):
            raise ChatError("bad_field", f"{at} must be an object with 'role' and 'text'/'audio'/'content'")
        role = t.get("role")
        if role not in ROLES:
            raise ChatError("unknown_role", f"{at} has unknown role {role!r}; use one of {', '.join(ROLES)}")
        at = f"{at} ({role})"
        _unknown_keys(t, _TURN_KEYS, at)
        if "content" in t:
            if any(k in t for k in ("text", "audio", "start", "end")):
                raise ChatError("bad_field", f"{at}: give either 'content' or 'text'/'audio', not both")
            raw_parts = t["content"]
            if not isinstance(raw_parts, list):
                raise ChatError("bad_field", f"{at}: 'content' must be a list of parts")
        else:
            raw_parts = [{k: t[k] for k in _PART_KEYS if k in t}] if any(k in t for k in _PART_KEYS) else []
        parts = []
        for j, p in enumerate(raw_parts):
            pat = f"{at} part {j}" if "content" in t else at
            if isinstance(p, str):
                p = {"text": p}
            if not isinstance(p, dict):
                raise ChatError("bad_field", f"{pat} must be a string or an object with 'text' and/or 'audio'")
            _unknown_keys(p, _PART_KEYS, pat)
            if "audio" not in p and any(k in p for k in ("start", "end")):
                raise ChatError("bad_field", f"{pat}: 'start'/'end' need an 'audio' path")
            if "audio" in p:
                if role == "system":
                    raise ChatError("bad_field", f"{pat}: system turns are text only; move the audio to a user turn")
                spans.append(_span(p, pat, base_dir, audio_list))
                parts.append(Part(spans[-1].text, len(spans) - 1))
            else:
                text = _text(p.get("text"), pat)
                if not text:
                    raise ChatError("empty_turn", f"{pat} is empty: give it non-empty 'text' and/or an 'audio' span")
                parts.append(Part(text))
        if not parts:
            raise ChatError("empty_turn", f"{at} is empty: give it 'text' and/or 'audio' (or a 'content' list)")
        loss = t.get("audio_loss")
        if loss is not None and (role != "assistant" or not isinstance(loss, bool)):
            raise ChatError("bad_field", f"{at}: 'audio_loss' is true or false, and only on assistant turns")
        if role == "system" and i:
            raise ChatError("bad_field", f"{at}: a system turn may only be the first turn")
        turns.append(Turn(role, tuple(parts), loss))
    if need_reply:
        if not any(t.role == "assistant" for t in turns):
            raise ChatError("no_assistant_turn", f"{where}: no assistant turn; a chat row trains on the assistant's "
                                                 "replies, so it needs at least one")
        if turns[-1].role != "assistant":
            raise ChatError("bad_field", f"{where}: the last turn is a {turns[-1].role} turn; end the row with the "
                                         "assistant's reply (turns after it would carry no loss)")
    return tuple(turns), tuple(spans)


def to_meta(turns) -> list[dict]:
    """JSON form of turns inside a prepared LM record (spans are the record's segments, by index)."""
    return [{"role": t.role, "parts": [[p.text, p.span] for p in t.parts], "audio_loss": t.audio_loss}
            for t in turns]


def from_meta(meta_turns) -> tuple[Turn, ...]:
    return tuple(Turn(t["role"], tuple(Part(text, span) for text, span in t["parts"]), t.get("audio_loss"))
                 for t in meta_turns)


def to_json(turns, spans) -> list[dict]:
    """Turns in the schema above (every part written out in `content`, audio as the spans' paths)."""
    out = []
    for t in turns:
        content = []
        for p in t.parts:
            if p.span is None:
                content.append({"text": p.text})
                continue
            s = spans[p.span]
            part = {"audio": s.path, "start": s.start} | ({"end": s.end} if s.end is not None else {})
            content.append(part | ({"text": p.text} if p.text else {}))
        out.append({"role": t.role, "content": content}
                   | ({"audio_loss": t.audio_loss} if t.audio_loss is not None else {}))
    return out


def load_history(path: str) -> tuple[tuple[Turn, ...], tuple[Span, ...]]:
    """A `--history` file: a JSON list of turns (or an object with 'turns', e.g. a chat manifest row); its
    relative audio paths are relative to the file. Raises ChatError naming the file and the turn."""
    from bajax.audio.io import read_bytes

    try:
        obj = json.loads(read_bytes(path).decode("utf-8"))
    except FileNotFoundError as e:
        raise ChatError("missing", f"{path}: file not found; pass a JSON list of turns") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ChatError("malformed_json", f"{path}: not a UTF-8 JSON file ({e}); pass a JSON list of turns") from e
    if isinstance(obj, dict):
        obj = obj.get("turns")
    if obj == []:
        return (), ()
    return parse_turns(obj, path, base_dir=posixpath.dirname(str(path)), need_reply=False)
