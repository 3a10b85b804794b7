"""Speech generation: glue above the three models (audio LLM -> tokenizer decoder -> flow decoder -> vocoder).

  load.py       a trained run (config.json + latest Orbax step, model item only) onto the current devices
  generate.py   the speech-to-speech loop of the LM (text segments, audio frames, KV cache; no-cache reference)
  pipeline.py   codes -> 24 kHz wave and mel (`Synthesizer`, `codes_to_wav`), mel PNG
  reply.py      a spoken reply from three trained runs (the work of `bajax generate`, bajax/cli/generate.py)
  stream.py     the same reply as audio chunks while it is generated (`bajax.speech.stream(talker, text=...)`)
"""

from bajax.speech.stream import stream  # noqa: E402  (the function; the module stays importable by path)

__all__ = ["stream"]
