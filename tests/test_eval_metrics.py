"""Objective speech metrics (bajax/eval: quality, f0, speaker, mos, text, asr): the checks each must pass.

The speech is the embedded espeak-ng corpus. Each test skips when the `eval` extra (pip install 'bajax[eval]')
it needs is missing; the whisper test also needs torch/transformers.
"""

import importlib.util
import sys

import numpy as np
import pytest

from bajax.audio import io as audio_io
from bajax.audio.resample import resample
from bajax.data import manifest, sources

SR = 16000


def needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {missing} (pip install 'bajax[eval]')")


@pytest.fixture(scope="module")
def corpus():
    """{entry id: Entry} of the embedded corpus manifest."""
    entries, _ = manifest.read(str(sources.corpus_dir() / sources.CORPUS_MANIFEST))
    return {e.id: e for e in entries}


def sentence(corpus, doc: str, index: int = 0, last: int | None = None) -> tuple[np.ndarray, str]:
    """(16 kHz wave, text) of sentence `index` (to `last`, with the pauses between) of corpus document `doc`."""
    entry = corpus[f"{doc}-asr"]
    wave, sr = audio_io.read(entry.audio[0])
    assert sr == SR
    segs = entry.segments[index:(index if last is None else last) + 1]
    return wave[int(round(segs[0].start * sr)):int(round(segs[-1].end * sr))], " ".join(s.text for s in segs)


def with_noise(wave: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(wave))
    noise *= np.sqrt(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


def test_a_missing_extra_names_the_install_command(monkeypatch):
    from bajax.eval.quality import pesq_wb

    monkeypatch.setitem(sys.modules, "pesq", None)  # `import pesq` now raises ImportError
    with pytest.raises(ImportError, match=r"PESQ needs the evaluation extra .*pip install 'bajax\[eval\]'"):
        pesq_wb(np.ones(SR), np.ones(SR), SR)


@needs("pesq", "pystoi")
def test_identical_signals_score_the_maximum(corpus):
    from bajax.eval.quality import estoi, pesq_wb, stoi

    wave, _ = sentence(corpus, "d0000-en")
    assert pesq_wb(wave, wave, SR) == pytest.approx(4.644, abs=0.01)  # P.862.2's ceiling
    assert stoi(wave, wave, SR) == pytest.approx(1.0, abs=1e-6)
    assert estoi(wave, wave, SR) == pytest.approx(1.0, abs=1e-6)
    # At 24 kHz PESQ resamples to 16 kHz first; a longer estimate is cut to the reference.
    wave24 = resample(wave, SR, 24000)
    assert pesq_wb(wave24, np.concatenate([wave24, np.zeros(100, np.float32)]), 24000) == pytest.approx(4.644,
                                                                                                       abs=0.01)
    with pytest.raises(ValueError, match="silent"):
        pesq_wb(np.zeros(SR), wave, SR)


@needs("pesq", "pystoi")
def test_white_noise_lowers_pesq_and_stoi_monotonically(corpus):
    from bajax.eval.quality import estoi, pesq_wb, stoi

    wave, _ = sentence(corpus, "d0000-en")
    noisy = [with_noise(wave, snr) for snr in (20, 10, 0)]
    for metric in (pesq_wb, stoi, estoi):
        scores = [metric(wave, x, SR) for x in noisy]
        assert scores[0] > scores[1] > scores[2], (metric.__name__, scores)
    assert pesq_wb(wave, noisy[2], SR) < 1.5  # 0 dB white noise: "bad"


@needs("jiwer", "whisper_normalizer")
def test_wer_and_cer_of_known_pairs_after_normalisation():
    from bajax.eval.text import cer, normalize, wer

    # English: case, punctuation, spelled numbers and currency are normalised away.
    assert normalize("Hello, World! It costs ten dollars.", "en") == "hello world it costs $10"
    assert wer("Hello, World! It costs ten dollars.", "hello world it costs $10") == 0.0
    assert cer("Hello, World!", "HELLO WORLD") == 0.0
    # One substitution in six words; "the" -> "a" is 3 character edits in 22 characters.
    assert wer("The cat sat on the mat.", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert cer("The cat sat on the mat.", "the cat sat on a mat") == pytest.approx(3 / 22)
    # Corpus-level: one deletion + one insertion over 6 reference words, not the mean of per-pair rates.
    assert wer(["a b c d", "e f"], ["a b c", "e f g"]) == pytest.approx(2 / 6)
    assert wer(["a b c d"], ["x y z w v"]) == pytest.approx(5 / 4)  # insertions can push WER above 1
    # Mandarin: punctuation dropped, characters are the tokens, so WER == CER.
    assert normalize("今天天气很好。", "zh") == "今 天 天 气 很 好"
    assert wer("今天天气很好。", "今天天气不好", "zh") == pytest.approx(1 / 6)
    assert cer("今天天气很好。", "今天 天气不好！", "zh") == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="reference 1 is empty"):
        wer(["a", "Um, uh."], ["a", "b"])  # filler words only
    with pytest.raises(ValueError, match="no text normalisation"):
        wer("a", "a", "fr")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        cer(["a", "b"], ["a"])


def test_f0_rmse_and_voicing_error_of_sines():
    from bajax.eval.f0 import f0_rmse, voicing_error

    for sr in (24000, SR):  # 16 kHz input is resampled to the pitch tracker's 24 kHz
        t = np.arange(sr) / sr
        tone = 0.5 * np.sin(2 * np.pi * 200 * t)
        detuned = 0.5 * np.sin(2 * np.pi * 210 * t)  # +5%
        assert f0_rmse(tone, tone, sr) == 0.0
        assert voicing_error(tone, tone, sr) == 0.0
        assert f0_rmse(tone, detuned, sr) == pytest.approx(0.05 * 200, rel=0.01)
        assert voicing_error(tone, detuned, sr) == 0.0
        half = tone.copy()
        half[sr // 2:] = 0
        assert voicing_error(tone, half, sr) == pytest.approx(0.5, abs=0.03)
    assert np.isnan(f0_rmse(tone, np.zeros_like(tone), sr))  # no frame voiced in both


@needs("resemblyzer", "torch", "librosa", "webrtcvad")
def test_speaker_similarity_is_higher_within_a_voice(corpus):
    from bajax.eval.speaker import speaker_embedding, speaker_similarity

    # Voices of the corpus documents, replayed from scripts/make_corpus.py's seeded generator (and checked
    # against the manifest's sentences): d0001-en and d0006-en are en-gb-x-rp+f4, d0010-en and d0016-en en-us+m3.
    rp1, rp2, m1, m2 = (sentence(corpus, d)[0] for d in ("d0001-en", "d0006-en", "d0010-en", "d0016-en"))
    e_rp1, e_rp2, e_m1, e_m2 = (speaker_embedding(x, SR) for x in (rp1, rp2, m1, m2))
    assert e_rp1.shape == (256,) and np.linalg.norm(e_rp1) == pytest.approx(1.0, abs=1e-5)
    within = [speaker_similarity(rp1, rp2, SR), float(e_m1 @ e_m2)]
    across = [float(a @ b) for a in (e_rp1, e_rp2) for b in (e_m1, e_m2)]
    assert within[0] == pytest.approx(float(e_rp1 @ e_rp2), abs=1e-6)
    assert min(within) > max(across) + 0.1, (within, across)


@needs("speechmos", "onnxruntime", "librosa")
def test_dnsmos_prefers_clean_speech(corpus):
    from bajax.eval.mos import FIELDS, dnsmos

    wave, _ = sentence(corpus, "d0000-en", 0, 1)  # 4.5 s: doubled once to DNSMOS's 9.01 s window
    clean, noisy = dnsmos(wave, SR), dnsmos(with_noise(wave, 0), SR)
    assert set(clean) == set(FIELDS)
    assert all(1.0 <= v <= 5.0 for v in (*clean.values(), *noisy.values())), (clean, noisy)
    assert clean["ovrl"] > noisy["ovrl"] + 0.5, (clean, noisy)
    assert clean["bak"] > noisy["bak"] + 1.0, (clean, noisy)
    assert clean["p808"] > noisy["p808"], (clean, noisy)


@needs("pocketsphinx")
def test_pocketsphinx_through_the_interface(corpus):
    from bajax.eval.asr import Recognizer, recognizer_from_spec

    recognizer = recognizer_from_spec("pocketsphinx")
    assert isinstance(recognizer, Recognizer) and recognizer.name == "pocketsphinx"
    wave, _ = sentence(corpus, "d0000-en")
    text = recognizer.transcribe(resample(wave, SR, 24000), 24000)
    assert isinstance(text, str) and text
    assert recognizer.transcribe(resample(wave, SR, 24000), 24000) == text  # deterministic (seeded dither)
    with pytest.raises(ValueError, match="English only"):
        recognizer_from_spec("pocketsphinx", language="zh")
    with pytest.raises(ValueError, match="unknown recogniser"):
        recognizer_from_spec("kaldi")


def _tiny_whisper(directory) -> None:
    """A random 1-layer Whisper with a byte-level tokenizer (256 bytes, no merges, Whisper's special tokens)."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    languages = ("en", "zh")
    specials = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{lang}|>" for lang in languages),
                "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
                "<|notimestamps|>"]
    vocab |= {token: len(vocab) + i for i, token in enumerate(specials)}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], additional_special_tokens=specials[1:])
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=32,
                           pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=ids("<|startoftranscript|>"))
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, decoder_start_token_id=ids("<|startoftranscript|>"),
        is_multilingual=True, lang_to_id={f"<|{lang}|>": ids(f"<|{lang}|>") for lang in languages},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"))
    model.save_pretrained(directory)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(
        directory)


@pytest.mark.torch
def test_whisper_from_a_local_directory_through_the_interface(tmp_path, corpus):
    from bajax.eval.asr import Recognizer, recognizer_from_spec

    _tiny_whisper(tmp_path / "whisper")
    wave, _ = sentence(corpus, "d0000-en")
    for language in ("en", None):  # forced English; detected by the (random) model
        recognizer = recognizer_from_spec(f"whisper:{tmp_path / 'whisper'}", language=language)
        assert isinstance(recognizer, Recognizer) and recognizer.name == f"whisper:{tmp_path / 'whisper'}"
        assert isinstance(recognizer.transcribe(wave, SR), str)
    with pytest.raises(ValueError, match="at most 30 s"):
        recognizer.transcribe(np.zeros(31 * SR, np.float32), SR)
    with pytest.raises(ValueError, match="is not a directory"):
        recognizer_from_spec(f"whisper:{tmp_path / 'missing'}")


# The first two sentences of each of the first 10 English asr documents (6 espeak-ng voices).
# Measured with pocketsphinx 5.1.1: WER 0.750, CER 0.499 (without the recogniser's padding and dither: WER 0.88).
POCKETSPHINX_CORPUS_WER_BOUND = 0.85


@pytest.mark.slow
@needs("pocketsphinx", "jiwer", "whisper_normalizer")
def test_pocketsphinx_wer_on_corpus_sentences(corpus):
    from bajax.eval.asr import recognizer_from_spec
    from bajax.eval.text import cer, wer

    docs = [e.id[:-4] for e in corpus.values() if e.task == "asr" and e.language == "en"][:10]
    pairs = [sentence(corpus, doc, i) for doc in docs for i in (0, 1)]
    recognizer = recognizer_from_spec("pocketsphinx")
    refs, hyps = [text for _, text in pairs], [recognizer.transcribe(wave, SR) for wave, _ in pairs]
    score = wer(refs, hyps)
    print(f"pocketsphinx on {len(pairs)} corpus sentences: WER {score:.3f}, CER {cer(refs, hyps):.3f}")
    assert score < POCKETSPHINX_CORPUS_WER_BOUND
