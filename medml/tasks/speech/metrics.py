"""Speech metrics (jiwer): word and character error rates over a set of utterances,
and plots. Bootstrap CIs (resampled by speaker) and per-speaker and per-subgroup tables
come from ``medml.evaluation``.

Per-utterance error counts can be computed once (``with_counts``) and kept in the
prediction table, so that scoring any subset of utterances (a bootstrap resample, a
subgroup) is a sum: corpus WER and CER are exactly jiwer's on those utterances.
"""

from __future__ import annotations

import jiwer
import numpy as np
import pandas as pd

SUBGROUPS = ("sex", "site", "age_band", "noise", "voice")

#: per-utterance counts: word and character errors (substitutions, deletions,
#: insertions), reference lengths, whether scored (non-empty reference) and exact
COUNTS = ("word_errors", "words", "char_errors", "chars", "scored", "exact")


def utterance_counts(reference: str, hypothesis: str) -> dict[str, int]:
    """Error counts of one utterance as jiwer computes them (all 0 when the normalised
    reference is empty: nothing to score)."""
    if not reference.strip():
        return dict.fromkeys(COUNTS, 0)
    w = jiwer.process_words(reference, hypothesis)
    c = jiwer.process_characters(reference, hypothesis)
    return {"word_errors": w.substitutions + w.deletions + w.insertions,
            "words": w.hits + w.substitutions + w.deletions,
            "char_errors": c.substitutions + c.deletions + c.insertions,
            "chars": c.hits + c.substitutions + c.deletions,
            "scored": 1, "exact": int(reference == hypothesis)}


def with_counts(pred: pd.DataFrame) -> pd.DataFrame:
    """``pred`` (columns ``reference``, ``hypothesis``) with the ``COUNTS`` columns."""
    refs = pred["reference"].astype(str).tolist()
    hyps = pred["hypothesis"].fillna("").astype(str).tolist()
    rows = [utterance_counts(r, h) for r, h in zip(refs, hyps, strict=True)]
    return pred.assign(**{c: np.array([row[c] for row in rows], dtype=float) for c in COUNTS})


def score(pred: pd.DataFrame) -> dict[str, float]:
    """Corpus WER and CER (errors over all reference words/characters, as jiwer computes
    them for lists), and the share of utterances transcribed exactly, of one split's
    predictions (columns ``reference``, ``hypothesis``; the ``COUNTS`` columns are used
    when present). Utterances whose normalised reference is empty are left out."""
    counts = pred if set(COUNTS) <= set(pred.columns) else with_counts(pred)
    total = counts[list(COUNTS)].to_numpy(float).sum(0)
    t = dict(zip(COUNTS, total, strict=True))
    if not t["scored"]:
        return {"wer": float("nan"), "cer": float("nan"), "exact_match": float("nan")}
    return {"wer": float(t["word_errors"] / t["words"]),
            "cer": float(t["char_errors"] / t["chars"]),
            "exact_match": float(t["exact"] / t["scored"])}


def figures(pred: pd.DataFrame, table: pd.DataFrame) -> dict:
    """WER per speaker (bar chart) and the distribution of per-utterance CER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    spk = table[table["attribute"] == "speaker"].sort_values("wer")
    fig, ax = plt.subplots(figsize=(5, max(2.5, 0.25 * len(spk) + 1)))
    ax.barh([str(v)[:16] for v in spk["value"]], spk["wer"])
    ax.set(xlabel="WER", title="WER per speaker (test)")
    fig.tight_layout()
    figs["wer_per_speaker.png"] = fig
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    cers = [jiwer.cer(r, h) if r.strip() else 0.0
            for r, h in zip(pred["reference"].astype(str), pred["hypothesis"].fillna(""),
                            strict=True)]
    ax.hist(np.clip(cers, 0, 1), bins=20)
    ax.set(xlabel="CER per utterance", ylabel="utterances", title="CER distribution (test)")
    fig.tight_layout()
    figs["cer_histogram.png"] = fig
    return figs
