"""The HiFT neural vocoder (CosyVoice-2's NSF HiFi-GAN + iSTFT generator, Baichuan's `cosy24k_vocoder`):
24 kHz log-mel [B, T, 80] -> waveform [B, T * 480], reproducing the reference's numerics exactly (parity
tests against a PyTorch module of the reference's structure live in tests/test_vocoder_generator.py)."""
