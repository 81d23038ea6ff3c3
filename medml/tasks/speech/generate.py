"""Demo dictation: clinical phrases spoken by eSpeak NG "speakers", with background noise.

Phrases come from a small dictation grammar (templates with slots: symptoms, body parts,
drugs, doses, frequencies, findings, tests, specialties, spelled-out numbers), or from a
CSV column given as ``phrases_csv`` (e.g. the "Medical Speech, Transcription, and Intent"
phrases). A speaker is a persona: an English accent, a voice variant (male or female),
a base pitch and speaking rate; each utterance varies rate and pitch a little, adds
leading/trailing silence and mixes in white, pink or brown noise at an SNR drawn from
``snr_db`` (``null``: clean). Audio is resampled from eSpeak's 22.05 kHz to 16 kHz mono.

The generator sets the splits itself, by phrase *and* by speaker: the distinct phrases are
divided into train/val/test, and so are the speakers; a speaker only says phrases of
its own split. So the test split holds sentences never heard in training, said by
speakers never heard in training (with the grammar, the words are known but the sentences
are new combinations; with a CSV, words can be new too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medml.data.dataset import SPLITS, DatasetMeta
from medml.errors import BadInputError
from medml.tasks.speech.audio import SAMPLE_RATE, Audio, resample, save_audio
from medml.tasks.speech.text import normalise

DEFAULTS: dict[str, Any] = {
    "n_speakers": 30,
    "utterances_per_speaker": 40,
    "n_phrases": 1500,  # distinct grammar phrases in the pool (ignored with phrases_csv)
    "fractions": [0.7, 0.15, 0.15],  # of phrases and of speakers: train, val, test
    "accents": ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"],
    "variants": ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"],
    "rate": [140, 200],  # words per minute: base rates of speakers are drawn in this range
    "pitch": [30, 70],
    "snr_db": [None, 30, 20, 10],  # background noise levels; None: clean
    "phrases_csv": None,  # a CSV of phrases instead of the grammar
    "phrase_column": "phrase",
    "max_phrases": None,  # use at most this many distinct CSV phrases
}

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """0-999 in words ("one hundred twenty two"), as dictated."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else f" {ONES[n % 10]}")
    rest = n % 100
    return f"{ONES[n // 100]} hundred" + ("" if rest == 0 else f" {number_words(rest)}")


SLOTS: dict[str, list[str]] = {
    "symptom": ["chest pain", "shortness of breath", "a headache", "nausea", "vomiting",
                "dizziness", "a fever", "a dry cough", "fatigue", "back pain",
                "abdominal pain", "joint pain", "swelling", "a rash", "numbness",
                "blurred vision", "a sore throat", "palpitations", "trouble sleeping",
                "wheezing", "constipation", "diarrhea", "anxiety", "itching", "weakness",
                "chills", "heartburn", "muscle cramps", "ear pain", "a runny nose",
                "night sweats", "loss of appetite", "tingling", "stiffness"],
    "body": ["knee", "shoulder", "ankle", "wrist", "chest", "abdomen", "lower back", "neck",
             "left leg", "right arm", "left hip", "right foot", "throat", "skin", "lungs",
             "left ear", "right eye", "elbow", "upper back", "stomach"],
    "duration": ["for two days", "for three weeks", "since yesterday", "for several months",
                 "since last night", "for one week", "for about ten days", "since this morning",
                 "for four hours", "on and off for a year"],
    "drug": ["aspirin", "ibuprofen", "metformin", "lisinopril", "atorvastatin",
             "amoxicillin", "omeprazole", "prednisone", "insulin", "warfarin", "albuterol",
             "gabapentin", "sertraline", "furosemide", "levothyroxine", "paracetamol",
             "amlodipine", "naproxen"],
    "dose": ["five milligrams", "ten milligrams", "twenty milligrams", "fifty milligrams",
             "one hundred milligrams", "five hundred milligrams", "two puffs", "one tablet",
             "two tablets", "forty milligrams"],
    "freq": ["once daily", "twice daily", "three times a day", "at bedtime", "every morning",
             "as needed", "every six hours", "with meals", "every other day"],
    "finding": ["normal", "tender", "swollen", "clear", "red and warm", "stable",
                "mildly tender", "without bruising", "painful to touch", "within normal limits"],
    "specialty": ["cardiology", "neurology", "dermatology", "orthopedics", "physical therapy",
                  "gastroenterology", "the pain clinic", "ophthalmology"],
    "test": ["an x ray", "a blood test", "an ultrasound", "a chest x ray",
             "an electrocardiogram", "a scan", "a urine test", "a blood count"],
    "severity": ["mild", "moderate", "severe", "sharp", "dull", "constant", "intermittent"],
    "subject": ["the patient", "she", "he", "patient"],
    "unit": ["days", "weeks", "months"],
    "side_effect": ["stomach upset", "a rash", "dizziness", "low blood pressure", "cough"],
}

TEMPLATES: list[tuple[str, str]] = [
    ("symptom", "{subject} reports {symptom} {duration}"),
    ("symptom", "{subject} complains of {severity} {symptom}"),
    ("symptom", "{severity} pain in the {body} {duration}"),
    ("symptom", "{subject} denies {symptom} and {symptom}"),
    ("symptom", "{subject} has {symptom} and {symptom} {duration}"),
    ("medication", "start {drug} {dose} {freq}"),
    ("medication", "continue {drug} {dose} {freq}"),
    ("medication", "stop {drug} because of {side_effect}"),
    ("medication", "increase {drug} to {dose} {freq}"),
    ("exam", "the {body} is {finding}"),
    ("exam", "examination of the {body} is {finding}"),
    ("exam", "no swelling of the {body} today"),
    ("plan", "follow up in {small} {unit}"),
    ("plan", "refer to {specialty} for {symptom}"),
    ("plan", "order {test} of the {body}"),
    ("plan", "order {test} and follow up in {small} {unit}"),
    ("vitals", "blood pressure {systolic} over {diastolic}"),
    ("vitals", "heart rate {pulse} beats per minute"),
    ("vitals", "temperature {temp} point {small} degrees"),
    ("vitals", "oxygen saturation {spo2} percent on room air"),
]
NUMBERS = {"small": (1, 9), "systolic": (95, 180), "diastolic": (55, 110),
           "pulse": (48, 130), "temp": (96, 103), "spo2": (85, 100)}


def grammar_phrase(rng: np.random.Generator) -> tuple[str, str]:
    """One (category, phrase) from the dictation grammar."""
    import string

    category, template = TEMPLATES[rng.integers(len(TEMPLATES))]
    fields = {}
    for _, name, _, _ in string.Formatter().parse(template):
        if not name or name in fields:
            continue
        if name in NUMBERS:
            lo, hi = NUMBERS[name]
            fields[name] = number_words(int(rng.integers(lo, hi + 1)))
        else:
            fields[name] = SLOTS[name][rng.integers(len(SLOTS[name]))]
    # a slot named twice ({symptom} and {symptom}) gets a second, different value
    text = template
    for name, value in fields.items():
        text = text.replace("{" + name + "}", value, 1)
        while "{" + name + "}" in text:
            other = SLOTS[name][rng.integers(len(SLOTS[name]))] if name in SLOTS else value
            text = text.replace("{" + name + "}", other, 1)
    return category, text


def phrase_pool(p: dict[str, Any], rng: np.random.Generator) -> pd.DataFrame:
    """Distinct phrases (``text``, ``category``) from the grammar or from ``phrases_csv``."""
    if p.get("phrases_csv"):
        path = Path(p["phrases_csv"])
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{path}: cannot read the phrases CSV ({exc}); give a CSV "
                                f"with a {p['phrase_column']!r} column") from None
        if p["phrase_column"] not in df.columns:
            raise BadInputError(f"{path}: no column {p['phrase_column']!r}; set "
                                "tasks.speech.demo.phrase_column")
        cat = "prompt" if "prompt" in df.columns else p["phrase_column"]
        rows = pd.DataFrame({"text": df[p["phrase_column"]].astype(str).map(normalise),
                             "category": df[cat].astype(str).str.lower()})
        rows = rows[rows["text"].str.len() > 0].drop_duplicates("text")
        rows = rows.sort_values("text").reset_index(drop=True)
        if p.get("max_phrases"):
            rows = rows.iloc[rng.permutation(len(rows))[: int(p["max_phrases"])]]
        return rows.reset_index(drop=True)
    seen: dict[str, str] = {}
    target = int(p["n_phrases"])
    for _ in range(target * 20):
        if len(seen) >= target:
            break
        category, text = grammar_phrase(rng)
        seen.setdefault(text, category)
    return pd.DataFrame({"text": list(seen), "category": list(seen.values())})


def _assign(n: int, fractions: list[float], rng: np.random.Generator) -> np.ndarray:
    """Split labels for ``n`` items, shuffled, by ``fractions`` (each split gets >= 1)."""
    f = np.asarray(fractions, dtype=float)
    counts = np.maximum(1, np.floor(f / f.sum() * n).astype(int))
    counts[0] = max(1, n - counts[1:].sum())
    labels = np.repeat(np.array(SPLITS), counts)[:n]
    return labels[rng.permutation(len(labels))]


def colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """White, pink (1/f) or brown (1/f^2) noise of unit RMS."""
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
        spec /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spec, n)
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


def speakers(p: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Speaker personas: accent, voice variant, base pitch and rate."""
    out = []
    for i in range(int(p["n_speakers"])):
        variant = p["variants"][rng.integers(len(p["variants"]))]
        accent = p["accents"][rng.integers(len(p["accents"]))]
        out.append({"speaker": f"S{i:03d}", "voice": f"{accent}+{variant}",
                    "sex": "F" if variant.startswith("f") else "M",
                    "pitch": int(rng.integers(p["pitch"][0], p["pitch"][1] + 1)),
                    "rate": int(rng.integers(p["rate"][0], p["rate"][1] + 1))})
    return out


def utterance(engine: Any, text: str, spk: dict[str, Any], snr: float | None, noise: str,
              rng: np.random.Generator) -> np.ndarray:
    """One utterance at 16 kHz: synthesised, padded with silence, noise mixed at ``snr``."""
    rate = int(spk["rate"] * rng.uniform(0.9, 1.1))
    pitch = int(np.clip(spk["pitch"] + rng.integers(-6, 7), 0, 99))
    x = engine.synth(text, spk["voice"], rate, pitch)
    x = resample(x, engine.sample_rate, SAMPLE_RATE)
    pad = [np.zeros(int(rng.uniform(0.05, 0.3) * SAMPLE_RATE), np.float32) for _ in range(2)]
    x = np.concatenate([pad[0], x, pad[1]]).astype(np.float64)
    speech_rms = np.sqrt(np.mean(x[np.abs(x) > 1e-4] ** 2)) if np.any(np.abs(x) > 1e-4) else 0
    if snr is not None and speech_rms > 0:
        x = x + colored_noise(rng, len(x), noise) * speech_rms * 10 ** (-float(snr) / 20)
    gain = rng.uniform(0.3, 0.9) / max(np.abs(x).max(), 1e-6)
    return (x * gain).astype(np.float32)


def generate(out_dir: Path, params: dict[str, Any], seed: int, name: str
             ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Write a demo dictation dataset into ``out_dir`` and return its manifest."""
    from medml.tasks.speech.tts import ESpeak

    p = {**DEFAULTS, **params}
    rng = np.random.default_rng(seed)
    pool = phrase_pool(p, rng)
    if len(pool) < 3:
        raise BadInputError(f"demo: {len(pool)} distinct phrases; need at least 3")
    pool["split"] = _assign(len(pool), p["fractions"], rng)
    people = speakers(p, rng)
    for spk, split in zip(people, _assign(len(people), p["fractions"], rng), strict=True):
        spk["split"] = split
    engine = ESpeak.get()
    rows = []
    for spk in people:
        mine = pool[pool["split"] == spk["split"]]
        take = rng.choice(len(mine), min(int(p["utterances_per_speaker"]), len(mine)),
                          replace=False)
        for j in take:
            phrase = mine.iloc[int(j)]
            snr = p["snr_db"][rng.integers(len(p["snr_db"]))]
            noise = ["white", "pink", "brown"][rng.integers(3)] if snr is not None else "none"
            x = utterance(engine, phrase["text"], spk, snr, noise, rng)
            eid = f"utt-{len(rows):05d}"  # speaker ids stay out of example ids
            audio = Audio(x, SAMPLE_RATE, engine.sample_rate, 1, "PCM_16")
            rows.append({"id": eid, "label": phrase["category"], "split": spk["split"],
                         "patient_id": spk["speaker"], "site": None, "sex": spk["sex"],
                         "age_band": None, "text": phrase["text"], "voice": spk["voice"],
                         "noise": noise if snr is None else f"{noise} {snr} dB",
                         "snr_db": snr, "source_file": "generated",
                         **save_audio(audio, out_dir, eid)})
    manifest = pd.DataFrame(rows)
    extra = {"generator": {k: v for k, v in p.items()}, "seed": seed,
             "split_note": "split by phrase and by speaker: test sentences and speakers are "
                           "never heard in training",
             "description": "Synthetic dictation (eSpeak NG voices, noise); "
                            + ("phrases from " + Path(p["phrases_csv"]).name
                               if p.get("phrases_csv") else "phrases from a dictation "
                                                             "grammar")}
    meta = DatasetMeta(name=name, task="speech", classes=[], source="generated",
                       format="demo", extra=extra)
    return manifest, meta
