"""The chat SFT example: dialogues derived from the embedded corpus, shipped as bajax/data/corpus/chat.jsonl.

    python -m bajax.data.chat_corpus            # rewrites bajax/data/corpus/chat.jsonl from manifest.jsonl
    bajax train --config configs/lm/tiny.py:sft --workdir runs/lm_sft   # data.source='embedded-chat'

The corpus has no recording of any answer (its `aqa` rows are a spoken question and a TEXT response), so the
example has two kinds of rows, one per document, split as their document:
- `<doc>-qa` (question documents): system, then for each question of the document a spoken user turn (its
  span of the question recording) and the assistant's answer as TEXT (`<C_A> answer`, no speech: there is
  none to train on). Multi-turn with text-only replies: trains the spoken-question understanding and the
  turn structure.
- `<doc>-read` (the other documents): system, then twice a typed request to read a sentence aloud and the
  assistant's SPOKEN reply: the sentence and its recording (`<audiotext_start> <C_A> text <audiogen_start>
  frames <audiogen_end>`). These carry the audio loss.
Every row opens with the system prompt `bajax generate` uses (bajax.data.chat.DEFAULT_SYSTEM), so a model
fine-tuned on it is prompted as it was trained.
"""

from __future__ import annotations

import collections
import json
import pathlib

from bajax.data.chat import DEFAULT_SYSTEM

READ = {"en": ("Read this sentence aloud: {}", "And now this one: {}"),
        "zh": ("请朗读这句话：{}", "再读这一句：{}")}


def _spoken(path: str, seg: dict) -> dict:
    return {"audio": path, "start": seg["start"], "end": seg["end"]}


def chat_rows(corpus_rows: list[dict]) -> list[dict]:
    """Chat manifest rows (see the module docstring) from the embedded corpus's manifest rows."""
    system = {"role": "system", "text": DEFAULT_SYSTEM}
    questions = collections.defaultdict(list)   # question recording -> its aqa rows in order
    out = []
    for r in corpus_rows:
        if r["task"] == "aqa":
            questions[r["audio"][0]].append(r)
    for path, rows in questions.items():
        turns = [system]
        for r in rows:
            seg = r["segments"][0]
            turns.append({"role": "user", **_spoken(path, seg), "text": seg["text"]})
            turns.append({"role": "assistant", "text": r["response"]})
        out.append({"id": rows[0]["id"].rsplit("-aqa", 1)[0] + "-qa", "task": "chat",
                    "language": rows[0]["language"], "split": rows[0]["split"], "turns": turns})
    for r in corpus_rows:
        if r["task"] != "tts" or len(r["segments"]) < 2:
            continue
        path, lang = r["audio"][0], r["language"]
        turns = [system]
        for ask, seg in zip(READ["zh" if lang == "zh" else "en"], r["segments"][:2]):
            turns.append({"role": "user", "text": ask.format(seg["text"])})
            turns.append({"role": "assistant", "text": seg["text"], **_spoken(path, seg)})
        out.append({"id": r["id"].rsplit("-tts", 1)[0] + "-read", "task": "chat", "language": lang,
                    "split": r["split"], "turns": turns})
    return out


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    corpus = pathlib.Path(__file__).resolve().parent / "corpus"
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chat = chat_rows(rows)
    (corpus / "chat.jsonl").write_text(render(chat))
    print(f"wrote {corpus / 'chat.jsonl'}: {len(chat)} chat rows")


if __name__ == "__main__":
    main()
