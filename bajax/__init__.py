"""bajax: train Baichuan-Audio-style speech LLMs in JAX."""
