"""Clinical-text documents: tokens with character offsets, entity spans, IOB2 tags, and
the JSON file each document is stored as in a dataset.

A document file (``docs/<id>.json``, UTF-8) holds ``text``, ``entities`` (a list of
``{"start", "end", "label"}`` with character offsets into ``text``, end exclusive) and
``tokens`` (``[[start, end], ...]``): the tokenization the tags are defined on, kept from
the source for IOB/CoNLL imports so that evaluation is on the source's tokens. Tags are
never stored: they are derived from tokens and spans (IOB2), so offsets and tags cannot
disagree.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medml.data.dataset import sha256_file

DOCS_DIR = "docs"
# Words (letters, digits, underscore: any script) or one other non-space character.
TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-.]*$")


@dataclass
class Doc:
    """One document: text, entity spans ``(start, end, label)`` and tokens ``(start, end)``."""

    text: str
    entities: list[tuple[int, int, str]] = field(default_factory=list)
    tokens: list[tuple[int, int]] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return [self.text[s:e] for s, e in self.tokens]

    def tags(self) -> list[str]:
        return tags_from_spans(self.tokens, self.entities)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text,
                "entities": [{"start": s, "end": e, "label": lab} for s, e, lab in self.entities],
                "tokens": [[s, e] for s, e in self.tokens]}


def tokenize(text: str) -> list[tuple[int, int]]:
    """Character offsets of the tokens of ``text`` (``TOKEN_RE``)."""
    return [m.span() for m in TOKEN_RE.finditer(text)]


def split_at(tokens: list[tuple[int, int]], cuts: set[int]) -> list[tuple[int, int]]:
    """``tokens`` with any token cut at the offsets in ``cuts`` that fall inside it (so that
    every entity boundary is a token boundary)."""
    out = []
    for s, e in tokens:
        inner = sorted(c for c in cuts if s < c < e)
        for a, b in zip([s, *inner], [*inner, e], strict=True):
            out.append((a, b))
    return out


def tags_from_spans(tokens: list[tuple[int, int]],
                    entities: list[tuple[int, int, str]]) -> list[str]:
    """IOB2 tags of ``tokens``: B- on an entity's first token, I- on the others, O outside.
    An entity that cuts a token, or covers none, raises ValueError."""
    tags = ["O"] * len(tokens)
    ends = [e for _, e in tokens]
    for s, e, label in entities:
        i = bisect.bisect_right(ends, s)  # first token ending after s
        inside = []
        while i < len(tokens) and tokens[i][0] < e:
            inside.append(i)
            i += 1
        if not inside:
            raise ValueError(f"entity {s}-{e} ({label}) covers no token")
        if tokens[inside[0]][0] < s or tokens[inside[-1]][1] > e:
            a, b = (tokens[inside[0]] if tokens[inside[0]][0] < s else tokens[inside[-1]])
            raise ValueError(f"entity {s}-{e} ({label}) cuts token {a}-{b}")
        for k, j in enumerate(inside):
            tags[j] = f"{'B' if k == 0 else 'I'}-{label}"
    return tags


def repair_iob2(tags: list[str]) -> list[str]:
    """Predicted tags made valid IOB2: an ``I-X`` that does not continue an ``X`` entity
    opens one (``B-X``), as a reader of the prediction would take it."""
    out, prev = [], "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out


def spans_from_tags(tokens: list[tuple[int, int]], tags: list[str]
                    ) -> list[tuple[int, int, str, list[int]]]:
    """Entity spans ``(start, end, label, token indices)`` of valid IOB2 ``tags``."""
    spans: list[tuple[int, int, str, list[int]]] = []
    cur: list[Any] | None = None
    for i, ((s, e), t) in enumerate(zip(tokens, tags, strict=True)):
        if t.startswith("I-") and cur is not None and cur[2] == t[2:]:
            cur[1] = e
            cur[3].append(i)
            continue
        if cur is not None:
            spans.append(tuple(cur))  # type: ignore[arg-type]
            cur = None
        if t != "O":
            cur = [s, e, t[2:], [i]]
    if cur is not None:
        spans.append(tuple(cur))  # type: ignore[arg-type]
    return spans


def iob2_valid(tags: list[str]) -> bool:
    """True when every ``I-X`` continues an ``X`` entity and every tag is O, B-X or I-X."""
    prev = "O"
    for t in tags:
        if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2):
            return False
        if t.startswith("I-") and prev[2:] != t[2:]:
            return False
        prev = t
    return True


def doc_is_valid(doc: Doc) -> bool:
    """Spans inside the text, sorted, not overlapping, on token boundaries; tokens inside
    the text and in order."""
    n = len(doc.text)
    last = 0
    for s, e in doc.tokens:
        if not (last <= s < e <= n):
            return False
        last = e
    last = 0
    for s, e, _ in doc.entities:
        if not (last <= s < e <= n):
            return False
        last = e
    try:
        return iob2_valid(doc.tags())
    except ValueError:
        return False


def write_doc(out_dir: Path, example_id: str, doc: Doc) -> dict[str, Any]:
    """Write ``out_dir/docs/<id>.json`` and return the measured manifest fields."""
    if not example_id or "/" in example_id or example_id.startswith("."):
        raise ValueError(f"bad example id {example_id!r}")
    rel = Path(DOCS_DIR) / f"{example_id}.json"
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc.to_json(), ensure_ascii=False), encoding="utf-8")
    return measure(doc, rel.as_posix(), sha256_file(path))


def measure(doc: Doc, rel_path: str, content_hash: str) -> dict[str, Any]:
    """Manifest fields of a document: path, hash, text and its measured properties."""
    types = sorted({lab for _, _, lab in doc.entities})
    return {"path": rel_path, "content_hash": content_hash, "text": doc.text,
            "label": "+".join(types) if types else "none",
            "n_chars": len(doc.text), "n_tokens": len(doc.tokens),
            "n_entities": len(doc.entities), "entity_types": " ".join(types),
            "encoding": "utf-8", "tags_valid": doc_is_valid(doc)}


def read_doc(path: Path) -> Doc:
    """A document file back as a Doc."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return Doc(raw["text"], [(int(x["start"]), int(x["end"]), str(x["label"]))
                             for x in raw.get("entities", [])],
               [(int(s), int(e)) for s, e in raw.get("tokens") or tokenize(raw["text"])])
