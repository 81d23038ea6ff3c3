"""The model card of a registered version: one Markdown page logged with the version
(``model_card.md`` in its run) and shown by ``medml lineage``.

Intended use, data (dataset, DVC hash, split sizes, class balance), test metrics with CIs,
subgroups, the gate decision, limitations. Read from the tracking store and the
workspace's dataset; nothing is computed again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medml import lineage, registry
from medml import render as rd
from medml.errors import MedMLError

if TYPE_CHECKING:
    from medml.tasks.base import Task

CARD = lineage.MODEL_CARD
SMALL_DATASET = 1000  # examples: below this, the card says the evidence is thin
DIGITS = 3  # decimals of the card's metrics
NONE = "_none recorded_"


def _table(header: list[Any], rows: list[list[Any]]) -> list[str]:
    return rd.md_table(header, rows, empty=NONE, digits=DIGITS)


def _plugin(task: str) -> Task | None:
    """The task plug-in, or None for a task this install does not know."""
    from medml.tasks import get_task

    try:
        return get_task(task)
    except MedMLError:
        return None


def _dataset(settings: Any, name: str):
    """(manifest, meta, tracked md5) of the workspace's dataset, or Nones."""
    from medml.data.dataset import load_manifest, load_meta
    from medml.data.versioning import data_version

    path = Path(settings.data_dir) / name
    try:
        manifest, meta = load_manifest(path), load_meta(path)
    except Exception:  # noqa: BLE001 - the card still renders from the store alone
        return None, None, None
    try:
        tracked = data_version(Path(settings.workspace), path).md5
    except Exception:  # noqa: BLE001
        tracked = None
    return manifest, meta, tracked


def render(settings: Any, name: str, version: str | int, opened: Any = None) -> str:
    """The model card of ``name`` version ``version`` (Markdown). ``settings``: the
    Settings; the dataset is read from its workspace unless ``opened`` (a lifecycle
    ``RunContext`` of the version's dataset) already holds it."""
    client = registry.client_for(settings)
    mv = client.get_model_version(name, str(version))
    run = client.get_run(mv.run_id) if mv.run_id else None
    metrics = run.data.metrics if run else {}
    rtags = run.data.tags if run else {}
    task = mv.tags.get("task") or rtags.get("medml.task", "")
    dataset = mv.tags.get("dataset") or rtags.get("medml.dataset", "")
    registered = (mv.tags.get("dvc_data_hash") or rtags.get("medml.data_md5", "")
                  ).removesuffix(".dir")
    if opened is not None and opened.dataset == dataset:
        manifest, meta, tracked = opened.manifest(), opened.meta, opened.data_md5
    else:
        manifest, meta, tracked = (_dataset(settings, dataset) if dataset
                                   else (None, None, None))
    classes = list(meta.classes) if meta else []
    limitations: list[str] = []

    lines = [f"# Model card: {name} version {mv.version}", "",
             f"Task `{task}`; trained on dataset `{dataset}` (DVC md5 `{registered}`) in MLflow "
             f"run `{mv.run_id}`, code at git commit `{mv.tags.get('git_commit') or 'unknown'}`.",
             "", "## Intended use", ""]
    plugin = _plugin(task)
    use = (plugin.intended_use if plugin else f"a {task} model").format(
        classes=", ".join(classes) if classes else "its classes")
    lines.append(f"This model {use}. It is meant for research and for evaluating a "
                 "decision-support workflow under clinical supervision: a clinician reviews "
                 "every output. It is not a medical device and must not be the sole basis of a "
                 "diagnosis.")
    if meta and meta.extra.get("description"):
        lines += ["", str(meta.extra["description"])]
    lines += ["", "Out of scope: populations, sites, devices or image types unlike the "
              "training data below; use without local validation."]

    lines += ["", "## Data", ""]
    if manifest is None:
        lines.append(f"Dataset `{dataset}` is not in this workspace; sizes not available.")
        limitations.append("the training data could not be inspected when this card was "
                           "written")
    else:
        lines += [f"- dataset: `{dataset}` ({meta.source}, format {meta.format})",
                  f"- DVC md5: `{registered}`"
                  + ("" if tracked in (None, registered) else
                     f" (the workspace now tracks `{tracked}`: counts below are of that)"),
                  f"- git revision of the data: `{mv.tags.get('git_commit') or 'unknown'}`",
                  f"- examples: {len(manifest)}"
                  + (f", patients: {manifest['patient_id'].nunique()}"
                     if "patient_id" in manifest else "")]
        splits = [s for s in ("train", "val", "test") if "split" in manifest
                  and (manifest["split"] == s).any()]
        label_set = classes or sorted(manifest["label"].dropna().unique())
        rows = []
        for s in splits:
            part = manifest[manifest["split"] == s]
            counts = part["label"].value_counts()
            rows.append([s, len(part),
                         part["patient_id"].nunique() if "patient_id" in part else ""]
                        + [f"{int(counts.get(c, 0))} ({counts.get(c, 0) / max(len(part), 1):.0%})"
                           for c in label_set])
        lines += ["", "Split sizes and class balance:", ""]
        lines += _table(["split", "examples", "patients", *label_set], rows)
        if len(manifest) < SMALL_DATASET:
            limitations.append(f"small dataset ({len(manifest)} examples): wide confidence "
                               "intervals, subgroup results are thin")
        if "site" in manifest and manifest["site"].notna().any():
            sites = manifest["site"].dropna().unique()
            if len(sites) == 1:
                limitations.append("single site" + (f" ({sites[0]})" if len(sites) else "")
                                   + ": performance elsewhere is unknown")
        counts = manifest["label"].value_counts()
        if len(counts) and counts.min() / counts.sum() < 0.15:
            limitations.append(f"class imbalance: {counts.idxmin()} is "
                               f"{counts.min() / counts.sum():.0%} of examples")
        if meta.source == "generated":
            limitations.append("synthetic demo data: the model says nothing about real "
                               "patients")
    accepted = rtags.get("medml.validation.accepted")
    if accepted and accepted != "0":
        limitations.append(f"{accepted} validation finding(s) accepted for this dataset "
                           "(see the lineage's data section)")

    lines += ["", "## Metrics (held-out test split)", ""]
    rows = []
    for k in sorted(metrics):
        if k.startswith("test_") and not k.endswith(("_ci_low", "_ci_high")):
            lo, hi = metrics.get(f"{k}_ci_low"), metrics.get(f"{k}_ci_high")
            rows.append([k.removeprefix("test_"), metrics[k],
                         f"[{rd.num(lo, DIGITS)}, {rd.num(hi, DIGITS)}]" if lo is not None else ""])
    lines += _table(["metric", "value", f"95% CI (bootstrap by {_group_name(plugin)})"], rows)

    lines += ["", "## Subgroups", ""]
    sub = lineage.table_rows(lineage.run_json(client, mv.run_id, "eval/subgroups.json"))
    if sub:
        cols = list(sub[0])
        lines += _table(cols, [[r.get(c) for c in cols] for r in sub])
        small = [f"{r.get('attribute')}={r.get('value')}" for r in sub
                 if isinstance(r.get("n"), int | float) and r["n"] < 30]
        if small:
            limitations.append("subgroups with fewer than 30 test examples: "
                               + ", ".join(small[:8]) + ("..." if len(small) > 8 else ""))
    else:
        lines.append(NONE)

    lines += ["", "## Gate decision", ""]
    mine = [d for d in lineage.gate_decisions(client, name)
            if str(d.get("version")) == str(mv.version)]
    if not mine:
        lines.append("Pending: the promotion gate runs after registration; see "
                     f"`medml lineage {name}/{mv.version}` for its decision.")
    else:
        d = mine[-1]
        lines.append(f"{'Passed' if d.get('passed') else 'Refused'} at {d.get('decided_at')} "
                     f"(decision `{d.get('decision_id')}`, compared with champion "
                     f"{d.get('champion_version') or 'none'}): {rd.decision_checks(d)}.")

    limitations.append("not validated prospectively, nor on an external site")
    if "test_ece" in metrics:
        limitations.append("calibration measured on the test split only (ECE): check it "
                           "before using decision thresholds elsewhere")
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in limitations]
    return "\n".join(lines) + "\n"


def _group_name(plugin: Task | None) -> str:
    """What the task's bootstrap resamples together: "patient", "document", "speaker"."""
    column = plugin.group_column if plugin else "patient_id"
    return column.removesuffix("_id").replace("_", " ")


def log(settings: Any, name: str, version: str | int, opened: Any = None) -> str:
    """Render the card (``opened``: see ``render``) and log it as ``model_card.md`` in the
    version's run; returns it."""
    client = registry.client_for(settings)
    mv = client.get_model_version(name, str(version))
    card = render(settings, name, version, opened)
    client.log_text(mv.run_id, card, CARD)
    return card
