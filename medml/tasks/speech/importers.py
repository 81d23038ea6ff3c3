"""Importers for real speech data: a folder of WAV files with a JSONL manifest, and the
Free Spoken Digit Dataset (FSDD) naming scheme.

Every importer writes each utterance as ``out_dir/audio/<id>.wav`` (16 kHz mono 16-bit
PCM: resampled and down-mixed by ``medml.tasks.speech.audio``) and returns the manifest
(``BASE_COLUMNS``, the transcript ``text`` and measured properties: sample rate,
duration, peak level, silence ratio, content hash) with the dataset metadata. The speaker
becomes ``patient_id``, pseudonymised by the deid stage like any patient id; the
transcript is de-identified like clinical text. Any bad file stops the import with one
line naming it; the caller stages ``out_dir``, so nothing is left behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from medml.data.dataset import SPLITS, DatasetMeta
from medml.data.textfile import json_lines
from medml.errors import BadInputError
from medml.tasks.speech.audio import read_wav, save_audio
from medml.tasks.speech.text import normalise

MANIFEST_NAMES = ("manifest.jsonl", "metadata.jsonl", "transcripts.jsonl")
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z][A-Za-z0-9-]*)_(\d+)\.wav$")
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FSDD_TEST_INDEX = range(0, 5)  # the official test split: recordings 0-4 of every digit
FSDD_VAL_INDEX = range(5, 10)  # our choice: the next five recordings of every digit


def _example_id(stem: str, seen: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "utt"
    eid, k = base, 1
    while eid in seen:
        k += 1
        eid = f"{base}-{k}"
    seen.add(eid)
    return eid


def _find_manifest(src: Path) -> tuple[Path, Path]:
    """(JSONL manifest, folder its audio paths are relative to)."""
    if src.is_file():
        return src, src.parent
    for name in MANIFEST_NAMES:
        if (src / name).is_file():
            return src / name, src
    found = sorted(src.glob("*.jsonl"))
    if len(found) == 1:
        return found[0], src
    raise BadInputError(f"{src}: no JSONL manifest ({', '.join(MANIFEST_NAMES)} or one "
                        "*.jsonl) with lines {\"audio\": ..., \"text\": ..., \"speaker\": ...}; "
                        "add one")


def import_wav_jsonl(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                     ) -> tuple[pd.DataFrame, DatasetMeta]:
    """A folder of WAV files with a JSONL manifest, one utterance per line:
    ``{"audio": "rel/path.wav", "text": "transcript", "speaker": "id"}`` and optionally
    ``"split"`` (train/val/test: given for every line or for none) and ``"label"``."""
    manifest_path, root = _find_manifest(Path(src))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for where, _, rec in json_lines(manifest_path, "audio, text, speaker"):
        audio_rel = rec.get("audio")
        if not isinstance(audio_rel, str) or not audio_rel.strip():
            raise BadInputError(f"{where}: no \"audio\" path; give the WAV file's path "
                                "relative to the manifest")
        text = rec.get("text")
        if not isinstance(text, str) or not normalise(text):
            raise BadInputError(f"{where} ({audio_rel}): no transcript (\"text\" missing or "
                                "empty); add the words spoken")
        split = rec.get("split")
        if split is not None and split not in SPLITS:
            raise BadInputError(f"{where}: split {split!r}; use one of {', '.join(SPLITS)}")
        path = (root / audio_rel).resolve()
        if not path.is_file():
            raise BadInputError(f"{where}: audio file {audio_rel} not found under {root}")
        audio = read_wav(path)
        eid = _example_id(Path(audio_rel).with_suffix("").as_posix(), seen)
        speaker = rec.get("speaker")
        rows.append({"id": eid, "label": rec.get("label"), "split": split,
                     "patient_id": str(speaker) if speaker not in (None, "") else None,
                     "site": rec.get("site"), "sex": rec.get("sex"),
                     "age_band": rec.get("age_band"), "text": text.strip(),
                     "source_file": audio_rel, **save_audio(audio, out_dir, eid)})
    if not rows:
        raise BadInputError(f"{manifest_path}: no utterances; add one JSON line per WAV file")
    df = pd.DataFrame(rows)
    given = df["split"].notna()
    if given.any() and not given.all():
        bad = df.loc[~given, "source_file"].head(3).tolist()
        raise BadInputError(f"{manifest_path}: some lines have a split and others not (e.g. "
                            f"{bad}); give every line a split, or none")
    meta = DatasetMeta(name=name, task="speech", classes=[], source=str(src),
                       format="wav-jsonl", extra={"manifest": manifest_path.name})
    return df, meta


def import_fsdd(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                ) -> tuple[pd.DataFrame, DatasetMeta]:
    """The Free Spoken Digit Dataset: ``{digit}_{speaker}_{index}.wav`` (8 kHz mono), the
    transcript is the digit's word. Splits: the official test split (index 0-4) is kept;
    validation is index 5-9, the rest (10-49) trains. Speakers are in every split, as in
    the official split (it is by recording, not by speaker): the dataset says so, and
    validation does not expect a speaker-level split."""
    src = Path(src)
    folder = src / "recordings" if (src / "recordings").is_dir() else src
    if not folder.is_dir():
        raise BadInputError(f"{src}: not a folder of FSDD recordings")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise BadInputError(f"{folder}: no files; give the FSDD recordings folder")
    rows = []
    numbers: dict[str, int] = {}  # speaker -> number: names stay out of ids and paths
    seen: set[str] = set()
    for path in files:
        m = FSDD_NAME.match(path.name)
        if m is None:
            raise BadInputError(f"{path}: name does not follow the FSDD scheme "
                                "{digit}_{speaker}_{index}.wav (e.g. 7_jackson_32.wav); "
                                "rename or remove it")
        digit, speaker, index = int(m.group(1)), m.group(2), int(m.group(3))
        split = ("test" if index in FSDD_TEST_INDEX else
                 "val" if index in FSDD_VAL_INDEX else "train")
        eid = _example_id(f"{digit}_s{numbers.setdefault(speaker, len(numbers)):02d}_{index:02d}",
                          seen)
        rows.append({"id": eid, "label": DIGITS[digit], "split": split, "patient_id": speaker,
                     "site": None, "sex": None, "age_band": None, "text": DIGITS[digit],
                     "source_file": "fsdd", **save_audio(read_wav(path), out_dir, eid)})
    df = pd.DataFrame(rows)
    meta = DatasetMeta(
        name=name, task="speech", classes=[], source=str(src), format="fsdd",
        patient_level_split=False,
        extra={"split_note": "FSDD official split: recording index 0-4 of every digit and "
                             "speaker is test; index 5-9 is val, 10-49 train (speakers "
                             "appear in every split)",
               "description": "Free Spoken Digit Dataset: spoken digits, real voices"})
    return df, meta


IMPORTERS = {"wav-jsonl": import_wav_jsonl, "fsdd": import_fsdd}
