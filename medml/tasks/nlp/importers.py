"""Importers for clinical NER data: IOB/CoNLL token files and JSONL documents.

Formats (``medml data import --task nlp --format F SRC``):

- ``conll``: one ``token<TAB>tag`` per line (extra tab columns are allowed: the token is
  the first, the tag the last), a blank line between sentences, ``-DOCSTART-`` lines
  between documents. IOB1 or IOB2, told apart per sentence: an ``I-X`` that opens an
  entity (after ``O`` or another type) is read the IOB1 way, as the start of an entity.
- ``iob2``: the same files, declared strict IOB2: an ``I-X`` opening an entity is an
  error naming the file and line (use it when the file must be IOB2, e.g. a tool's output).
- ``iob1``: the same files, declared IOB1 (read as ``conll``).
- ``jsonl``: one JSON object per line, ``{"text", "entities": [{"start", "end",
  "label"}]}``, optionally ``id``, ``document_id``, ``patient_id``, ``site``, ``sex``,
  ``age_band`` and ``split``.

SRC is a file, or a folder holding ``train``, ``devel`` (or ``dev``/``val``) and ``test``
files (``.tsv``, ``.conll``, ``.iob``, ``.bio``, ``.txt``; ``.jsonl`` for jsonl): the
source's splits are then kept, as the imaging MedMNIST importer keeps official ones. All
formats give the same manifest and document files (``medml.tasks.nlp.documents``); a
sentence of a CoNLL file becomes one document whose text is its tokens joined by single
spaces, with the tokens kept as given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from medml.data.dataset import BASE_COLUMNS, DatasetMeta
from medml.data.textfile import json_lines, read_utf8
from medml.errors import BadInputError
from medml.tasks.nlp.documents import LABEL_RE, Doc, split_at, tokenize, write_doc

CONLL_SUFFIXES = {".tsv", ".conll", ".iob", ".bio", ".txt", ".iob2", ".bioes"}
SPLIT_NAMES = {"train": "train", "training": "train", "devel": "val", "dev": "val",
               "val": "val", "valid": "val", "validation": "val", "test": "test"}
TAG_RE = re.compile(r"^(?:O|[BI]-\S+)$")
DOCSTART = "-DOCSTART-"
OPTIONAL = ("patient_id", "site", "sex", "age_band")


def _source_files(src: Path, suffixes: set[str]) -> list[tuple[Path, str | None]]:
    """``[(file, split or None)]``: the file itself, or a folder's train/devel/test files."""
    if src.is_file():
        return [(src, None)]
    found: list[tuple[Path, str | None]] = []
    for p in sorted(src.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes:
            split = SPLIT_NAMES.get(p.stem.lower().split(".")[0])
            if split is None:
                raise BadInputError(f"{p}: cannot tell its split from the name; name the files "
                                    "train, devel (or val) and test, or import one file")
            found.append((p, split))
    if not found:
        raise BadInputError(f"{src}: no {'/'.join(sorted(suffixes))} file here; give a file, or "
                            "a folder with train, devel (or val) and test files")
    splits = [s for _, s in found]
    if len(set(splits)) != len(splits):
        raise BadInputError(f"{src}: two files for one split ({', '.join(p.name for p, _ in found)}"
                            "); keep one file per split")
    return found


# ---------------------------------------------------------------- CoNLL / IOB
def parse_conll(path: Path, scheme: str = "auto") -> list[tuple[Doc, int, int]]:
    """Sentences of an IOB file as ``(Doc, first line, document number)``, tags turned into
    IOB2 entity spans. ``scheme``: ``auto``/``iob1`` (an ``I-X`` opening an entity starts
    it) or ``iob2`` (an error)."""
    text = read_utf8(path)
    out: list[tuple[Doc, int, int]] = []
    words: list[str] = []
    tags: list[str] = []
    first, docno = 0, 0

    def flush() -> None:
        nonlocal words, tags
        if words:
            toks, pos = [], 0
            for w in words:
                toks.append((pos, pos + len(w)))
                pos += len(w) + 1
            spans, cur = [], None
            for (s, e), t in zip(toks, tags, strict=True):
                if t.startswith("I-") and cur is not None and cur[2] == t[2:]:
                    cur[1] = e
                    continue
                if cur is not None:
                    spans.append(tuple(cur))
                cur = [s, e, t[2:]] if t != "O" else None
            if cur is not None:
                spans.append(tuple(cur))
            out.append((Doc(" ".join(words), spans, toks), first, docno))
        words, tags = [], []

    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            flush()
            continue
        if line.split()[0] == DOCSTART:
            flush()
            docno += 1
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if len(cols) < 2 or not cols[-1] or not cols[0]:
            raise BadInputError(f"{path}:{n}: a token without a tag ({line.strip()[:40]!r}); "
                                "write `token<TAB>tag` (O, B-TYPE or I-TYPE) on every line")
        token, tag = cols[0], cols[-1]
        if any(c.isspace() for c in token):
            raise BadInputError(f"{path}:{n}: token {token!r} contains a space; one token "
                                "per line")
        if not TAG_RE.match(tag) or not LABEL_RE.match(tag[2:] or "O"):
            raise BadInputError(f"{path}:{n}: tag {tag!r} is not IOB (O, B-TYPE or I-TYPE); "
                                "convert the file to IOB1 or IOB2 tags")
        prev = tags[-1] if tags else "O"
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            if scheme == "iob2":
                raise BadInputError(
                    f"{path}:{n}: tag {tag!r} opens an entity after {prev!r}, which strict "
                    f"IOB2 forbids; write B-{tag[2:]} there, or import with --format conll "
                    "(accepts IOB1)")
            tag = "B-" + tag[2:]  # IOB1: an I- after O/another type starts the entity
        if not words:
            first = n
        words.append(token)
        tags.append(tag)
    flush()
    if not out:
        raise BadInputError(f"{path}:1: no sentence found; write `token<TAB>tag` lines")
    return out


def _import_conll(src: Path, out_dir: Path, name: str, scheme: str, fmt: str
                  ) -> tuple[pd.DataFrame, DatasetMeta]:
    rows: list[dict[str, Any]] = []
    for path, split in _source_files(Path(src), CONLL_SUFFIXES):
        prefix = split or "doc"
        for k, (doc, line, docno) in enumerate(parse_conll(path, scheme)):
            eid = f"{prefix}-{k:06d}"
            rows.append({"id": eid, "split": split, "patient_id": None, "site": None,
                         "sex": None, "age_band": None, "source_file": path.name,
                         "source_line": line,
                         "document_id": f"{prefix}-d{docno:05d}" if docno else eid,
                         **write_doc(out_dir, eid, doc)})
    return _finish(rows, name, fmt, src, {
        "iob_scheme_declared": scheme,
        "split_note": ("splits as given by the source files" if rows[0]["split"] else None)})


def import_conll(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                 ) -> tuple[pd.DataFrame, DatasetMeta]:
    """IOB1 or IOB2 token files (``conll``): stored as IOB2."""
    return _import_conll(src, out_dir, name, "auto", "conll")


def import_iob1(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Token files declared IOB1: stored as IOB2."""
    return _import_conll(src, out_dir, name, "iob1", "iob1")


def import_iob2(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                ) -> tuple[pd.DataFrame, DatasetMeta]:
    """Token files declared strict IOB2: an entity opened by ``I-`` is an error."""
    return _import_conll(src, out_dir, name, "iob2", "iob2")


# ---------------------------------------------------------------- JSONL
def parse_jsonl(path: Path) -> list[tuple[dict[str, Any], Doc, int]]:
    """``(record, Doc, line)`` per line of a JSONL file; tokens from ``tokenize``, cut at
    entity boundaries."""
    out = []
    for where, n, rec in json_lines(path, "'text' and 'entities'"):
        text = rec.get("text")
        if not isinstance(text, str) or not text.strip():
            raise BadInputError(f"{where}: 'text' is missing or empty; give the note's text")
        ents = rec.get("entities", [])
        if not isinstance(ents, list):
            raise BadInputError(f"{where}: 'entities' must be a list of "
                                "{start, end, label}")
        spans = []
        for e in ents:
            try:
                s, t, lab = int(e["start"]), int(e["end"]), str(e["label"])
            except (KeyError, TypeError, ValueError):
                raise BadInputError(f"{where}: entity {e!r} needs integer 'start', 'end' "
                                    "and a 'label'") from None
            if not (0 <= s < t <= len(text)):
                raise BadInputError(f"{where}: entity {s}-{t} ({lab}) is outside the text "
                                    f"(length {len(text)}); fix its offsets (end exclusive)")
            if not text[s:t].strip() or text[s].isspace() or text[t - 1].isspace():
                raise BadInputError(f"{where}: entity {s}-{t} ({lab}) starts or ends on "
                                    "whitespace; trim its offsets")
            if not LABEL_RE.match(lab):
                raise BadInputError(f"{where}: entity label {lab!r}: use letters, digits, "
                                    "'_', '-' or '.', starting with a letter")
            spans.append((s, t, lab))
        spans.sort()
        for a, b in zip(spans, spans[1:], strict=False):
            if b[0] < a[1]:
                raise BadInputError(f"{where}: entities {a[0]}-{a[1]} ({a[2]}) and "
                                    f"{b[0]}-{b[1]} ({b[2]}) overlap; NER needs flat spans")
        cuts = {x for s, t, _ in spans for x in (s, t)}
        out.append((rec, Doc(text, spans, split_at(tokenize(text), cuts)), n))
    if not out:
        raise BadInputError(f"{path}:1: no document found; write one JSON object per line")
    return out


SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,100}$")


def import_jsonl(src: Path, out_dir: Path, name: str, seed: int = 0, **_: Any
                 ) -> tuple[pd.DataFrame, DatasetMeta]:
    """JSONL documents ``{"text", "entities": [{"start", "end", "label"}]}``."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path, split in _source_files(Path(src), {".jsonl", ".json"}):
        for k, (rec, doc, line) in enumerate(parse_jsonl(path)):
            given = str(rec.get("id", "")) if rec.get("id") is not None else ""
            eid = given if SAFE_ID.match(given) else f"{split or 'doc'}-{k:06d}"
            if eid in seen:
                raise BadInputError(f"{path}:{line}: id {eid!r} appears twice; ids must be "
                                    "unique")
            seen.add(eid)
            rec_split = rec.get("split")
            if rec_split is not None and rec_split not in ("train", "val", "test"):
                raise BadInputError(f"{path}:{line}: split {rec_split!r}: use train, val or "
                                    "test (or leave it out)")
            row = {"id": eid, "split": split or rec_split, "source_file": path.name,
                   "source_line": line,
                   "document_id": str(rec.get("document_id") or eid),
                   **{c: (str(rec[c]) if rec.get(c) not in (None, "") else None)
                      for c in OPTIONAL},
                   **write_doc(out_dir, eid, doc)}
            rows.append(row)
    return _finish(rows, name, "jsonl", src, {})


def _finish(rows: list[dict[str, Any]], name: str, fmt: str, src: Path,
            extra: dict[str, Any]) -> tuple[pd.DataFrame, DatasetMeta]:
    manifest = pd.DataFrame(rows)
    for c in BASE_COLUMNS:
        if c not in manifest.columns:
            manifest[c] = None
    has_patients = manifest["patient_id"].notna().any()
    types = sorted({t for v in manifest["entity_types"] for t in str(v).split()})
    meta = DatasetMeta(name=name, task="nlp", classes=[], source=str(src), format=fmt,
                       patient_level_split=bool(has_patients),
                       extra={"entity_types": types, "tag_scheme": "IOB2",
                              **{k: v for k, v in extra.items() if v is not None}})
    return manifest, meta


IMPORTERS = {"conll": import_conll, "iob1": import_iob1, "iob2": import_iob2,
             "jsonl": import_jsonl}
