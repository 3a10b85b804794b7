"""Step counts and sizes of `bajax quickstart`: the whole recipe on the embedded corpus (timing: README.md).

  bajax quickstart --workdir runs/quickstart
  bajax quickstart --workdir runs/qs_smoke --config.tokenizer_steps=20      # any key can be overridden
"""

from ml_collections import ConfigDict


def get_config():
    c = ConfigDict()
    c.seed = 0
    c.seq_len = 256          # packed LM rows
    c.text_steps = 150       # [0] text-only LM pre-training
    c.tokenizer_steps = 300  # [1] tokenizer
    c.prepare_workers = 2    # [2] audio decoding processes while tokenising the corpus
    c.stage1_steps = 100     # [3] LM stage 1
    c.stage2_steps = 150     # [4] LM stage 2
    c.flow_steps = 200       # [5] flow decoder
    c.vocoder_steps = 200    # [6] HiFT vocoder (GAN)
    c.vocoder_adversarial_start = 150   # [6] ... its discriminators join here (mel L1 + F0 alone before)
    c.reply_frames = 50      # [7] at most this many 12.5 Hz frames per spoken segment of the reply
    c.eval_utterances = 4    # [6], [9] held-out utterances of copy synthesis and of the codec evaluation
    c.eval_spoken = 2        # [9] utterances spoken by the LM for the TTS and spoken-reply evaluations
    c.lock()
    return c
