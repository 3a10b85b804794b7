"""`bajax encode` / `bajax decode`: round trip on corpus audio, many files, clear errors for bad files."""

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bajax import cli
from bajax import config as config_lib
from bajax.tokenizer.model import Tokenizer
from bajax.train.checkpoint import Checkpointer

CORPUS = Path(__file__).resolve().parents[1] / "bajax" / "data" / "corpus" / "audio"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tokenizer run directory as `bajax train` writes it (config.json + an Orbax step), untrained."""
    d = tmp_path_factory.mktemp("tok_run")
    cfg = config_lib.defaults("tokenizer")
    tok = Tokenizer(cfg.model, rngs=nnx.Rngs(0))
    (d / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    ckpt = Checkpointer(str(d / "checkpoints"), every=1, keep=1, async_save=False)
    ckpt.save(1, {"step": jnp.int32(1), "model": nnx.state(tok), "opt": {}}, force=True)
    ckpt.close()
    return d


def test_encode_decode_round_trip_on_corpus_audio(run_dir, tmp_path, capsys):
    files = [str(CORPUS / "q0005-en.flac"), str(CORPUS / "q0023-zh.flac")]
    assert cli.main(["encode", *files, "--checkpoint", str(run_dir), "-o", str(tmp_path / "codes")]) == 0
    codes = [np.load(tmp_path / "codes" / f"{Path(f).stem}.npy") for f in files]
    for f, c in zip(files, codes, strict=True):
        import soundfile as sf

        seconds = sf.info(f).duration
        assert c.dtype == np.int32 and c.shape[1] == 8 and abs(c.shape[0] - seconds * 12.5) <= 1
    assert "q0005-en.flac ->" in capsys.readouterr().out

    npys = [str(tmp_path / "codes" / f"{Path(f).stem}.npy") for f in files]
    assert cli.main(["decode", *npys, "--checkpoint", str(run_dir), "-o", str(tmp_path / "mel")]) == 0
    for f, c in zip(files, codes, strict=True):
        mel = np.load(tmp_path / "mel" / f"{Path(f).stem}.npy")
        # 62.5 Hz: the reference's int((8k - 2) * 0.625) = 5k - 2 frames for k codes
        assert mel.shape == (5 * c.shape[0] - 2, 80) and np.isfinite(mel).all()
        png = tmp_path / "mel" / f"{Path(f).stem}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreadable_files_get_clear_errors(run_dir, tmp_path, capsys):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"not audio at all")
    good = str(CORPUS / "q0005-en.flac")
    assert cli.main(["encode", str(bad), good, "--checkpoint", str(run_dir), "-o", str(tmp_path / "c"),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "broken.flac" in err and "cannot decode" in err and "1 of 2 files failed" in err
    assert (tmp_path / "c" / "q0005-en.npy").exists()                  # the good file is still encoded

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.full((4, 8), 999, np.int32))
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"junk")
    assert cli.main(["decode", str(wrong), str(junk), "--checkpoint", str(run_dir), "-o", str(tmp_path / "m"),
                     "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "wrong.npy: codebook 0 holds ids in [999, 999] but has 64 codes" in err
    assert "junk.npy: cannot read a codes .npy file" in err

    assert cli.main(["decode", str(wrong), "--checkpoint", str(tmp_path), "-o", str(tmp_path / "m")]) == 2
    assert "no config.json" in capsys.readouterr().err
