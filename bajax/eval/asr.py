"""Speech recognisers behind one interface, for intelligibility (WER/CER of generated speech).

    recognizer = recognizer_from_spec("pocketsphinx")          # offline English, the default
    recognizer = recognizer_from_spec("whisper:/path/to/dir")   # a Whisper checkpoint saved with save_pretrained
    text = recognizer.transcribe(wave, sr)

- `pocketsphinx`: CMU PocketSphinx 5 with the US-English acoustic model, language model and dictionary that ship
  in its wheel (offline, CPU, no torch). English only. Each utterance gets 0.25 s of silence on both sides and a
  fixed, seeded Gaussian dither at -80 dBFS before 16-bit quantisation: without it, digital silence (exact zeros,
  common in synthetic and FLAC-quantised audio) wrecks PocketSphinx's cepstral mean normalisation. The
  front end's noise and cepstral-mean estimates are reset before each utterance, so a transcript does not depend
  on what was transcribed before it.
- `whisper:DIR`: a Hugging Face Whisper checkpoint in a local directory (`WhisperForConditionalGeneration` +
  `WhisperProcessor`, never fetched from the hub), through transformers and torch on the CPU; greedy decoding
  without timestamps, task "transcribe", language forced to English (`language="en"`) or detected by the model
  (`language=None`). One call takes at most 30 s of audio (Whisper's window).
"""

from __future__ import annotations

import abc
import os

import numpy as np

from bajax.audio.resample import resample
from bajax.eval.deps import require

SAMPLE_RATE = 16000
SPECS = ("pocketsphinx", "whisper:DIR")


class Recognizer(abc.ABC):
    """Speech -> text. `name` identifies the recogniser (and its model) in reports."""

    name: str
    languages: tuple[str, ...] | None = None     # what it transcribes; None = any (it detects the language)

    @abc.abstractmethod
    def transcribe(self, wave, sr: int) -> str:
        """The text of one utterance: a mono float wave at `sr` Hz."""


def _mono16k(wave, sr: int) -> np.ndarray:
    wave = np.asarray(wave, np.float32)
    if wave.ndim != 1:
        raise ValueError(f"transcribe wants one mono waveform [samples]; got shape {wave.shape}")
    if wave.size == 0:
        raise ValueError("transcribe: empty waveform")
    if not np.all(np.isfinite(wave)):
        raise ValueError("transcribe: the waveform has NaN or infinite samples")
    return resample(wave, sr, SAMPLE_RATE)


class PocketSphinx(Recognizer):
    """Offline US-English recognition with the model in the pocketsphinx wheel. `config` overrides decoder
    settings (e.g. `lw=8.0`); the default settings are PocketSphinx's own."""

    languages = ("en",)
    PAD_S = 0.25
    DITHER = 1e-4  # RMS of the added Gaussian noise: -80 dBFS, about 3 LSB of 16-bit audio

    def __init__(self, **config):
        self.name = "pocketsphinx"
        self._config = config
        self._decoder = None

    def transcribe(self, wave, sr: int) -> str:
        x = _mono16k(wave, sr).astype(np.float64)
        if self._decoder is None:
            self._decoder = require("pocketsphinx", "the pocketsphinx recogniser").Decoder(
                samprate=SAMPLE_RATE, **self._config)
        pad = np.zeros(int(self.PAD_S * SAMPLE_RATE))
        x = np.concatenate([pad, x, pad])
        x += self.DITHER * np.random.default_rng(0).standard_normal(x.size)
        pcm = np.round(np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        self._decoder.reinit_feat()  # fresh noise and cepstral-mean estimates: each utterance is scored alone
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


class Whisper(Recognizer):
    """A local Whisper checkpoint: greedy, no timestamps; `language` "en" (forced) or None (detected)."""

    WINDOW_S = 30.0

    def __init__(self, directory: str, language: str | None = "en", max_new_tokens: int = 128):
        if not os.path.isdir(directory):
            raise ValueError(f"whisper recogniser: {directory!r} is not a directory; save a checkpoint there with "
                             "WhisperForConditionalGeneration.save_pretrained and WhisperProcessor.save_pretrained")
        self._torch = require("torch", "the whisper recogniser")
        transformers = require("transformers", "the whisper recogniser")
        self.name = f"whisper:{directory}"
        self.language = language
        self.languages = None if language is None else (language,)
        self.processor = transformers.WhisperProcessor.from_pretrained(directory, local_files_only=True)
        self.model = transformers.WhisperForConditionalGeneration.from_pretrained(
            directory, local_files_only=True).eval()
        # The decoder prompt (start, language, task, no-timestamps) takes up to 4 of its positions.
        self.max_new_tokens = min(max_new_tokens, self.model.config.max_target_positions - 4)

    def transcribe(self, wave, sr: int) -> str:
        x = _mono16k(wave, sr)
        if x.size > self.WINDOW_S * SAMPLE_RATE:
            raise ValueError(f"whisper recogniser: {x.size / SAMPLE_RATE:.1f} s of audio; transcribe at most "
                             f"{self.WINDOW_S:.0f} s at a time (cut the audio into utterances)")
        feats = self.processor(x, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        kwargs = {}
        if getattr(self.model.generation_config, "is_multilingual", False):  # English-only models take neither
            kwargs = {"language": self.language, "task": "transcribe"}
        with self._torch.no_grad():
            ids = self.model.generate(feats.to(self.model.dtype), do_sample=False, num_beams=1,
                                      max_new_tokens=self.max_new_tokens, return_timestamps=False, **kwargs)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


def recognizer_from_spec(spec: str, language: str | None = "en") -> Recognizer:
    """"pocketsphinx" or "whisper:DIR". `language`: "en", or None to let Whisper detect it (PocketSphinx is
    English only)."""
    if spec == "pocketsphinx":
        if language not in ("en", None):
            raise ValueError(f"recogniser 'pocketsphinx' is English only; got language {language!r} "
                             "(use whisper:DIR)")
        return PocketSphinx()
    if spec.startswith("whisper:") and len(spec) > len("whisper:"):
        return Whisper(spec[len("whisper:"):], language=language)
    raise ValueError(f"unknown recogniser {spec!r}; one of {SPECS}")
