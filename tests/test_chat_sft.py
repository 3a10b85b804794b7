"""Supervised chat fine-tuning (issue 20 item 4): the `chat` manifest task, its layout and loss weights, the
SFT presets and example, and `bajax generate --history`.

The layout tests use the byte tokenizer and fixed codes (milliseconds). The end-to-end tests share one
module-scoped set of runs trained two steps each: a tokenizer, a flow decoder on it, and the tiny LM through
the `configs/lm/tiny.py:sft` preset (its chat example is prepared once into the bajax cache, ~45 s).
"""

import json
import re

import absl.flags
import jax
import numpy as np
import pytest

from bajax import config as config_lib
from bajax.data import chat, chat_corpus, formats, manifest, prepare, sources
from bajax.data import config as data_config
from bajax.data import pipeline as data_pipeline
from bajax.data.text import ByteTokenizer
from bajax.lm import batch as lm_batch
from bajax.speech import conversation
from bajax.speech import generate as gen
from tests import data_testing as testing

absl.flags.FLAGS.mark_as_parsed()

TOK = ByteTokenizer(384)
S = TOK.special
SIZES = (64,) * 8


def _row(turns, **kw):
    return json.dumps({"id": "c1", "task": "chat", "language": "en", "turns": turns, **kw})


def _entry(turns, base="/data", **kw):
    return manifest.parse_line(_row(turns, **kw), 7, base)


def _format(entry, codes, audio_loss="itts", seq_len=512):
    meta = {"task": "chat", "texts": [s.text for s in entry.segments], "turns": chat.to_meta(entry.turns)}
    return formats.format_sample(meta, codes, TOK, codebook_sizes=SIZES, seq_len=seq_len, chat_audio_loss=audio_loss)


def _b(text):
    return TOK.encode(text).tolist()


# A conversation with every kind of part: spoken question, spoken two-part reply, typed question, spoken reply.
TURNS = [
    {"role": "system", "text": "Be brief."},
    {"role": "user", "audio": "q.wav", "start": 0.0, "end": 0.5, "text": "Hello?"},
    {"role": "assistant", "content": [{"text": "Hi,", "audio": "a.wav", "end": 0.4},
                                      {"text": " friend.", "audio": "a.wav", "start": 0.4}]},
    {"role": "user", "text": "More?"},
    {"role": "assistant", "text": "Yes.", "audio": "b.wav"},
]
FRAMES = (2, 3, 1, 4)   # frames of the four audio spans, in order of appearance


def _codes():
    return [np.full((n, 8), 10 + i, np.int32) for i, n in enumerate(FRAMES)]


def _expected_tokens():
    """The reference layout written out (Baichuan-Omni-1.5 web_demo: role_prefix + preprocess_messages)."""
    pad = lambda n: [S["audio_pad"]] * n
    return ([S["B_SYS"], *_b("Be brief."), S["C_Q"], S["audio_start"], *pad(2), S["audio_end"],
             S["audiotext_start"], S["C_A"], *_b("Hi,"), S["audiogen_start"], *pad(3), S["audiogen_end"],
             *_b(" friend."), S["audiogen_start"], *pad(1), S["audiogen_end"],
             S["C_Q"], *_b("More?"),
             S["audiotext_start"], S["C_A"], *_b("Yes."), S["audiogen_start"], *pad(4), S["audiogen_end"],
             S["endoftext"]])


# ------------------------------------------------------------------------------------------------ layout

def test_chat_row_layout_token_by_token_and_equal_to_the_generate_prompt(tmp_path):
    entry = _entry(TURNS)
    assert entry.audio == ("/data/q.wav", "/data/a.wav", "/data/b.wav")
    assert [(s.audio, s.start, s.end) for s in entry.segments] == [(0, 0.0, 0.5), (1, 0.0, 0.4), (1, 0.4, None),
                                                                   (2, 0.0, None)]
    out = _format(entry, _codes())
    assert out["tokens"].tolist() == _expected_tokens()
    frames = out["tokens"] == S["audio_pad"]
    np.testing.assert_array_equal(out["audio_codes"][frames][:, 0], np.repeat(10 + np.arange(4), FRAMES))

    # `bajax generate`: the same conversation up to the last user turn, then the opening of a spoken reply,
    # is the row's prefix token for token and code for code.
    tokens, codes = gen.chat_prompt(entry.turns[:-1], _codes()[:3], TOK)
    n = len(tokens)
    assert out["tokens"][:n].tolist() == tokens.tolist()
    assert tokens[-2:].tolist() == [S["audiotext_start"], S["C_A"]]
    np.testing.assert_array_equal(out["audio_codes"][:n], codes)
    # ... and the single-turn spoken prompt is the chat prompt of [system, spoken question].
    q, q_codes = gen.audio_prompt(_codes()[0], TOK, "Be brief.")
    assert q.tolist() == _expected_tokens()[:len(q)] and q[-1] == S["C_A"]
    np.testing.assert_array_equal(q_codes, out["audio_codes"][:len(q)])


def test_history_file_gives_the_same_tokens_as_the_manifest_row(tmp_path):
    """A --history file holding the row's first turns plus the new --audio turn = the row's prompt prefix."""
    enc = testing.FakeEncoder()
    for name, secs in (("q.wav", 0.7), ("a.wav", 0.9), ("b.wav", 0.5)):
        testing.audio_io.write(str(tmp_path / name), testing.tone(secs, 220 + 100 * secs), 16000)
    spoken_last = [*TURNS[:3], {"role": "user", "audio": "b.wav"}, {"role": "assistant", "text": "Yes."}]
    entry = _entry(spoken_last, base=str(tmp_path))
    waves = [conversation._span_wave(chat.Span(entry.audio[s.audio], s.start, s.end, ""), i, "row")
             for i, s in enumerate(entry.segments)]
    row = _format(entry, [enc(w) for w in waves])
    (tmp_path / "h.json").write_text(json.dumps(TURNS[:3]))
    history = conversation.read(str(tmp_path / "h.json"))
    tokens, codes = conversation.prompt(history, TOK, enc, path="h.json", system="unused", max_len=512,
                                        wave=waves[-1])
    n = len(tokens)
    assert row["tokens"][:n - 2].tolist() == tokens[:-2].tolist()   # the row's reply is text: <C_A> only
    np.testing.assert_array_equal(row["audio_codes"][:n - 2], codes[:-2])
    # A history without a system turn gets --system first, as the single-turn spoken prompt does.
    (tmp_path / "h0.json").write_text("[]")
    t0, _ = conversation.prompt(conversation.read(str(tmp_path / "h0.json")), TOK, enc, path="h0.json",
                                system="Be brief.", max_len=512, wave=waves[0])
    assert t0.tolist() == gen.audio_prompt(enc(waves[0]), TOK, "Be brief.")[0].tolist()


def test_loss_weights_only_on_assistant_turns():
    out = _format(_entry(TURNS), _codes())
    tok = out["tokens"]
    # Which input tokens belong to an assistant reply (after its <C_A>, up to the next role token).
    reply = np.zeros(len(tok), bool)
    inside = False
    for i, t in enumerate(tok):
        if t in (S["C_Q"], S["B_SYS"], S["audiotext_start"]):
            inside = False
        reply[i] = inside
        if t == S["C_A"]:
            inside = True
    reply[-1] = True   # the closing <|endoftext|> ends the last reply
    # Text loss: position t predicts t + 1; weight where the target is reply text, <audiogen_start> or eos.
    target_is = np.zeros(len(tok), bool)
    target_is[:-1] = reply[1:] & ~np.isin(tok[1:], [S["audio_pad"], S["audiogen_end"]])
    np.testing.assert_array_equal(out["text_weights"] > 0, target_is)
    assert out["text_targets"][out["text_weights"] > 0].tolist() == [
        *_b("Hi,"), S["audiogen_start"], *_b(" friend."), S["audiogen_start"], *_b("Yes."), S["audiogen_start"],
        S["endoftext"]]
    # Audio loss: every frame of the replies (3 + 1 + 4) and each segment's end-of-audio; the question's none.
    aw = out["audio_weights"]
    assert aw.sum(0).tolist() == [8 + 3, 8, 8, 8, 8, 8, 8, 8]
    assert (out["audio_targets"][aw[:, 0] > 0, 0] == 64).sum() == 3   # end-of-audio = codebook 0's size
    first_q_frame = int(np.argmax(tok == S["audio_pad"]))
    assert aw[first_q_frame - 1:first_q_frame + 2].sum() == 0


@pytest.mark.parametrize("policy,spoken", [("itts", (True, True)), ("intlv", (False, False)),
                                           ("last", (False, True))])
def test_audio_loss_choice(policy, spoken):
    """data.chat_audio_loss picks which replies' speech carries audio loss; text loss never changes."""
    ref = _format(_entry(TURNS), _codes())
    out = _format(_entry(TURNS), _codes(), audio_loss=policy)
    np.testing.assert_array_equal(out["text_weights"], ref["text_weights"])   # incl. <audiogen_start>, eos
    gen_open = np.flatnonzero(out["tokens"] == S["audiogen_start"])
    first_reply = out["audio_weights"][gen_open[0]:gen_open[2]].sum()
    last_reply = out["audio_weights"][gen_open[2]:].sum()
    assert (first_reply > 0, last_reply > 0) == spoken
    if spoken == (True, True):
        assert first_reply == 8 * 4 + 2 and last_reply == 8 * 4 + 1
    # A turn's own `audio_loss` wins over the policy.
    turns = [*TURNS[:2], {**TURNS[2], "audio_loss": False}, TURNS[3], {**TURNS[4], "audio_loss": True}]
    own = _format(_entry(turns), _codes(), audio_loss=policy)
    assert own["audio_weights"][:gen_open[2]].sum() == 0 and own["audio_weights"][gen_open[2]:].sum() == 33
    with pytest.raises(ValueError, match="data.chat_audio_loss='all'"):
        _format(_entry(TURNS), _codes(), audio_loss="all")


@pytest.mark.parametrize("turns,reason,message", [
    ([{"role": "user", "text": "Hi"}, {"role": "bot", "text": "Hello"}], "unknown_role",
     r"line 7 \(id 'c1'\): turn 1 has unknown role 'bot'; use one of system, user, assistant"),
    ([{"role": "user", "text": "Hi"}, {"role": "assistant", "text": "  "}], "empty_turn",
     r"turn 1 \(assistant\) is empty: give it non-empty 'text' and/or an 'audio' span"),
    ([{"role": "user", "text": "Hi"}, {"role": "assistant"}], "empty_turn",
     r"turn 1 \(assistant\) is empty: give it 'text' and/or 'audio'"),
    ([{"role": "user", "text": "Hi"}, {"role": "assistant", "content": []}], "empty_turn", r"turn 1 .* is empty"),
    ([{"role": "system", "text": "S"}, {"role": "user", "audio": "q.wav"}], "no_assistant_turn",
     r"no assistant turn; a chat row trains on the assistant's replies"),
    ([{"role": "user", "text": "Hi"}, {"role": "assistant", "text": "Yo"}, {"role": "user", "text": "?"}],
     "bad_field", r"the last turn is a user turn; end the row with the assistant's reply"),
    ([{"role": "user", "text": "Hi"}, {"role": "system", "text": "S"}, {"role": "assistant", "text": "Yo"}],
     "bad_field", r"turn 1 \(system\): a system turn may only be the first turn"),
    ([{"role": "system", "audio": "s.wav"}, {"role": "assistant", "text": "Yo"}], "bad_field",
     r"system turns are text only"),
    ([{"role": "user", "txt": "Hi"}, {"role": "assistant", "text": "Yo"}], "bad_field",
     r"turn 0 \(user\): unknown key\(s\) \['txt'\]; valid keys: role, text, audio"),
    ([{"role": "user", "text": "Hi", "content": ["x"]}, {"role": "assistant", "text": "Yo"}], "bad_field",
     r"either 'content' or 'text'/'audio'"),
    ([{"role": "user", "text": "Hi", "audio_loss": True}, {"role": "assistant", "text": "Yo"}], "bad_field",
     r"'audio_loss' is true or false, and only on assistant turns"),
    ([{"role": "user", "audio": "q.wav", "start": 2, "end": 1}, {"role": "assistant", "text": "Yo"}],
     "empty_audio", r"turn 0 \(user\): audio span \[2, 1\] is empty"),
    ([{"role": "user", "audio": 3}, {"role": "assistant", "text": "Yo"}], "bad_field",
     r"audio index 3 is outside the row's 'audio' list"),
    ("hello", "bad_field", r"'turns' must be a non-empty list"),
])
def test_bad_chat_rows_are_rejected_with_clear_messages(turns, reason, message):
    with pytest.raises(manifest.ManifestError, match=message) as e:
        _entry(turns)
    assert e.value.reason == reason


def test_bad_rows_are_counted_by_reason_and_good_ones_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    good = _row([{"role": "user", "text": "Hi"}, {"role": "assistant", "text": "Yo"}])
    bad = _row([{"role": "user", "text": "Hi"}, {"role": "robot", "text": "Yo"}]).replace('"c1"', '"c2"')
    stray = json.dumps({"id": "c3", "task": "chat", "segments": [], "turns": []})
    path.write_text("\n".join([good, bad, stray]) + "\n")
    entries, rejects = manifest.read(str(path))
    assert [e.id for e in entries] == ["c1"] and not entries[0].segments   # a text-only dialogue is fine
    assert [r for r, _ in rejects] == ["unknown_role", "bad_field"]
    assert "a chat row has 'turns', not ['segments']" in rejects[1][1]


def test_history_errors_name_the_file_and_the_turn(tmp_path):
    h = tmp_path / "h.json"
    h.write_text(json.dumps([{"role": "user", "audio": "missing.wav"}]))
    with pytest.raises(conversation.HistoryError, match=r"--history .*h.json: audio span 0 names .*missing.wav"):
        conversation.read(str(h))
    h.write_text(json.dumps({"turns": [{"role": "narrator", "text": "x"}]}))
    with pytest.raises(conversation.HistoryError, match=r"h.json: turn 0 has unknown role 'narrator'"):
        conversation.read(str(h))
    h.write_text("[{]")
    with pytest.raises(conversation.HistoryError, match=r"h.json: not a UTF-8 JSON file"):
        conversation.read(str(h))
    with pytest.raises(conversation.HistoryError, match=r"nowhere.json: file not found"):
        conversation.read(str(tmp_path / "nowhere.json"))


# ------------------------------------------------------------------------------- prepare + LM pipeline

def _tiny_chat_manifest(root):
    """4 train + 1 valid dialogues over synthetic tones: spoken and typed questions, spoken and text replies."""
    rows = []
    for j in range(5):
        q, a = f"audio/q{j}.wav", f"audio/a{j}.flac"
        testing.audio_io.write(f"{root}/{q}", testing.tone(0.6 + 0.1 * j, 200 + 20 * j, seed=j), 16000)
        testing.audio_io.write(f"{root}/{a}", testing.tone(1.0, 300 + 20 * j, seed=10 + j), 22050)
        turns = [{"role": "system", "text": "Be brief."},
                 {"role": "user", "audio": q, "text": f"question {j}"},
                 {"role": "assistant", "text": f"answer {j}."},
                 {"role": "user", "text": "Say it."},
                 {"role": "assistant", "content": [{"text": "Part one,", "audio": a, "end": 0.5},
                                                   {"text": " part two.", "audio": a, "start": 0.5}]}]
        rows.append({"id": f"chat{j}", "task": "chat", "language": "en", "split": "valid" if j == 4 else "train",
                     "turns": turns})
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root / "chat.jsonl")


def test_prepare_and_lm_pipeline_on_a_tiny_chat_manifest(tmp_path):
    (tmp_path / "c" / "audio").mkdir(parents=True)
    m = _tiny_chat_manifest(tmp_path / "c")
    summary = prepare.prepare(m, str(tmp_path / "p"), encode_fn=testing.FakeEncoder(), workers=0, progress=False)
    assert summary["tasks"]["train/chat"]["samples"] == 4 and summary["tasks"]["valid/chat"]["samples"] == 1
    assert summary["tasks"]["train/chat"]["segments"] == 12 and not summary["rejected"]
    c = data_config.default_data_config()
    c.source = str(tmp_path / "p")
    for task in c.mixture:
        c.mixture[task] = 1.0 if task == "chat" else 0.0
    kw = dict(vocab="bytes", vocab_size=512, codebook_sizes=testing.CODEBOOK_SIZES)
    b = next(iter(data_pipeline.lm_dataset(c, batch_size=2, seq_len=256, **kw)))
    lm_batch.check(b)
    special = ByteTokenizer(512).special
    dialogues = (b["tokens"] == special["B_SYS"]).sum()
    assert dialogues >= 2 and (b["tokens"] == special["C_A"]).sum() == 2 * dialogues   # two replies each
    assert b["text_weights"].sum() > 0 and b["audio_weights"].sum() > 0
    # Loss stays inside the replies: no target is a role token, the question's audio carries no audio loss.
    targets = b["text_targets"][b["text_weights"] > 0]
    assert not np.isin(targets, [special[k] for k in ("B_SYS", "C_Q", "C_A", "audio_start", "audio_pad")]).any()
    q_open = np.argwhere(b["tokens"] == special["audio_start"])
    assert all(b["audio_weights"][r, i:i + 4].sum() == 0 for r, i in q_open)
    # The INTLV-style choice reaches the pipeline: text loss only.
    c.chat_audio_loss = "intlv"
    b2 = next(iter(data_pipeline.lm_dataset(c, batch_size=2, seq_len=256, **kw)))
    np.testing.assert_array_equal(b2["tokens"], b["tokens"])
    np.testing.assert_array_equal(b2["text_weights"], b["text_weights"])
    assert b2["audio_weights"].sum() == 0
    c.chat_audio_loss = "some"
    with pytest.raises(ValueError, match=r"data.chat_audio_loss='some'; use one of \('itts', 'intlv', 'last'\)"):
        data_pipeline.lm_dataset(c, batch_size=2, seq_len=256, **kw)


def test_shipped_chat_example_is_derived_from_the_corpus():
    root = sources.corpus_dir()
    rows = [json.loads(x) for x in (root / sources.CORPUS_MANIFEST).read_text().splitlines() if x.strip()]
    assert (root / sources.CHAT_MANIFEST).read_text() == chat_corpus.render(chat_corpus.chat_rows(rows))
    entries, rejects = manifest.read(str(root / sources.CHAT_MANIFEST))
    assert not rejects and {e.split for e in entries} == {"train", "valid"}
    spoken = [e for e in entries if any(p.span is not None for t in e.turns if t.role == "assistant"
                                        for p in t.parts)]
    assert 0 < len(spoken) < len(entries)   # read-aloud rows speak; question rows answer in text
    assert all(e.turns[0].parts[0].text == gen.DEFAULT_SYSTEM for e in entries)


def test_sft_presets():
    for path in ("configs/lm/tiny.py:sft", "configs/lm/small.py:sft", "configs/lm/7b.py:sft"):
        c = config_lib.load(path, [])
        assert {t for t, w in c.data.mixture.items() if w > 0} == {"chat"}, path
        assert c.train.eval_tasks == ("chat",) and c.train.stage == "", path
    assert config_lib.load("configs/lm/tiny.py:sft", []).data.source == "embedded-chat"


# ---------------------------------------------------------------------------------------- trained runs

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tokenizer and flow runs, and the tiny LM through `configs/lm/tiny.py:sft`, two steps each."""
    from bajax.train.trainer import train

    root = tmp_path_factory.mktemp("sft_runs")
    one = jax.devices()[:1]
    fast = ["train.steps=2", "train.batch_size=2", "train.eval_every=0", "checkpoint.async_save=false",
            "metrics.tensorboard=false"]
    tok = config_lib.load("configs/tokenizer/tiny.py", fast + [
        "data.audio.crop_seconds=0.8", "model.rvq.codebook_sizes=(64, 64, 64, 64, 64, 64, 64, 64)"])
    train(tok, str(root / "tok"), quiet=True, devices=one)
    lm = config_lib.load("configs/lm/tiny.py:sft", fast + ["data.seq_len=256", "train.eval_every=2",
                                                           "train.eval_batches=1"])
    train(lm, str(root / "lm"), quiet=True, devices=one)
    flow = config_lib.load("configs/flow/tiny.py", fast + [
        "data.audio.crop_seconds=0.8", "model.cond_source=tokenizer", "model.cond_dim=64",
        f"model.tokenizer_checkpoint={root / 'tok'}"])
    train(flow, str(root / "flow"), quiet=True, devices=one)
    return {name: str(root / name) for name in ("tok", "lm", "flow")}


@pytest.mark.slow
def test_sft_preset_trains_on_the_chat_example(runs):
    with open(f"{runs['lm']}/metrics.jsonl") as f:
        rows = [json.loads(x) for x in f if x.strip()]
    train_rows = [r for r in rows if "loss" in r]
    assert train_rows and all(np.isfinite(r["loss"]) for r in train_rows)
    assert any(r.get("audio_loss", 0) > 0 for r in train_rows)   # read-aloud replies carry audio loss
    assert any("eval_loss" in r for r in rows)                  # held-out chat rows (valid split)


def _generate(args, capsys):
    from bajax import cli

    code = cli.main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_bajax_generate_continues_a_conversation(runs, tmp_path, capsys):
    corpus = sources.corpus_dir()
    history = tmp_path / "h.json"
    history.write_text(json.dumps([
        {"role": "system", "text": gen.DEFAULT_SYSTEM},
        {"role": "user", "audio": str(corpus / "audio/q0005-en.flac"), "start": 0.0, "end": 1.3382},
        {"role": "assistant", "text": "Four plus one is 5."}]))
    model = ["--lm", runs["lm"], "--flow", runs["flow"], "--tokenizer", runs["tok"], "--max-len", "400",
             "--max-frames", "4", "--max-text-tokens", "6", "--greedy"]
    # --max-len 240: the prompt is ~180 tokens, the untrained reply runs to the limit (it never says eos).
    code, stdout, err = _generate([*model, "--max-len", "240", "--audio", str(corpus / "audio/q0011-en.flac"),
                                   "--history",
                                   str(history), "--history-out", str(tmp_path / "h2.json"), "-o",
                                   str(tmp_path / "a1.wav")], capsys)
    assert code == 0, err
    assert re.search(r"wrote .*a1.wav: .*; history .*h2.json", stdout)
    h2 = json.loads((tmp_path / "h2.json").read_text())
    assert [t["role"] for t in h2] == ["system", "user", "assistant", "user", "assistant"]
    assert h2[3]["audio"].endswith("q0011-en.flac")
    spans = [p for p in h2[4]["content"] if "audio" in p]
    assert all(p["audio"] == str(tmp_path / "a1.wav") and p["end"] > p["start"] for p in spans)
    # The written history is valid input: continue with a typed turn (no system turn added twice).
    turns, _ = conversation.read(str(tmp_path / "h2.json"))
    assert [t.role for t in turns] == ["system", "user", "assistant", "user", "assistant"]
    code, stdout, err = _generate([*model, "--text", "And five plus five?", "--history", str(tmp_path / "h2.json"),
                                   "-o", str(tmp_path / "a2.wav")], capsys)
    assert code == 0, err
    # Errors name the flag and the fix, before any model is loaded.
    code, _, err = _generate([*model, "--text", "Hi.", "--history-out", str(tmp_path / "x.json"), "-o",
                              str(tmp_path / "x.wav")], capsys)
    assert code == 2 and "--history-out needs --history" in err
    (tmp_path / "bad.json").write_text(json.dumps([{"role": "user"}]))
    code, _, err = _generate([*model, "--text", "Hi.", "--history", str(tmp_path / "bad.json"), "-o",
                              str(tmp_path / "x.wav")], capsys)
    assert code == 2 and re.search(r"--history .*bad.json: turn 0 \(user\) is empty", err)
    code, _, err = _generate([*model, "--max-len", "40", "--text", "Hi.", "--history", str(history), "-o",
                              str(tmp_path / "x.wav")], capsys)
    assert code == 2 and "over --max-len 40; drop early turns from the history or raise --max-len" in err
