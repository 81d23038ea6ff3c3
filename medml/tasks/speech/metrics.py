"""Speech metrics (jiwer): word and character error rates over a set of utterances,
a bootstrap CI resampled by speaker, per-speaker and per-subgroup tables."""

from __future__ import annotations

import jiwer
import numpy as np
import pandas as pd

SUBGROUPS = ("sex", "site", "age_band", "noise", "voice")


def error_rates(refs: list[str], hyps: list[str]) -> dict[str, float]:
    """Corpus WER and CER (errors over all reference words/characters, as jiwer computes
    them for lists), and the share of utterances transcribed exactly. Utterances whose
    normalised reference is empty are left out (nothing to score)."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan"), "exact_match": float("nan")}
    r, h = [p[0] for p in pairs], [p[1] for p in pairs]
    return {"wer": float(jiwer.wer(r, h)), "cer": float(jiwer.cer(r, h)),
            "exact_match": float(np.mean([a == b for a, b in pairs]))}


def score(pred: pd.DataFrame) -> dict[str, float]:
    """Scalar metrics of one split's predictions (columns ``reference``, ``hypothesis``)."""
    return error_rates(pred["reference"].astype(str).tolist(),
                       pred["hypothesis"].fillna("").astype(str).tolist())


def bootstrap_ci(pred: pd.DataFrame, groups: pd.Series, metric: str = "wer", n: int = 500,
                 seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``metric``, resampling whole speakers with replacement (rows of one
    speaker are not independent). Error counts are precomputed per utterance, so each
    resample only sums them."""
    refs = pred["reference"].astype(str).tolist()
    hyps = pred["hypothesis"].fillna("").astype(str).tolist()
    unit = (lambda s: s.split()) if metric == "wer" else list
    errs, sizes = np.zeros(len(refs)), np.zeros(len(refs))
    for i, (r, h) in enumerate(zip(refs, hyps, strict=True)):
        if not r.strip():
            continue
        out = (jiwer.process_words(r, h) if metric == "wer" else jiwer.process_characters(r, h))
        errs[i] = out.substitutions + out.deletions + out.insertions
        sizes[i] = len(unit(r))
    g = groups.fillna(pred["id"]).astype(str).to_numpy()
    uniq, inverse = np.unique(g, return_inverse=True)
    e_sum = np.bincount(inverse, errs, len(uniq))
    n_sum = np.bincount(inverse, sizes, len(uniq))
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        take = rng.integers(0, len(uniq), len(uniq))
        total = n_sum[take].sum()
        if total > 0:
            vals.append(e_sum[take].sum() / total)
    if not vals:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    return float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def group_table(pred: pd.DataFrame, manifest: pd.DataFrame, columns: tuple[str, ...],
                speaker_column: str = "patient_id") -> pd.DataFrame:
    """Metrics per speaker (attribute ``speaker``) and per value of each subgroup column
    that is filled in (sex, noise, voice...)."""
    from medml.gate import subgroups

    rows = [{"attribute": "speaker" if col == speaker_column else col, "value": str(value),
             "n": len(part), **score(part)}
            for col, value, part in subgroups(pred, manifest, (speaker_column, *columns))]
    return pd.DataFrame(rows, columns=["attribute", "value", "n", "wer", "cer",
                                       "exact_match"])


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
