"""Imaging metrics (scikit-learn) and plots: AUROC, accuracy, sensitivity, specificity,
ECE, ROC/confusion/calibration. CIs and subgroup tables: ``medml.evaluation``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, roc_auc_score, roc_curve

SUBGROUPS = ("site", "sex", "age_band")


def prob_matrix(pred: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return pred[[f"p_{c}" for c in classes]].to_numpy(dtype=float)


def positive_class(classes: list[str], configured: str | None = None) -> str:
    """The class that counts as 'disease present' for sensitivity in a binary task."""
    if configured:
        return configured
    others = [c for c in classes if c.lower() not in ("normal", "negative", "benign")]
    return others[0] if len(classes) == 2 and others else classes[-1]


def auroc(y: np.ndarray, probs: np.ndarray, classes: list[str], pos: str) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if len(classes) == 2:
        k = classes.index(pos)
        return float(roc_auc_score(y == k, probs[:, k]))
    present = np.unique(y)
    if len(present) < len(classes):  # OvR over the classes present
        p = probs[:, present] / probs[:, present].sum(1, keepdims=True)
        return float(roc_auc_score(np.searchsorted(present, y), p, multi_class="ovr")
                     if len(present) > 2 else roc_auc_score(y == present[1], p[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr"))


def ece(y: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-class confidence."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


def score(pred: pd.DataFrame, classes: list[str], pos: str) -> dict[str, float]:
    """Scalar metrics of one split's predictions."""
    y = pred["y"].to_numpy()
    probs = prob_matrix(pred, classes)
    yhat = probs.argmax(1)
    out = {"auroc": auroc(y, probs, classes, pos), "accuracy": float(accuracy_score(y, yhat)),
           "ece": ece(y, probs)}
    # Sensitivity and specificity of the positive (disease) class at the operating point
    # (the arg-max class), one-vs-rest when there are more than two classes.
    k = classes.index(pos)
    tp = np.sum((yhat == k) & (y == k))
    tn = np.sum((yhat != k) & (y != k))
    out["sensitivity"] = float(tp / max(np.sum(y == k), 1))
    out["specificity"] = float(tn / max(np.sum(y != k), 1))
    if len(classes) > 2:
        recalls = [np.mean(yhat[y == i] == i) for i in range(len(classes)) if np.any(y == i)]
        out["balanced_accuracy"] = float(np.mean(recalls))
    return out


def figures(pred: pd.DataFrame, classes: list[str], pos: str) -> dict:
    """ROC, confusion-matrix and calibration figures (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    y, probs = pred["y"].to_numpy(), prob_matrix(pred, classes)
    figs = {}
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    targets = [pos] if len(classes) == 2 else classes
    for c in targets:
        k = classes.index(c)
        if 0 < np.sum(y == k) < len(y):
            fpr, tpr, _ = roc_curve(y == k, probs[:, k])
            ax.plot(fpr, tpr, label=f"{c} (AUC {roc_auc_score(y == k, probs[:, k]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
    ax.legend(loc="lower right", fontsize=8)
    figs["roc.png"] = fig

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    cm = confusion_matrix(y, probs.argmax(1), labels=range(len(classes)))
    ConfusionMatrixDisplay(cm, display_labels=classes).plot(ax=ax, colorbar=False)
    ax.set_title("Confusion (test)")
    fig.tight_layout()
    figs["confusion.png"] = fig

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    conf, hit = probs.max(1), probs.argmax(1) == y
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, 9)
    xs = [conf[idx == b].mean() for b in range(10) if np.any(idx == b)]
    ys = [hit[idx == b].mean() for b in range(10) if np.any(idx == b)]
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.plot(xs, ys, "o-")
    ax.set(xlabel="confidence", ylabel="accuracy", title="Calibration (test)")
    figs["calibration.png"] = fig
    return figs
