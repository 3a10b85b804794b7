"""Non-intrusive predicted MOS: Microsoft's DNSMOS, through the `speechmos` package (its ONNX models ship in the
wheel; they run with onnxruntime on the CPU, offline).

DNSMOS P.835 (Reddy et al., ICASSP 2022) predicts the three ITU-T P.835 ratings, each 1-5, higher is better:
SIG (speech signal quality), BAK (background noise intrusiveness), OVRL (overall quality); DNSMOS P.808
(Reddy et al., ICASSP 2021) predicts the P.808 absolute category rating. The models score 9.01 s windows with a
1 s hop and average them; a shorter clip is doubled (appended to itself) until it is at least 9.01 s long. This
is the non-personalised model with the polynomial calibration of Microsoft's reference script
(`dnsmos_local.py`). OVRL is the usual headline figure.
"""

from __future__ import annotations

import numpy as np

from bajax.audio.resample import resample
from bajax.eval.deps import require

SAMPLE_RATE = 16000
FIELDS = ("ovrl", "sig", "bak", "p808")


def dnsmos(wave, sr: int) -> dict[str, float]:
    """{"ovrl", "sig", "bak", "p808"}: DNSMOS of a mono wave at `sr` Hz (resampled to 16 kHz first).

    Samples beyond [-1, 1] (speechmos refuses them) are clipped, as writing the wave to a 16-bit file would."""
    run = require("speechmos.dnsmos", "DNSMOS").run
    wave = np.asarray(wave, np.float32).reshape(-1)
    if wave.size == 0:
        raise ValueError("DNSMOS of an empty waveform")
    if not np.all(np.isfinite(wave)):
        raise ValueError("DNSMOS: the waveform has NaN or infinite samples")
    wave = np.clip(resample(wave, sr, SAMPLE_RATE), -1.0, 1.0)
    scores = run(wave, SAMPLE_RATE)
    return {field: float(scores[f"{field}_mos"]) for field in FIELDS}
