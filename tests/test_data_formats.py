"""Task formats: layouts and loss weights against hand-written expectations; text tokenizers."""

import numpy as np
import pytest

from bajax.data import formats
from bajax.data import text as text_lib
from bajax.lm import special_tokens

SIZES = (16,) * 8
TOK = text_lib.ByteTokenizer(512)
S = (
    TOK.special
)  # endoftext 499 ... audio_start 503, audio_end 504, audio_pad 505, audiogen_start 510, _end 511
EOS, AS, AE, PAD, GS, GE = (
    S[k] for k in ("endoftext", "audio_start", "audio_end", "audio_pad", "audiogen_start", "audiogen_end")
)


def frames(*rows):
    return np.array([[r] * 8 for r in rows], np.int32) + np.arange(8)[None]  # frame r: codes r, r+1, ..., r+7


def fmt(task, texts, codes, seq_len=64, **meta):
    m = {"task": task, "texts": texts, "language": "en", "prompt": "", "response": "", **meta}
    return formats.format_sample(m, codes, TOK, codebook_sizes=SIZES, seq_len=seq_len)


def audio_expect(n, loss_at):
    """(targets, weights) with frame targets {pos: frame row} and end-of-audio {pos: 'eoa'}."""
    t, w = np.zeros((n, 8), np.int32), np.zeros((n, 8), np.float32)
    for pos, row in loss_at.items():
        if row == "eoa":
            t[pos, 0], w[pos, 0] = 16, 1.0
        else:
            t[pos], w[pos] = frames(row)[0], 1.0
    return t, w


def check(out, tokens, text_targets, text_weights, audio=None):
    np.testing.assert_array_equal(out["tokens"], tokens)
    np.testing.assert_array_equal(out["text_targets"], text_targets)
    np.testing.assert_array_equal(out["text_weights"], text_weights)
    t, w = audio if audio is not None else audio_expect(len(tokens), {})
    np.testing.assert_array_equal(out["audio_targets"], t)
    np.testing.assert_array_equal(out["audio_weights"], w)
    is_frame = out["tokens"] == PAD
    assert not out["audio_codes"][~is_frame].any()


def test_asr():
    out = fmt("asr", ["hi"], [frames(1, 2)], prompt="P")
    check(
        out,
        [80, AS, PAD, PAD, AE, 104, 105, EOS],
        [AS, PAD, PAD, AE, 104, 105, EOS, 0],
        [0, 0, 0, 0, 1, 1, 1, 0],
    )
    np.testing.assert_array_equal(out["audio_codes"][2:4], frames(1, 2))


def test_aqa_and_s2tt_default_prompts():
    out = fmt("aqa", ["q"], [frames(1)], response="ok")
    assert TOK.decode(out["tokens"]).startswith(formats.DEFAULT_PROMPTS["aqa"] + "<audio_start>")
    assert TOK.decode(out["tokens"]).endswith("<audio_end>ok<endoftext>")
    assert out["text_weights"].sum() == 3  # "o", "k", eos
    out = fmt("s2tt", ["hello"], [frames(1)], response="ni", response_language="zh")
    assert TOK.decode(out["tokens"]).startswith("Translate the speech into Chinese.<audio_start>")
    assert out["text_weights"].sum() == 3 and not out["audio_weights"].any()


def test_intlv_no_audio_loss():
    out = fmt("intlv", ["a", "b", "c"], [frames(1), frames(2), frames(3)])
    check(
        out, [AS, PAD, AE, 98, AS, PAD, AE, EOS], [PAD, AE, 98, AS, PAD, AE, EOS, 0], [0, 0, 1, 0, 0, 0, 0, 0]
    )


def test_tts():
    out = fmt("tts", ["hi"], [frames(1, 2)])
    check(
        out,
        [104, 105, GS, PAD, PAD, GE, EOS],
        [105, GS, PAD, PAD, GE, EOS, 0],
        [0, 1, 0, 0, 0, 1, 0],
        audio_expect(7, {2: 1, 3: 2, 4: "eoa"}),
    )


def test_itts_no_loss_on_first_text_only():
    out = fmt("itts", ["a", "b"], [frames(1), frames(3)])
    check(
        out,
        [97, GS, PAD, GE, 98, GS, PAD, GE, EOS],
        [GS, PAD, GE, 98, GS, PAD, GE, EOS, 0],
        [1, 0, 0, 1, 1, 0, 0, 1, 0],
        audio_expect(9, {1: 1, 2: "eoa", 5: 3, 6: "eoa"}),
    )


def test_pure_audio():
    out = fmt("audio", [""], [frames(4, 5)])
    check(
        out,
        [GS, PAD, PAD, GE, EOS],
        [PAD, PAD, GE, EOS, 0],
        [0, 0, 0, 1, 0],
        audio_expect(5, {0: 4, 1: 5, 2: "eoa"}),
    )


def test_text_only_task_has_loss_on_every_text_target():
    out = fmt("text", ["hi", "yo"], [])
    check(out, [104, 105, 32, 121, 111, EOS], [105, 32, 121, 111, EOS, 0], [1, 1, 1, 1, 1, 0])


def test_text_only_mixture_reads_asr_transcripts(tmp_path):
    from bajax.data import config, lm_pipeline, prepare
    from tests import data_testing as testing

    m = testing.write_manifest(str(tmp_path / "c"), per_task=2, valid=0)
    prepare.prepare(m, str(tmp_path / "p"), encode_fn=testing.FakeEncoder(), workers=0, progress=False)
    c = config.default_data_config()
    c.source = str(tmp_path / "p")
    c.mixture = {k: 0.0 for k in c.mixture} | {"text": 1.0}
    ds = lm_pipeline.lm_records(c, process_index=0, process_count=1)
    meta, codes = ds[0]
    assert meta["task"] == "text" and codes == [] and meta["texts"][0].startswith("asr sample")


def test_no_text_loss_on_audio_targets_any_task():
    for task in ("asr", "tts", "itts", "intlv", "audio"):
        out = fmt(task, ["ab", "cd", "ef"], [frames(1, 2), frames(3), frames(4)], response="x")
        closing = np.isin(out["text_targets"], [PAD, AE, GE])
        assert not out["text_weights"][closing].any(), task
        # an end-of-audio target weighs codebook 0 only
        eoa = out["audio_targets"][:, 0] == 16
        assert not out["audio_weights"][eoa, 1:].any()


def test_truncation_keeps_true_targets():
    full = fmt("tts", ["hello"], [frames(*range(10))])
    cut = fmt("tts", ["hello"], [frames(*range(10))], seq_len=9)
    for k in full:
        np.testing.assert_array_equal(cut[k], full[k][:9])


def test_hf_tokenizer_json(tmp_path):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    words = ["hello", "world", "the", "cat", "."]
    tok = tokenizers.Tokenizer(
        models.WordLevel({w: i for i, w in enumerate(["[UNK]"] + words)}, unk_token="[UNK]")
    )
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    with pytest.raises(ValueError, match="lacks the special tokens"):
        text_lib.make(str(path), vocab="qwen", vocab_size=100)
    tok.add_special_tokens([special_tokens.TEXT[n] for n in special_tokens.NAMES])
    tok.save(str(path))
    hf = text_lib.make(str(path), vocab="custom", vocab_size=100)
    assert hf.special["endoftext"] == 6 and hf.special["audiogen_end"] == 18
    np.testing.assert_array_equal(hf.encode("hello the cat"), [1, 3, 4])
    out = formats.format_sample(
        {"task": "tts", "texts": ["the cat"], "language": "en"},
        [frames(1)],
        hf,
        codebook_sizes=SIZES,
        seq_len=32,
    )
    assert out["tokens"].tolist() == [
        3,
        4,
        hf.special["audiogen_start"],
        hf.special["audio_pad"],
        hf.special["audiogen_end"],
        hf.special["endoftext"],
    ]
    with pytest.raises(ValueError, match="differ from the Qwen ids"):
        text_lib.make(str(path), vocab="qwen", vocab_size=100)
    with pytest.raises(ValueError, match="needs model.vocab='bytes'"):
        text_lib.make("bytes", vocab="qwen", vocab_size=152064)


def test_byte_tokenizer_roundtrip():
    ids = TOK.encode("héllo 你好")
    assert ids.max() < 256 and TOK.decode(ids) == "héllo 你好"
    assert TOK.decode([104, S["audio_pad"], 105]) == "h<audio_pad>i"
