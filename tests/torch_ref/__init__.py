"""PyTorch modules written for the interop tests, following the structure and parameter names of the
reference Baichuan-Audio model code (modeling_omni.py, audio_modeling_omni.py, vector_quantize.py,
flow_matching.py), so that `load_state_dict(strict=True)` on a `bajax export` proves the names and shapes,
and their outputs prove the layouts. Inference only, fp32, one unpadded utterance (no varlen packing)."""
