"""`bajax quickstart`: the whole Baichuan-Audio recipe on the embedded corpus, on one machine, in minutes.

    [0] text LM      tiny LLM pre-trained on text only (so "preserving language ability" means something)
    [1] tokenizer    RVQ audio tokenizer (its text-alignment loss reads the frozen stage-0 LM)
    [2] prepare      the corpus tokenised into 12.5 Hz codes by the trained tokenizer
    [3] LM stage 1   audio embeddings + audio head only, from the text LM
    [4] LM stage 2   everything but the text embedding and LM head, from stage 1
    [5] flow         flow-matching decoder conditioned on the frozen tokenizer decoder
    [6] vocoder      HiFT neural vocoder (GAN) on the corpus's 24 kHz audio, scored against Griffin-Lim on
                     held-out copy synthesis
    [7] generate     a spoken reply to a held-out audio prompt through HiFT (wav + PNG of its mel)
    [8] export       every model to PyTorch safetensors in the Baichuan-Audio layout
    [9] eval         `bajax eval` of the codec (PESQ, STOI), TTS (WER, speaker similarity, DNSMOS) and replies

Each stage writes WORKDIR/<stage>/ and a DONE marker with its results; running the command again skips
finished stages and resumes an interrupted one from its last checkpoint. The step counts and sizes are in
`configs/quickstart.py`; the stages train from the configs shipped in the package (`bajax.config_files`), so
the recipe runs from any directory. The command line is bajax/cli/quickstart.py.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from ml_collections import ConfigDict

from bajax import config_files


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[Quickstart], dict]


class Quickstart:
    def __init__(self, qcfg: ConfigDict, workdir: str, *, quiet: bool = False):
        self.q = qcfg
        self.workdir = Path(workdir).resolve()
        self.quiet = quiet

    def path(self, stage: str) -> Path:
        return self.workdir / stage

    # -- helpers ----------------------------------------------------------------------------------------
    def _config(self, spec: str, overrides: list[str]):
        from bajax.config import load

        return load(config_files.packaged(spec), list(overrides))

    def _train(self, stage: str, spec: str, overrides: list[str]) -> dict:
        """Trains (or resumes) one run and returns its last logged metrics."""
        from bajax.sweep import final_metrics
        from bajax.train.trainer import train

        cfg = self._config(spec, overrides)
        train(cfg, str(self.path(stage)), quiet=self.quiet)
        return final_metrics(self.path(stage))

    def _lm_data(self) -> list[str]:
        """LM overrides shared by stages 3-4: the prepared corpus and the tokenizer's codebook sizes."""
        sizes = self.tokenizer_codebook_sizes()
        return [f"data.source={self.path('2_prepare')}", f"model.codebook_sizes={tuple(sizes)}",
                f"data.seq_len={self.q.seq_len}"]

    def tokenizer_codebook_sizes(self) -> tuple[int, ...]:
        """The tokenizer's codebook sizes, known before it trains: the LLM's audio tables (born in stage 0,
        so stage 1 can start from that checkpoint) must have exactly these sizes."""
        return tuple(self._config("configs/tokenizer/tiny.py", []).model.rvq.codebook_sizes)

    # -- stages -----------------------------------------------------------------------------------------
    def text_lm(self) -> dict:
        q = self.q
        return self._train("0_text_lm", "configs/lm/tiny.py:text",
                           [f"train.steps={q.text_steps}", f"data.seq_len={q.seq_len}", "train.eval_batches=0",
                            f"model.codebook_sizes={self.tokenizer_codebook_sizes()}"])

    def tokenizer(self) -> dict:
        q = self.q
        return self._train("1_tokenizer", "configs/tokenizer/tiny.py",
                           [f"train.steps={q.tokenizer_steps}", f"model.align_lm_checkpoint={self.path('0_text_lm')}"])

    def prepare(self) -> dict:
        from bajax.data import prepare, sources
        from bajax.models.tokenizer import load_encode_fn

        manifest = sources.corpus_dir() / sources.CORPUS_MANIFEST
        summary = prepare.prepare(str(manifest), str(self.path("2_prepare")),
                                  encode_fn=load_encode_fn(str(self.path("1_tokenizer"))),
                                  workers=self.q.prepare_workers, progress=not self.quiet)
        tasks = summary["tasks"].values()
        return {"samples": sum(t["samples"] for t in tasks), "hours": round(sum(t["hours"] for t in tasks), 3),
                "rejected": sum(summary["rejected"].values())}

    def lm_stage1(self) -> dict:
        return self._train("3_lm_stage1", "configs/lm/tiny.py:stage1",
                           [*self._lm_data(), f"train.steps={self.q.stage1_steps}", "train.eval_batches=0",
                            f"train.init_from={self.path('0_text_lm') / 'checkpoints'}"])

    def lm_stage2(self) -> dict:
        return self._train("4_lm_stage2", "configs/lm/tiny.py:stage2",
                           [*self._lm_data(), f"train.steps={self.q.stage2_steps}", "train.eval_batches=0",
                            f"train.init_from={self.path('3_lm_stage1') / 'checkpoints'}"])

    def flow(self) -> dict:
        tok = json.loads((self.path("1_tokenizer") / "config.json").read_text())
        return self._train("5_flow", "configs/flow/tiny.py",
                           [f"train.steps={self.q.flow_steps}", f"data.source={self.path('2_prepare')}",
                            "model.cond_source=tokenizer", f"model.cond_dim={tok['model']['d_model']}",
                            f"model.tokenizer_checkpoint={self.path('1_tokenizer')}"])

    def vocoder(self) -> dict:
        """HiFT (GAN) on the prepared corpus's 24 kHz audio; then held-out copy synthesis against Griffin-Lim
        (`bajax eval vocoder --baseline`, written to 6_vocoder/eval)."""
        from bajax.eval import vocoding

        result = self._train("6_vocoder", "configs/vocoder/tiny.py",
                             [f"train.steps={self.q.vocoder_steps}", f"data.source={self.path('2_prepare')}",
                              f"model.loss.adversarial_start={self.q.vocoder_adversarial_start}"])
        scores, _ = vocoding.evaluate(self._eval_settings("6_vocoder/eval"), vocoder=str(self.path("6_vocoder")),
                                      baseline=True)
        return {**result, **{f"{system}_{k}": v["mean"] for system, s in scores["groups"].items()
                             for k, v in s.items() if k in ("mr_stft", "mel_l1", "pesq_wb", "stoi")}}

    def _eval_settings(self, out: str, *, spoken: bool = False, **kwargs):
        from bajax.eval.runner import Settings

        limit = self.q.eval_spoken if spoken else self.q.eval_utterances
        return Settings(out=str(self.workdir / out), limit=limit, seed=self.q.seed, quiet=True, argv=(), **kwargs)

    def _request(self):
        from bajax.speech.reply import Request

        return Request(lm=str(self.path("4_lm_stage2")), tokenizer=str(self.path("1_tokenizer")),
                       flow=str(self.path("5_flow")), vocoder=str(self.path("6_vocoder")), output="",
                       seed=self.q.seed, max_len=2 * self.q.seq_len, max_frames=self.q.reply_frames,
                       min_audio_frames=self.q.reply_frames // 2)

    def generate(self) -> dict:
        from bajax.speech.reply import speak

        out = self.path("7_generate")
        out.mkdir(parents=True, exist_ok=True)
        prompt = write_held_out_prompt(out / "prompt.wav")
        reply = speak(dataclasses.replace(self._request(), audio=str(prompt), output=str(out / "reply.wav")))
        print(reply.text)
        print(reply.report, flush=True)
        return {"prompt": str(prompt), "wav": reply.wav, "png": reply.png, "text": reply.text[:80],
                "report": reply.report}

    def export(self) -> dict:
        from bajax.interop.export import export

        out = {}
        for stage, name in (("1_tokenizer", "tokenizer"), ("4_lm_stage2", "lm"), ("5_flow", "flow"),
                            ("6_vocoder", "vocoder")):
            target = self.path("8_export") / name
            export(str(self.path(stage)), str(target), log=lambda *a: None)
            out[name] = str(target)
        return out

    def evaluate(self) -> dict:
        """`bajax eval` of the trained parts (9_eval/<task>/results.*): the codec (held-out audio -> tokenizer ->
        flow -> HiFT, against the input), TTS (English sentences of the training split spoken by the LM,
        transcribed by PocketSphinx: the embedded held-out split is Mandarin, which the offline recogniser cannot
        transcribe) and spoken replies to held-out prompts (DNSMOS, text-speech consistency)."""
        from bajax.eval import codec, spoken

        got = {}
        c, _ = codec.evaluate(self._eval_settings("9_eval/codec"), flow=str(self.path("5_flow")),
                              vocoder=str(self.path("6_vocoder")))
        full = next(iter(c["groups"].values()))
        got.update({f"codec_{k}": full[k]["mean"] for k in ("pesq_wb", "stoi", "estoi", "mel_l1") if k in full})
        t, _ = spoken.evaluate_tts(self._eval_settings("9_eval/tts", spoken=True, split="train", language="en"),
                                   self._request())
        got.update({f"tts_{k}": t["metrics"][k]["mean"] for k in ("speaker_sim", "dnsmos_ovrl")
                    if k in t["metrics"]})
        got.update({"tts_wer": (t["corpus"] or {}).get("wer_en"), "tts_cer": (t["corpus"] or {}).get("cer_en")})
        s, _ = spoken.evaluate_s2s(self._eval_settings("9_eval/s2s", spoken=True), self._request())
        got.update({f"reply_{k}": s["metrics"][k]["mean"] for k in ("dnsmos_ovrl", "seconds") if k in s["metrics"]})
        got["utterances"], got["spoken"] = self.q.eval_utterances, self.q.eval_spoken
        got["results"] = str(self.path("9_eval"))
        return got


STAGES = (
    Stage("0_text_lm", "text-only pre-training of the tiny LLM", Quickstart.text_lm),
    Stage("1_tokenizer", "audio tokenizer (RVQ, EMA/L2 codebooks, mel decoder)", Quickstart.tokenizer),
    Stage("2_prepare", "tokenise the corpus into codes", Quickstart.prepare),
    Stage("3_lm_stage1", "LLM stage 1: audio embeddings + audio head", Quickstart.lm_stage1),
    Stage("4_lm_stage2", "LLM stage 2: all but text embedding / LM head", Quickstart.lm_stage2),
    Stage("5_flow", "flow-matching decoder", Quickstart.flow),
    Stage("6_vocoder", "HiFT vocoder (GAN)", Quickstart.vocoder),
    Stage("7_generate", "spoken reply to a held-out prompt", Quickstart.generate),
    Stage("8_export", "export to PyTorch (Baichuan layout)", Quickstart.export),
    Stage("9_eval", "bajax eval: codec, TTS and spoken replies", Quickstart.evaluate),
)


def write_held_out_prompt(path: Path) -> Path:
    """The first spoken sentence of the first validation-split document of the embedded corpus (never
    seen in training), written as a 16 kHz wav: a short spoken prompt for the reply."""
    from bajax.audio import io as audio_io
    from bajax.data import sources

    root = sources.corpus_dir()
    for line in (root / sources.CORPUS_MANIFEST).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("split") == "valid" and entry["task"] == "asr":
            audio = entry["audio"][0] if isinstance(entry["audio"], list) else entry["audio"]
            wave = audio_io.load(str(root / audio), 16000)
            first = entry["segments"][0]
            audio_io.write(str(path), wave[int(first["start"] * 16000):int(first["end"] * 16000)], 16000)
            return path
    raise FileNotFoundError("the embedded corpus has no validation ASR sample to use as a prompt")


def run(qcfg: ConfigDict, workdir: str, *, quiet: bool = False, stop_before: str | None = None) -> dict:
    """Runs every unfinished stage in order; returns {stage: results} including the earlier runs'."""
    qs = Quickstart(qcfg, workdir, quiet=quiet)
    qs.workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for i, stage in enumerate(STAGES):
        if stop_before == stage.name:
            break
        marker = qs.path(stage.name) / "DONE"
        if marker.exists():
            results[stage.name] = json.loads(marker.read_text())
            print(f"[{i}/{len(STAGES) - 1}] {stage.title}: done earlier", flush=True)
            continue
        print(f"[{i}/{len(STAGES) - 1}] {stage.title} ...", flush=True)
        start = time.perf_counter()
        out = stage.run(qs)
        out["seconds"] = round(time.perf_counter() - start, 1)
        qs.path(stage.name).mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(out, indent=1, default=str))
        results[stage.name] = out
    summary = summarize(qs, results)
    (qs.workdir / "summary.md").write_text(summary)
    print(summary, flush=True)
    return results


def summarize(qs: Quickstart, results: dict) -> str:
    """The closing table: losses, codebook usage, held-out mel MAE, text-only loss, time, artifacts."""
    lines = ["| stage | key results | time (s) |", "|---|---|---|"]
    for stage in STAGES:
        r = results.get(stage.name)
        if r is None:
            lines.append(f"| {stage.name} | (not run) | |")
            continue
        keys = [k for k in SUMMARY_KEYS.get(stage.name, ()) if k in r]
        text = ", ".join(f"{k} {_fmt(r[k])}" for k in keys)
        lines.append(f"| {stage.name} | {text} | {r.get('seconds', '')} |")
    tok = results.get("1_tokenizer", {})
    usage = [f"L{i}: usage {_fmt(tok.get(f'usage_{i}'))}, ppl {_fmt(tok.get(f'perplexity_{i}'))}"
             for i in range(8) if f"usage_{i}" in tok]
    text_before = results.get("0_text_lm", {}).get("eval_text_loss")
    text_after = results.get("4_lm_stage2", {}).get("eval_text_loss")
    out = ["", "## bajax quickstart summary", "", *lines, ""]
    if usage:
        out += ["Codebook usage / perplexity per RVQ layer: " + "; ".join(usage), ""]
    if text_before is not None and text_after is not None:
        out += [f"Held-out text-only loss: {text_before:.4f} after text pre-training, {text_after:.4f} after "
                "two-stage audio training.", ""]
    out += ["Artifacts:"] + [f"- {stage.name}: {qs.path(stage.name)}" for stage in STAGES
                             if stage.name in results]
    voc = results.get("6_vocoder", {})
    if "hift_mr_stft" in voc:
        out += [f"Held-out copy synthesis ({qs.q.eval_utterances} valid-split utterances; `bajax eval vocoder`): "
                f"HiFT multi-resolution STFT distance {_fmt(voc['hift_mr_stft'])}, mel L1 {_fmt(voc['hift_mel_l1'])}, "
                f"PESQ {_fmt(voc.get('hift_pesq_wb'))}, STOI {_fmt(voc.get('hift_stoi'))}; Griffin-Lim "
                f"{_fmt(voc['griffin_lim_mr_stft'])}, {_fmt(voc['griffin_lim_mel_l1'])}, "
                f"{_fmt(voc.get('griffin_lim_pesq_wb'))}, {_fmt(voc.get('griffin_lim_stoi'))}.", ""]
    ev = results.get("9_eval", {})
    if ev:
        e = {k: _fmt(v) for k, v in ev.items()}
        out += ["## Evaluation (bajax eval; per-utterance tables in 9_eval/<task>/)", "",
                f"- codec, {e['utterances']} held-out utterances through tokenizer -> flow -> HiFT: PESQ "
                f"{e.get('codec_pesq_wb')}, STOI {e.get('codec_stoi')}, ESTOI {e.get('codec_estoi')}, "
                f"mel L1 {e.get('codec_mel_l1')}",
                f"- TTS, {e['spoken']} English training-split sentences, PocketSphinx: WER {e.get('tts_wer')}, "
                f"CER {e.get('tts_cer')}, speaker similarity {e.get('tts_speaker_sim')}, DNSMOS "
                f"{e.get('tts_dnsmos_ovrl')} (PocketSphinx's own WER on the corpus's espeak speech is 0.75: "
                "the ceiling)",
                f"- spoken replies to {e['spoken']} held-out prompts: DNSMOS {e.get('reply_dnsmos_ovrl')}, "
                f"{e.get('reply_seconds')} s on average", ""]
    gen = results.get("7_generate", {})
    for key in ("wav", "png"):
        if key in gen:
            out.append(f"- reply {key}: {gen[key]}")
    return "\n".join(out) + "\n"


SUMMARY_KEYS = {
    "0_text_lm": ("loss", "eval_text_loss"),
    "1_tokenizer": ("loss", "mel_loss", "commit_loss", "eval_mel_mae"),
    "2_prepare": ("samples", "hours", "rejected"),
    "3_lm_stage1": ("loss", "audio_loss", "eval_text_loss"),
    "4_lm_stage2": ("loss", "text_loss", "audio_loss", "eval_text_loss"),
    "5_flow": ("loss", "cfm_loss", "prior_mae"),
    "6_vocoder": ("loss", "mel_l1", "hift_mr_stft", "griffin_lim_mr_stft", "hift_pesq_wb"),
    "7_generate": ("report",),
    "8_export": ("lm", "tokenizer", "flow", "vocoder"),
    "9_eval": ("codec_pesq_wb", "codec_stoi", "tts_wer", "reply_dnsmos_ovrl"),
}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
