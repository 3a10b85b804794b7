"""Word and character error rates of recognised text against reference text, after a stated normalisation.

Normalisation (whisper-normalizer, the normalisers of OpenAI's Whisper evaluation):
  - English ("en"): `EnglishTextNormalizer`: lower case; bracketed and filler words ("uh", "um") removed;
    contractions and British spellings standardised ("I'm" -> "i am", "colour" -> "color"); spelled-out numbers
    and currencies written as digits ("ten" -> "10", "one thousand dollars" -> "$1000"); punctuation removed.
    Tokens are the words between spaces.
  - Mandarin ("zh"): `BasicTextNormalizer`: lower case; bracketed text and punctuation/symbols removed (Unicode
    categories M, S, P become spaces); then every space is dropped and each remaining character is a token
    (Latin letters of embedded English words too), so a Mandarin "WER" is the character error rate, as
    Chinese ASR and TTS papers report it.
Rates are corpus-level (jiwer): the total substitutions + deletions + insertions of all pairs over the total
number of reference tokens (characters for CER), so long references weigh more than short ones.
CER counts characters of the normalised text: for English the words joined by single spaces (spaces count),
for Mandarin the characters without spaces.
"""

from __future__ import annotations

import functools

from bajax.eval.deps import require

LANGUAGES = ("en", "zh")


@functools.cache
def _normaliser(language: str):
    if language not in LANGUAGES:
        raise ValueError(f"no text normalisation for language {language!r}; one of {LANGUAGES}")
    if language == "en":
        return require("whisper_normalizer.english", "WER/CER").EnglishTextNormalizer()
    return require("whisper_normalizer.basic", "WER/CER").BasicTextNormalizer()


def normalize(text: str, language: str) -> str:
    """The normalised tokens of `text` joined by single spaces (words for "en", characters for "zh")."""
    norm = _normaliser(language)(text)
    tokens = list("".join(norm.split())) if language == "zh" else norm.split()
    return " ".join(tokens)


def _pairs(refs, hyps, language: str) -> tuple[list[str], list[str]]:
    refs = [refs] if isinstance(refs, str) else list(refs)
    hyps = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("error rate of no text pairs")
    refs = [normalize(r, language) for r in refs]
    for i, r in enumerate(refs):
        if not r:
            raise ValueError(f"reference {i} is empty after {language!r} normalisation; drop it or fix the text")
    return refs, [normalize(h, language) for h in hyps]


def wer(refs, hyps, language: str = "en") -> float:
    """Word error rate (characters for "zh") of hypothesis text(s) against reference text(s); a str or a list."""
    jiwer = require("jiwer", "WER")
    refs, hyps = _pairs(refs, hyps, language)
    return float(jiwer.wer(refs, hyps))


def cer(refs, hyps, language: str = "en") -> float:
    """Character error rate of hypothesis text(s) against reference text(s); a str or a list."""
    jiwer = require("jiwer", "CER")
    refs, hyps = _pairs(refs, hyps, language)
    if language == "zh":
        refs, hyps = [r.replace(" ", "") for r in refs], [h.replace(" ", "") for h in hyps]
    return float(jiwer.cer(refs, hyps))
