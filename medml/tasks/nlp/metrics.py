"""Entity-level NER metrics with seqeval (strict mode, IOB2 scheme: an entity counts only
when its type and both boundaries match exactly), per entity type; bootstrap CIs
(resampled by document) and subgroup tables come from ``medml.evaluation``.

Per-document counts (true positives, predicted and true entities, overall and per type)
are computed once with seqeval's strict entity extraction and kept in the prediction
table, so that scoring any subset of documents (a bootstrap resample, a subgroup) is a
sum: micro precision, recall and F1 are exactly seqeval's on those documents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SUBGROUPS = ("site", "sex", "age_band")


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """Strict IOB2 entities ``(type, start token, end token)`` of one tag sequence."""
    from seqeval.scheme import IOB2, Entities

    return {(e.tag, e.start, e.end) for e in Entities([tags], IOB2).entities[0]}


def doc_counts(y_true: list[str], y_pred: list[str], types: list[str]) -> dict[str, int]:
    """tp / n_pred / n_true overall and per entity type for one document."""
    t, p = entities(y_true), entities(y_pred)
    out = {"tp": len(t & p), "n_pred": len(p), "n_true": len(t)}
    for ty in types:
        tt = {e for e in t if e[0] == ty}
        pp = {e for e in p if e[0] == ty}
        out |= {f"tp_{ty}": len(tt & pp), f"n_pred_{ty}": len(pp), f"n_true_{ty}": len(tt)}
    return out


def _prf(tp: float, n_pred: float, n_true: float) -> tuple[float, float, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f)


def score(pred: pd.DataFrame, types: list[str]) -> dict[str, float]:
    """Micro precision, recall, F1 (and F1 per type) of the documents in ``pred``."""
    if not len(pred):
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan")}
    p, r, f = _prf(pred["tp"].sum(), pred["n_pred"].sum(), pred["n_true"].sum())
    out = {"precision": p, "recall": r, "f1": f}
    for ty in types:
        if f"tp_{ty}" in pred:
            out[f"f1_{ty}"] = _prf(pred[f"tp_{ty}"].sum(), pred[f"n_pred_{ty}"].sum(),
                                   pred[f"n_true_{ty}"].sum())[2]
    return out


def per_type_table(pred: pd.DataFrame) -> pd.DataFrame:
    """seqeval's classification report (strict, IOB2) as a table: one row per entity type
    and the micro/macro/weighted averages."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    y_true = [s.split() for s in pred["y_true"]]
    y_pred = [s.split() for s in pred["y_pred"]]
    report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2,
                                   output_dict=True, zero_division=0)
    return pd.DataFrame([{"entity_type": k, "precision": float(v["precision"]),
                          "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                          "support": int(v["support"])} for k, v in report.items()])


def figures(table: pd.DataFrame) -> dict:
    """A bar chart of precision, recall and F1 per entity type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[~table["entity_type"].str.contains("avg")]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(rows) + 2), 4))
    x = np.arange(len(rows))
    for k, m in enumerate(("precision", "recall", "f1")):
        ax.bar(x + (k - 1) * 0.27, rows[m], 0.27, label=m)
    ax.set_xticks(x, rows["entity_type"])
    ax.set(ylim=(0, 1), title="Entity-level metrics per type (test, strict IOB2)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return {"per_type.png": fig}
