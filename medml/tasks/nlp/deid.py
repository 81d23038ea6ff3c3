"""De-identification of note files (the deid stage): PHI found by ``medml.deid.text``
becomes typed placeholders (``[NAME]``, ``[DATE]``...) and every offset is moved with it.

Placeholders change lengths, so entity spans and tokens are mapped from the original
text to the new one. An offset outside any identifier moves by the length change of the
identifiers before it; an entity boundary that falls inside an identifier snaps outward
to the placeholder's edge (privacy first: the identifier goes, the entity keeps its place
and type, its text now holds the placeholder). Tokens inside an identifier are replaced
by the placeholder's own tokens (``[``, ``NAME``, ``]``: what the tokenizer gives at
prediction time). Files are replaced by writing a new file and renaming it over the old
one, never in place: they may be hard links to the previous stage's files.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from medml.data.dataset import sha256_file
from medml.errors import BadInputError
from medml.tasks.nlp.documents import Doc, measure, read_doc, tags_from_spans, tokenize


def _mapper(spans: list[Any]):
    """``newpos(offset, side)``: an original offset in the de-identified text; ``side`` is
    ``start`` or ``end`` (where an offset inside an identifier snaps to)."""
    def newpos(x: int, side: str) -> int:
        delta = 0
        for sp in spans:
            if x <= sp.start:
                break
            if x >= sp.end:
                delta += len(sp.replacement) - (sp.end - sp.start)
                continue
            base = sp.start + delta
            return base if side == "start" else base + len(sp.replacement)
        return x + delta
    return newpos


def deidentify_doc(doc: Doc, salt: bytes | None = None, source: str = "text"
                   ) -> tuple[Doc, list[Any], dict[str, int]]:
    """The document with its PHI replaced and its offsets mapped; the PHI spans (types and
    original offsets only) and counts of entities that touched an identifier."""
    from medml.deid.text import deidentify_text

    text, spans = deidentify_text(doc.text, salt=salt, source=source)
    if not spans:
        return doc, [], {"entities_adjusted": 0, "entities_dropped": 0}
    newpos = _mapper(spans)
    touched = dropped = 0
    ents: list[tuple[int, int, str]] = []
    for s, e, label in doc.entities:
        if any(sp.start < e and s < sp.end for sp in spans):
            touched += 1
        ns, ne = newpos(s, "start"), newpos(e, "end")
        if ents and ns < ents[-1][1]:  # two entities snapped onto one placeholder
            dropped += 1
            continue
        ents.append((ns, ne, label))
    tokens: list[tuple[int, int]] = []
    for s, e in doc.tokens:  # the parts of each token outside every identifier
        pieces = [(s, e)]
        for sp in spans:
            pieces = [q for a, b in pieces for q in ((a, min(b, sp.start)), (max(a, sp.end), b))
                      if q[0] < q[1]]
        tokens += [(newpos(a, "start"), newpos(b, "end")) for a, b in pieces]
    for sp in spans:
        base = newpos(sp.start, "start")
        tokens += [(base + a, base + b) for a, b in tokenize(sp.replacement)]
    tokens = sorted(set(tokens))
    new = Doc(text, ents, tokens)
    try:
        tags_from_spans(new.tokens, new.entities)
    except ValueError as exc:  # a bug here must never write a misaligned document
        raise BadInputError(f"{source}: offsets could not be kept right after "
                            f"de-identification ({exc}); report this document") from None
    return new, spans, {"entities_adjusted": touched, "entities_dropped": dropped}


def deid_files(dataset_dir: Path, manifest: pd.DataFrame, key: bytes
               ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """De-identify every document file of ``manifest`` in ``dataset_dir``; the manifest with
    new hashes and measured fields, and the report section (counts only)."""
    df = manifest.copy()
    found: Counter[str] = Counter()
    changed = adjusted = dropped = 0
    updates: dict[Any, dict[str, Any]] = {}
    for idx, rel in df["path"].items():
        path = Path(dataset_dir) / str(rel)
        doc = read_doc(path)
        new, spans, counts = deidentify_doc(doc, salt=key, source=str(rel))
        if not spans:
            continue
        changed += 1
        found.update(sp.type for sp in spans)
        adjusted += counts["entities_adjusted"]
        dropped += counts["entities_dropped"]
        tmp = path.with_name(f".{path.name}.deid-tmp")
        import json

        tmp.write_text(json.dumps(new.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)  # a new inode: a hard-linked original stays untouched
        updates[idx] = measure(new, str(rel), sha256_file(path))
    for idx, fields in updates.items():
        for k, v in fields.items():
            if k in df.columns:
                df.at[idx, k] = v
    report = {"documents": len(df), "changed": changed, "replaced": dict(sorted(found.items())),
              "entities_touching_phi": adjusted, "entities_dropped": dropped}
    return df, report
