"""Issue 20's whole fine-tuning path on a tiny release directory in the reference structure (fp32 random
weights, tests/torch_ref/release.py): `import-release` -> `prepare` a chat manifest with the imported tokenizer ->
20 steps of LoRA SFT from the imported LM -> `export-release`. The exported directory loads with strict=True
into the reference modules, and the reference LM's logits (text and the 8 audio heads) equal bajax's LoRA
forward at 1e-4; the parts that were not fine-tuned come back bitwise."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bajax import runs
from bajax.cli import main
from bajax.data import sources
from bajax.lm import special_tokens

pytestmark = [pytest.mark.slow, pytest.mark.torch]


def _chat_manifest(path, rows: int = 6):
    """The first rows of the embedded chat example (spoken questions with text answers, read-aloud requests
    with spoken answers), audio paths made absolute."""
    corpus = sources.corpus_dir()
    out = []
    for line in (corpus / "chat.jsonl").read_text().splitlines()[:rows]:
        row = json.loads(line)
        for turn in row["turns"]:
            for part in [turn, *turn.get("content", [])]:
                if "audio" in part:
                    part["audio"] = str(corpus / part["audio"])
        out.append(json.dumps(row))
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
def test_release_lora_sft_export_release_matches_the_reference(tmp_path):
    torch = pytest.importorskip("torch")
    from bajax.config import load
    from bajax.interop.release import import_release
    from bajax.interop.safetensors_io import Reader
    from bajax.train.trainer import train
    from tests.torch_ref.release import reference_modules, write_release

    release = tmp_path / "release"
    write_release(release, dtype=torch.float32)
    imported = tmp_path / "runs"
    import_release(str(release), str(imported), log=None)

    prepared = tmp_path / "chat"
    assert main(["prepare", "--manifest", str(_chat_manifest(tmp_path / "chat.jsonl")), "--out", str(prepared),
                 "--tokenizer", str(imported / "tokenizer")]) == 0

    # The imported run's config.py with ':sft': dialogues only, every parameter (here: the adapters) trains.
    sft = load(f"{imported / 'lm' / 'config.py'}:sft", [
        f"data.source={prepared}", "data.seq_len=128", "train.steps=20", "train.batch_size=2", "train.eval_every=0",
        "train.lora.rank=4", "train.lora.alpha=8", f"train.init_from={imported / 'lm' / 'checkpoints'}",
        "optim.lr=1e-2", "optim.warmup_steps=2", "checkpoint.every=0", "checkpoint.async_save=false",
        "metrics.tensorboard=false"])
    assert {t for t, w in sft.data.mixture.items() if w} == {"chat"} and sft.train.stage == ""
    tuned = tmp_path / "sft"
    rows = train(sft, str(tuned), quiet=True, devices=jax.devices()[:1]).metrics
    assert rows[-1]["step"] == 20 and np.isfinite(rows[-1]["loss"])

    dest = tmp_path / "exported"
    assert main(["export-release", "--lm", str(tuned), "--tokenizer", str(imported / "tokenizer"),
                 "--flow", str(imported / "flow"), "--vocoder", str(imported / "vocoder"), "--out", str(dest)]) == 0

    exported = Reader(dest)
    state = {k: torch.from_numpy(exported.get(k)) for k in exported}
    config = json.loads((dest / "config.json").read_text())
    lm_ref, tok_ref, flow_ref = reference_modules(config)
    for module in (lm_ref, tok_ref, flow_ref):
        module.load_state_dict({k: state[k] for k in module.state_dict()}, strict=True)
    # Fine-tuning changed the LM (adapters merged), and nothing else: the other parts come back bitwise.
    original = Reader(release)
    lm_keys = set(lm_ref.state_dict())
    changed = {k for k in exported if exported.get(k).tobytes() != original.get(k).tobytes()}
    assert changed and changed <= lm_keys

    loaded = runs.load(str(tuned), "lm")
    model = loaded.model
    rng = np.random.default_rng(1)
    b, t = 2, 12
    tokens = rng.integers(0, 256, (b, t))
    pad = special_tokens.ids_of(loaded.cfg.model)["audio_pad"]
    tokens[:, 3:8] = pad
    sizes = tuple(int(c) for c in loaded.cfg.model.codebook_sizes)
    codes = np.stack([rng.integers(0, s, (b, t)) for s in sizes], -1)
    lm_ref.eval()
    with torch.no_grad():
        h_ref = lm_ref.model(torch.from_numpy(tokens), torch.from_numpy(codes), pad)
        want_text = lm_ref.lm_head(h_ref).numpy()
        want_audio = [x.numpy() for x in lm_ref.audio_head(h_ref.reshape(-1, h_ref.shape[-1]),
                                                           torch.from_numpy(codes.reshape(-1, len(sizes))),
                                                           lm_ref.model.audio_embed_layers)]
    jb = {"tokens": jnp.asarray(tokens, jnp.int32), "audio_codes": jnp.asarray(codes, jnp.int32),
          "positions": jnp.tile(jnp.arange(t, dtype=jnp.int32), (b, 1)), "segment_ids": jnp.ones((b, t), jnp.int32)}
    h = model.hidden(jb)
    got_text = np.asarray(model.text_logits(h))
    np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-4 * np.abs(want_text).max())
    for k, (g, w) in enumerate(zip(model.audio_logits(h, jb["audio_codes"]), want_audio, strict=True)):
        w = w.reshape(b, t, -1)
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4 * np.abs(w).max(), err_msg=f"head {k}")
