"""Synthesises the embedded speech corpus (bajax/data/corpus) with espeak-ng.

    python scripts/make_corpus.py [--out bajax/data/corpus] [--minutes 20.5] [--seed 0]

Sentences come from templates over small parallel English/Mandarin lexicons written for bajax (so every
sentence has an exact translation for S2TT), plus spoken questions with text answers for AQA. Each sentence
is synthesised on its own (several voices and speaking rates), trimmed, and concatenated into documents of
3-5 sentences with 0.25 s pauses, so every segment boundary is exact. Documents become samples of all seven
task formats (asr, tts, intlv, itts, pure audio over the whole document; s2tt per sentence pair; aqa per
question); about 10% of documents are held out as the validation split. Audio is stored as 16 kHz FLAC
quantised to 12 bits (SNR ~57 dB; keeps the corpus under 20 MB). Finally the bootstrap quantiser
(bajax/data/bootstrap_codes.py) is fitted on the training audio and saved next to the manifest.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import subprocess

import numpy as np
import soundfile as sf

from bajax.audio import io as audio_io
from bajax.audio.resample import resample
from bajax.data import bootstrap_codes

SR = 16000
PAUSE = 0.25
VOICES = {
    "en": [
        "en-us",
        "en-gb",
        "en-gb-scotland",
        "en-029",
        "en-gb-x-rp",
        "en-us+f3",
        "en-gb+f2",
        "en-us+m3",
        "en-gb-x-rp+f4",
    ],
    "zh": ["cmn", "cmn+f2", "cmn+m3", "cmn+f4"],
}

ZH_DIGITS = "零一二三四五六七八九"


def zh_num(n: int) -> str:
    if n < 10:
        return ZH_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else ZH_DIGITS[tens]) + "十" + (ZH_DIGITS[ones] if ones else "")


EN_NUM = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
SUBJECTS = [
    ("the old man", "老人"),
    ("my sister", "我的姐姐"),
    ("the teacher", "老师"),
    ("a small dog", "一只小狗"),
    ("the farmer", "农民"),
    ("our neighbour", "我们的邻居"),
    ("the doctor", "医生"),
    ("a young girl", "一个小女孩"),
    ("my father", "我的父亲"),
    ("the student", "那个学生"),
]
ACTIONS = [
    ("reads a book", "在看书"),
    ("drinks hot tea", "在喝热茶"),
    ("cooks dinner", "在做晚饭"),
    ("walks to the market", "走去市场"),
    ("writes a letter", "在写信"),
    ("plays the piano", "在弹钢琴"),
    ("cleans the kitchen", "在打扫厨房"),
    ("waters the flowers", "在给花浇水"),
    ("sings a song", "在唱歌"),
]
TIMES = [
    ("in the morning", "早上"),
    ("every evening", "每天晚上"),
    ("on Sunday", "星期天"),
    ("after lunch", "午饭后"),
    ("before school", "上学前"),
]
CITIES = [
    ("Beijing", "北京"),
    ("Shanghai", "上海"),
    ("London", "伦敦"),
    ("Paris", "巴黎"),
    ("Tokyo", "东京"),
    ("New York", "纽约"),
    ("Sydney", "悉尼"),
]
WEATHER = [("cold", "冷"), ("hot", "热"), ("warm", "暖和"), ("cool", "凉快"), ("sunny", "晴朗")]
THINGS = [
    ("apples", "个苹果"),
    ("books", "本书"),
    ("cups", "个杯子"),
    ("pens", "支笔"),
    ("oranges", "个橙子"),
]
FOODS = [
    ("noodles", "面条"),
    ("rice", "米饭"),
    ("fish", "鱼"),
    ("dumplings", "饺子"),
    ("green tea", "绿茶"),
    ("fresh fruit", "新鲜水果"),
]
PLACES = [
    ("the library", "图书馆"),
    ("the hospital", "医院"),
    ("the park", "公园"),
    ("the station", "车站"),
    ("the museum", "博物馆"),
    ("the beach", "海边"),
]


def parallel_sentence(rng: np.random.Generator) -> tuple[str, str]:
    """One (English, Mandarin) sentence pair from a random template."""
    pick = lambda xs: xs[rng.integers(len(xs))]
    (s, sz), (a, az), (t, tz) = pick(SUBJECTS), pick(ACTIONS), pick(TIMES)
    (c, cz), (w, wz), (f, fz), (p, pz) = pick(CITIES), pick(WEATHER), pick(FOODS), pick(PLACES)
    n = int(rng.integers(2, 10))
    thing, thing_zh = pick(THINGS)
    hour = int(rng.integers(1, 13))
    k = int(rng.integers(6))
    if k == 0:
        return f"{t.capitalize()}, {s} {a}.", f"{tz}{sz}{az}。"
    if k == 1:
        return f"Today the weather in {c} is {w}.", f"今天{cz}的天气很{wz}。"
    if k == 2:
        return (
            f"There are {EN_NUM[n]} {thing} on the table.",
            f"桌子上有{'两' if n == 2 else zh_num(n)}{thing_zh}。",
        )
    if k == 3:
        return f"{s.capitalize()} likes {f} very much.", f"{sz}非常喜欢{fz}。"
    if k == 4:
        return (
            f"The train to {c} leaves at {EN_NUM[hour] if hour <= 20 else hour} o'clock.",
            f"去{cz}的火车{'两' if hour == 2 else zh_num(hour)}点出发。",
        )
    return f"{s.capitalize()} is going to {p} tomorrow.", f"{sz}明天要去{pz}。"


ANIMALS = [
    ("cat", "猫", 4),
    ("bird", "鸟", 2),
    ("spider", "蜘蛛", 8),
    ("dog", "狗", 4),
    ("horse", "马", 4),
    ("chicken", "鸡", 2),
    ("ant", "蚂蚁", 6),
]
CAPITALS = [
    ("France", "法国", "Paris", "巴黎"),
    ("Japan", "日本", "Tokyo", "东京"),
    ("China", "中国", "Beijing", "北京"),
    ("Italy", "意大利", "Rome", "罗马"),
    ("Germany", "德国", "Berlin", "柏林"),
    ("Spain", "西班牙", "Madrid", "马德里"),
    ("Egypt", "埃及", "Cairo", "开罗"),
    ("Russia", "俄罗斯", "Moscow", "莫斯科"),
]
COLOURS = [
    ("grass", "草", "green", "绿色"),
    ("the sky", "天空", "blue", "蓝色"),
    ("snow", "雪", "white", "白色"),
    ("a banana", "香蕉", "yellow", "黄色"),
    ("coal", "煤", "black", "黑色"),
    ("a tomato", "西红柿", "red", "红色"),
]


def question(rng: np.random.Generator, lang: str) -> tuple[str, str]:
    """A spoken question and its text answer, in `lang`."""
    pick = lambda xs: xs[rng.integers(len(xs))]
    k = int(rng.integers(4))
    if k == 0:
        a, b = (int(x) for x in rng.integers(1, 10, size=2))
        if lang == "en":
            return (
                f"What is {EN_NUM[a]} plus {EN_NUM[b]}?",
                f"{EN_NUM[a].capitalize()} plus {EN_NUM[b]} is {a + b}.",
            )
        return f"{zh_num(a)}加{zh_num(b)}等于多少？", f"{zh_num(a)}加{zh_num(b)}等于{zh_num(a + b)}。"
    if k == 1:
        en, zh, n = pick(ANIMALS)
        if lang == "en":
            return f"How many legs does a {en} have?", f"A {en} has {EN_NUM[n]} legs."
        return f"{zh}有几条腿？", f"{zh}有{'两' if n == 2 else zh_num(n)}条腿。"
    if k == 2:
        en, zh, cen, czh = pick(CAPITALS)
        if lang == "en":
            return f"What is the capital of {en}?", f"The capital of {en} is {cen}."
        return f"{zh}的首都是哪里？", f"{zh}的首都是{czh}。"
    en, zh, cen, czh = pick(COLOURS)
    if lang == "en":
        return f"What colour is {en}?", f"{en.capitalize()} is {cen}."
    return f"{zh}是什么颜色的？", f"{zh}是{czh}的。"


def synth(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng -> 16 kHz float32, leading/trailing silence trimmed to 50 ms."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    x, sr = sf.read(io.BytesIO(wav), dtype="float32")
    x = resample(x, sr, SR)
    loud = np.flatnonzero(np.abs(x) > 2e-3)
    a, b = max(0, loud[0] - 800), min(len(x), loud[-1] + 800)
    return x[a:b]


def make_document(doc_id: str, lang: str, pairs, rng, out: pathlib.Path) -> dict:
    voice = VOICES[lang][rng.integers(len(VOICES[lang]))]
    speed = int(rng.integers(150, 190))
    parts, segs, t = [], [], 0.0
    for i, pair in enumerate(pairs):
        x = synth(pair[0], voice, speed)
        if i:
            parts.append(np.zeros(int(PAUSE * SR), np.float32))
            t += PAUSE
        parts.append(x.astype(np.float32))
        segs.append(
            {
                "audio": 0,
                "start": round(t, 4),
                "end": round(t + len(x) / SR, 4),
                "text": pair[0],
                "other": pair[1],
            }
        )
        t += len(x) / SR
    # 12-bit samples in 16-bit FLAC: the encoder detects the 4 unused low bits and does not store them.
    pcm = (np.round(np.concatenate(parts) * 2048) * 16).clip(-32768, 32767).astype(np.int16)
    sf.write(out / "audio" / f"{doc_id}.flac", pcm, SR, subtype="PCM_16")
    speech = sum(x["end"] - x["start"] for x in segs)
    return {"id": doc_id, "lang": lang, "voice": voice, "segments": segs, "seconds": speech}


def samples_of(doc: dict, split: str) -> list[dict]:
    """Manifest rows of every task format from one document."""
    lang, path = doc["lang"], f"audio/{doc['id']}.flac"
    segs = [{k: s[k] for k in ("audio", "start", "end", "text")} for s in doc["segments"]]
    base = {"language": lang, "split": split, "audio": [path]}
    if doc["id"].startswith("q"):  # question documents: one AQA sample per question
        return [
            {
                **base,
                "id": f"{doc['id']}-aqa{i}",
                "task": "aqa",
                "segments": [seg],
                "response": s["other"],
                "response_language": lang,
            }
            for i, (seg, s) in enumerate(zip(segs, doc["segments"], strict=True))
        ]
    rows = [
        {**base, "id": f"{doc['id']}-{task}", "task": task, "segments": segs}
        for task in ("asr", "tts", "intlv", "itts", "audio")
    ]
    other = "zh" if lang == "en" else "en"
    for i in range(0, len(segs), 2):  # S2TT: each pair of sentences -> its translation
        chunk = doc["segments"][i : i + 2]
        sep = "" if other == "zh" else " "
        rows.append(
            {
                **base,
                "id": f"{doc['id']}-s2tt{i}",
                "task": "s2tt",
                "segments": segs[i : i + 2],
                "response": sep.join(s["other"] for s in chunk),
                "response_language": other,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1] / "bajax/data/corpus"))
    ap.add_argument("--minutes", type=float, default=20.5, help="minutes of speech (pauses excluded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codebook-sizes", default="64,64,64,64,64,64,64,64")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    docs, total, seen = [], 0.0, set()
    while total < args.minutes * 60:
        n = len(docs)
        lang = "en" if n % 5 < 3 else "zh"  # 60% English, 40% Mandarin documents
        size = int(rng.integers(3, 6))
        if n % 6 == 5:
            kind, pairs = "q", [question(rng, lang) for _ in range(size)]
        else:
            kind, pairs = "d", []
            while len(pairs) < size:
                en, zh = parallel_sentence(rng)
                if en not in seen:  # every sentence is spoken once in the whole corpus
                    seen.add(en)
                    pairs.append((en, zh) if lang == "en" else (zh, en))
        doc = make_document(f"{kind}{n:04d}-{lang}", lang, pairs, rng, out)
        docs.append(doc)
        total += doc["seconds"]
        print(f"\r{len(docs)} documents, {total / 60:.1f} min", end="", flush=True)
    print()
    rows, train_waves = [], []
    for i, doc in enumerate(docs):
        split = "valid" if i % 10 == 9 else "train"
        rows += samples_of(doc, split)
        if split == "train":
            train_waves.append(audio_io.load(out / "audio" / f"{doc['id']}.flac", SR))
    with open(out / "manifest.jsonl", "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    sizes = tuple(int(s) for s in args.codebook_sizes.split(","))
    feats = np.concatenate([bootstrap_codes.features(w) for w in train_waves])
    quant = bootstrap_codes.BootstrapQuantiser.fit(feats, sizes, seed=args.seed)
    (out / "bootstrap_quantiser.npz").write_bytes(quant.to_bytes())
    mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    print(
        f"{len(rows)} samples from {len(docs)} documents, {total / 60:.1f} min of speech, {mb:.1f} MB, "
        f"bootstrap quantiser {sizes} fitted on {len(feats)} frames"
    )


if __name__ == "__main__":
    main()
