"""Transcripts as model targets: normalisation and the character vocabulary."""

from __future__ import annotations

import re

# CTC blank is index 0; characters follow. Digits are not in the vocabulary: transcripts
# are written in words ("nine", "twice daily"), as a dictation system outputs them.
VOCAB = " abcdefghijklmnopqrstuvwxyz'"
_DROP = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Lower case; hyphens, slashes and other separators become spaces; characters outside
    the vocabulary (digits, punctuation, placeholders' brackets) are dropped; single
    spaces. WER and CER are computed on normalised text."""
    t = str(text).lower().replace("’", "'")
    t = re.sub(r"[-/_.,;:!?()\[\]]", " ", t)
    t = _DROP.sub("", t)
    t = _SPACES.sub(" ", t).strip()
    return t.strip("'").strip()


def encode(text: str, vocab: str = VOCAB) -> list[int]:
    """Normalised text as label indices (1-based: 0 is the CTC blank)."""
    index = {c: i + 1 for i, c in enumerate(vocab)}
    return [index[c] for c in normalise(text) if c in index]


def decode(indices: list[int], vocab: str = VOCAB) -> str:
    """Label indices (no blanks) back to text."""
    return "".join(vocab[i - 1] for i in indices if 0 < i <= len(vocab))
