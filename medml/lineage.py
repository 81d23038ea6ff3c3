"""Lineage: the evidence pack of a registered version, and its check.

``collect`` gathers, from the tracking store only: model version -> run -> git commit and
environment -> DVC data version and content hash -> validation result -> metrics with CIs
and per subgroup -> gate decisions (every decision on the model, failed ones included) ->
alias history -> deployments. ``render`` writes it as JSON, Markdown or a self-contained
HTML page. ``verify`` recomputes the dataset's DVC content hash and the model artifact's
hash and names whatever changed since registration (the dataset through DVC's API, see
``medml.data.versioning``).

The model artifact hash is recorded at registration by ``record_model_files``: version tag
``model_sha256`` (sha256 over one line per file of ``models:/NAME/V``, sorted by relative
path: path, size and the sha256 of its bytes) and, in the version's run, the per-file
listing ``model_files.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from medml import registry
from medml import render as rd
from medml.data import versioning
from medml.errors import BadInputError

FORMATS = ("json", "md", "html")
MODEL_FILES = "model_files.json"  # per-file listing, in the version's run
MODEL_SHA_TAG = "model_sha256"  # version tag
MODEL_CARD = "model_card.md"  # in the version's run (medml.modelcard)
_CI = ("_ci_low", "_ci_high")


# ------------------------------------------------------------------ hashing
def file_hashes(root: str | Path) -> dict[str, dict[str, Any]]:
    """``{relative posix path: {"sha256", "size"}}`` of every file under ``root``."""
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out[path.relative_to(root).as_posix()] = {"sha256": h.hexdigest(),
                                                   "size": path.stat().st_size}
    return out


def combined_hash(files: dict[str, dict[str, Any]]) -> str:
    """One sha256 over a listing: sorted relative paths, sizes and the files' sha256."""
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(f"{rel}\0{files[rel]['size']}\0{files[rel]['sha256']}\n".encode())
    return h.hexdigest()


def _download(client, uri: str, dst: str) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=dst, tracking_uri=client.tracking_uri,
        registry_uri=getattr(client, "_registry_uri", None)))


def model_files(settings: Any, model_uri: str) -> dict[str, dict[str, Any]]:
    """The per-file listing (:func:`file_hashes`) of a model (``models:/NAME/V``,
    ``runs:/...``, ``models:/m-...``), downloaded to a temporary folder."""
    client = registry.client_for(settings)
    with tempfile.TemporaryDirectory(prefix="medml-model-") as tmp:
        return file_hashes(_download(client, model_uri, tmp))


def model_artifact_hash(settings: Any, model_uri: str) -> str:
    """sha256 of a model's files (see :func:`combined_hash`)."""
    return combined_hash(model_files(settings, model_uri))


def record_model_files(settings: Any, name: str, version: str | int) -> dict:
    """Hash registered version ``name``/``version`` and record it: version tag
    ``model_sha256`` and ``model_files.json`` in its run. Call right after registering."""
    client = registry.client_for(settings)
    mv = client.get_model_version(name, str(version))
    uri = f"models:/{name}/{mv.version}"
    files = model_files(client, uri)
    listing = {"model": name, "version": str(mv.version), "model_uri": uri,
               "source": mv.source, "sha256": combined_hash(files), "files": files,
               "recorded_at": _now()}
    if mv.run_id:
        client.log_text(mv.run_id, json.dumps(listing, indent=2), MODEL_FILES)
    client.set_model_version_tag(name, str(mv.version), MODEL_SHA_TAG, listing["sha256"])
    return listing


# ------------------------------------------------------------------ verify
def verify(settings: Any, model_ref: str) -> list[str]:
    """Recompute the dataset's and the model artifact's hashes of a registered version;
    one line per problem (each names the file that changed), empty when nothing did."""
    client = registry.client_for(settings)
    mv = registry.resolve(client, model_ref)
    return (verify_data(settings, mv.tags.get("dataset", ""), mv.tags.get("dvc_data_hash", ""))
            + verify_model(client, mv))


def verify_data(settings: Any, dataset: str, registered: str) -> list[str]:
    """Problems with dataset ``dataset`` against its registered DVC hash."""
    if not dataset or not registered:
        return ["data: the version records no dataset or no dvc_data_hash; cannot verify"]
    registered = registered.removesuffix(".dir")
    workspace, path = Path(settings.workspace), Path(settings.data_dir) / dataset
    if not path.is_dir():
        return [f"data: dataset directory {path} is missing"]
    now, listing = versioning.dir_hash(workspace, path)
    if now == registered:
        return []
    problems: list[str] = []  # the files first, then the hashes
    ref = versioning.registered_listing(workspace, registered)
    if ref is not None:
        problems += [f"data: {dataset}/{rel} changed" for rel in sorted(ref)
                     if rel in listing and listing[rel] != ref[rel]]
        problems += [f"data: {dataset}/{rel} missing" for rel in sorted(ref) if rel not in listing]
        problems += [f"data: {dataset}/{rel} added" for rel in sorted(listing) if rel not in ref]
    else:
        named = _changed_by_manifest(path)
        problems += [f"data: {dataset}/{rel} {what}" for rel, what in named]
        if not any(what != "not in the manifest" for _, what in named):
            problems.append(f"data: the registered file listing of {registered} is not in the "
                            "DVC cache; the changed file is not among the manifest's examples "
                            "(manifest.csv, dataset.json or an extra file)")
    problems.append(f"data: dataset {dataset!r} content hash is {now}, registered {registered}")
    try:
        tracked = versioning.data_version(workspace, path).md5
        if tracked != registered:
            problems.append(f"data: DVC now tracks {dataset!r} at {tracked} (re-versioned "
                            "since this model was registered)")
    except Exception:  # noqa: BLE001 - an untracked dataset is reported by the hash above
        pass
    return problems


def _changed_by_manifest(path: Path) -> list[tuple[str, str]]:
    """Without DVC's registered listing: the example files whose sha256 differs from the
    manifest's ``content_hash`` (or that are gone), and files the manifest does not list."""
    import pandas as pd

    try:
        m = pd.read_csv(path / "manifest.csv", dtype=str)
    except Exception:  # noqa: BLE001 - unreadable manifest: nothing to compare with
        return []
    out = []
    listed = {"manifest.csv", "dataset.json"}
    for rel, want in zip(m.get("path", []), m.get("content_hash", []), strict=False):
        listed.add(str(rel))
        f = path / str(rel)
        if not f.is_file():
            out.append((str(rel), "missing"))
        elif isinstance(want, str) and hashlib.sha256(f.read_bytes()).hexdigest() != want:
            out.append((str(rel), "changed"))
    out += [(rel, "not in the manifest") for rel in sorted(
        p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        if rel not in listed]
    return out


def verify_model(settings: Any, mv) -> list[str]:
    """Problems with the files of model version ``mv`` against the hash recorded at
    registration (version tag ``model_sha256``, listing ``model_files.json``)."""
    client = registry.client_for(settings)
    label = f"models:/{mv.name}/{mv.version}"
    recorded = mv.tags.get(MODEL_SHA_TAG)
    if not recorded:
        return [f"model: {label} has no recorded artifact hash (tag {MODEL_SHA_TAG}); "
                "cannot verify"]
    try:
        files = model_files(client, label)
    except Exception as exc:  # noqa: BLE001 - unreachable artifacts are a finding
        return [f"model: the artifacts of {label} cannot be read: {exc}"]
    now = combined_hash(files)
    if now == recorded:
        return []
    summary = f"model: {label} artifact hash is {now}, recorded {recorded}"
    listing = run_json(client, mv.run_id, MODEL_FILES) if mv.run_id else None
    ref = (listing or {}).get("files")
    if not isinstance(ref, dict) or combined_hash(ref) != recorded:
        return [summary, f"model: no trustworthy per-file listing ({MODEL_FILES}) to name "
                         "the changed file"]
    problems = [f"model: {rel} changed" for rel in sorted(ref)
                if rel in files and files[rel]["sha256"] != ref[rel]["sha256"]]
    problems += [f"model: {rel} missing" for rel in sorted(ref) if rel not in files]
    problems += [f"model: {rel} added" for rel in sorted(files) if rel not in ref]
    return [*problems, summary]


# ------------------------------------------------------------------ collect
def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _ts(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def _run_text(client, run_id: str | None, path: str) -> str | None:
    if not run_id:
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="medml-lineage-") as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_text()
    except Exception:  # noqa: BLE001 - an absent artifact reads as None
        return None


def run_json(client, run_id: str | None, path: str) -> Any:
    """The JSON artifact ``path`` of run ``run_id``, or None when absent or not JSON."""
    text = _run_text(client, run_id, path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def _list(client, run_id: str | None, path: str) -> list[str]:
    if not run_id:
        return []
    try:
        return [f.path for f in client.list_artifacts(run_id, path) if not f.is_dir]
    except Exception:  # noqa: BLE001
        return []


def table_rows(table: Any) -> list[dict]:
    """``mlflow.log_table`` JSON ({"columns", "data"}) as a list of rows (a list as is,
    anything else as no row)."""
    if isinstance(table, dict) and "columns" in table and "data" in table:
        return [dict(zip(table["columns"], row, strict=False)) for row in table["data"]]
    return table if isinstance(table, list) else []


def _model_env(client, name: str, version: str) -> dict:
    env: dict[str, Any] = {"requirements": [], "python": None, "mlflow": None}
    with tempfile.TemporaryDirectory(prefix="medml-env-") as tmp:
        for fname in ("requirements.txt", "MLmodel", "python_env.yaml"):
            try:
                text = _download(client, f"models:/{name}/{version}/{fname}",
                                 f"{tmp}/{fname}.d").read_text()
            except Exception:  # noqa: BLE001 - a model without that file
                continue
            if fname == "requirements.txt":
                env["requirements"] = [ln.strip() for ln in text.splitlines()
                                       if ln.strip() and not ln.startswith("#")]
            elif fname == "MLmodel":
                mlmodel = yaml.safe_load(text) or {}
                env["mlflow"] = mlmodel.get("mlflow_version")
                pyfunc = (mlmodel.get("flavors") or {}).get("python_function") or {}
                env["python"] = env["python"] or pyfunc.get("python_version")
                env["model_id"] = mlmodel.get("model_id")
                env["utc_time_created"] = mlmodel.get("utc_time_created")
            else:
                env["python"] = (yaml.safe_load(text) or {}).get("python") or env["python"]
    env["packages"] = dict(r.split("==", 1) for r in env["requirements"] if "==" in r)
    return env


def gate_decisions(settings: Any, name: str) -> list[dict]:
    """Every recorded gate decision on model ``name`` (all versions, passed or not),
    oldest first: ``gate/decision-<id>.json`` in each version's run, else version tags."""
    client = registry.client_for(settings)
    found: dict[str, dict] = {}
    for mv in client.search_model_versions(f"name='{name}'"):
        from_artifacts = False
        for path in _list(client, mv.run_id, "gate"):
            if not (Path(path).name.startswith("decision-") and path.endswith(".json")):
                continue
            d = run_json(client, mv.run_id, path)
            if isinstance(d, dict) and d.get("model", name) == name:
                d.setdefault("version", str(mv.version))
                d["source"] = f"runs:/{mv.run_id}/{path}"
                found[d.get("decision_id") or path] = d
                from_artifacts = True
        if from_artifacts:
            continue
        if "gate.decision" in mv.tags:
            try:
                d = json.loads(mv.tags["gate.decision"])
            except ValueError:
                d = {"raw": mv.tags["gate.decision"]}
            d.setdefault("version", str(mv.version))
            d["source"] = "version tag gate.decision"
            found[d.get("decision_id") or f"tag-{mv.version}"] = d
        elif "gate.passed" in mv.tags:
            found[mv.tags.get("gate.decision_id") or f"tag-{mv.version}"] = {
                "decision_id": mv.tags.get("gate.decision_id"), "model": name,
                "version": str(mv.version), "passed": mv.tags["gate.passed"] == "True",
                "decided_at": mv.tags.get("gate.decided_at"),
                "failed_checks": mv.tags.get("gate.failed_checks", ""),
                "checks": [], "source": "version tags gate.*"}
    def order(d: dict) -> tuple[str, int]:
        v = str(d.get("version", ""))
        return str(d.get("decided_at") or ""), int(v) if v.isdigit() else 0

    return sorted(found.values(), key=order)


def deployments(settings: Any, name: str, history: list[dict] | None = None) -> list[dict]:
    """What was served, oldest first: each move of alias ``champion`` (serving follows it),
    plus entries of registered-model tags ``medml.deployments*`` (JSON object or list)."""
    client = registry.client_for(settings)
    model = client.get_registered_model(name)
    history = registry.alias_history(client, name) if history is None else history
    out = [{"at": e.get("at"), "kind": "champion alias", "version": e.get("to_version"),
            "from_version": e.get("from_version"), "who": e.get("who"),
            "why": e.get("why"), "decision_id": e.get("decision_id"),
            "action": e.get("action", "set")}
           for e in history if e.get("alias") == "champion"]
    for key in sorted(k for k in model.tags if k.startswith("medml.deployments")):
        try:
            value = json.loads(model.tags[key])
        except ValueError:
            value = {"note": model.tags[key]}
        for item in value if isinstance(value, list) else [value]:
            out.append({"kind": key, **item} if isinstance(item, dict) else
                       {"kind": key, "note": str(item)})
    return sorted(out, key=lambda d: str(d.get("at") or ""))


def collect(settings: Any, model_ref: str) -> dict:
    """The evidence pack of ``model_ref`` (``NAME@alias``, ``NAME/V``) as plain data."""
    client = registry.client_for(settings)
    mv = registry.resolve(client, model_ref)
    name, version = mv.name, str(mv.version)
    model = client.get_registered_model(name)
    run = client.get_run(mv.run_id) if mv.run_id else None
    rtags = run.data.tags if run else {}
    metrics = run.data.metrics if run else {}

    test = {}
    for k in sorted(metrics):
        if k.startswith("test_") and not k.endswith(_CI):
            test[k.removeprefix("test_")] = {"value": metrics[k],
                                             "ci_low": metrics.get(f"{k}_ci_low"),
                                             "ci_high": metrics.get(f"{k}_ci_high")}
    tables = {}
    for path in _list(client, mv.run_id, "eval"):
        if path.endswith(".json") and "prediction" not in Path(path).name:
            tables[Path(path).name] = table_rows(run_json(client, mv.run_id, path))

    version_json = run_json(client, mv.run_id, "data/version.json") or {}
    meta_json = run_json(client, mv.run_id, "data/dataset.json") or {}
    extra = meta_json.get("extra") or {}
    vreport = run_json(client, mv.run_id, "validation/validation.json")
    if isinstance(vreport, dict):
        med = vreport.get("medml", {})
        stats = vreport.get("statistics", {})
        validation = {"recorded": True, "success": med.get("success"),
                      "failures": med.get("failures", []), "accepted": med.get("accepted", []),
                      "evaluated_expectations": stats.get("evaluated_expectations"),
                      "successful_expectations": stats.get("successful_expectations"),
                      "rows": stats.get("rows"),
                      "source": f"runs:/{mv.run_id}/validation/validation.json"}
    else:
        validation = {"recorded": False}

    history = registry.alias_history(client, name)
    card = _run_text(client, mv.run_id, MODEL_CARD)
    data = {
        "schema": "medml.lineage/1",
        "generated_at": _now(),
        "ref": model_ref,
        "model": {
            "name": name, "version": version, "uri": f"models:/{name}/{version}",
            "aliases": sorted(mv.aliases or []), "model_aliases": dict(model.aliases or {}),
            "status": mv.status, "source": mv.source,
            "model_id": getattr(mv, "model_id", None),
            "created_at": _ts(mv.creation_timestamp), "created_by": mv.user_id,
            "artifact_sha256": mv.tags.get(MODEL_SHA_TAG),
            "tags": dict(mv.tags),
            "model_card": f"runs:/{mv.run_id}/{MODEL_CARD}" if card is not None else None,
        },
        "run": {
            "id": mv.run_id, "name": run.info.run_name if run else None,
            "experiment_id": run.info.experiment_id if run else None,
            "status": run.info.status if run else None,
            "user": run.info.user_id if run else None,
            "start": _ts(run.info.start_time) if run else None,
            "end": _ts(run.info.end_time) if run else None,
            "params": dict(sorted(run.data.params.items())) if run else {},
            "tags": {k: v for k, v in sorted(rtags.items())
                     if not k.startswith("mlflow.") or k in (
                         "mlflow.runName", "mlflow.user", "mlflow.source.name",
                         "mlflow.source.git.commit")},
        },
        "code": {
            "git_commit": mv.tags.get("git_commit") or rtags.get("medml.git_commit") or None,
            "git_dirty": {"True": True, "False": False}.get(rtags.get("medml.git_dirty", "")),
            "medml_version": rtags.get("medml.version"),
            "flow_run_id": mv.tags.get("flow_run_id") or rtags.get("medml.flow_run_id") or None,
            "source": rtags.get("mlflow.source.name"),
        },
        "environment": _model_env(client, name, version),
        "data": {
            "dataset": mv.tags.get("dataset") or rtags.get("medml.dataset"),
            "dvc_md5": (mv.tags.get("dvc_data_hash") or rtags.get("medml.data_md5") or ""
                        ).removesuffix(".dir") or None,
            "path": version_json.get("path"), "nfiles": version_json.get("nfiles"),
            "git_commit": version_json.get("git_commit"),
            "git_dirty": version_json.get("git_dirty"),
            "tracked_by": version_json.get("tracked_by"),
            "source": meta_json.get("source"), "format": meta_json.get("format"),
            "patient_level_split": meta_json.get("patient_level_split"),
            "split_note": extra.get("split_note"),
            "deidentified": bool(extra.get("deidentified")),
            "deid_key_id": extra.get("deid_key_id"),
            "validation": validation,
        },
        "metrics": {
            "test": test,
            "subgroups": tables.pop("subgroups.json", []),
            "tables": tables,
            "other": {k: v for k, v in sorted(metrics.items())
                      if not k.startswith(("test_", "system/"))},
        },
        "gate_decisions": gate_decisions(client, name),
        "alias_history": history,
        "deployments": deployments(client, name, history),
        "model_card_text": card,
    }
    return _clean(data)


def _clean(x: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


# ------------------------------------------------------------------ render
def _sections(data: dict) -> list[tuple[str, list[tuple]]]:
    """The report as sections of blocks: ("kv", pairs), ("table", header, rows),
    ("list", items), ("pre", text)."""
    m, r, c, e, d, met = (data["model"], data["run"], data["code"], data["environment"],
                          data["data"], data["metrics"])
    v = d["validation"]
    secs: list[tuple[str, list[tuple]]] = []
    secs.append(("Model version", [("kv", [
        ("model", m["name"]), ("version", m["version"]), ("aliases now", ", ".join(m["aliases"])),
        ("all aliases", ", ".join(f"{a} -> v{x}" for a, x in sorted(m["model_aliases"].items()))),
        ("registered", m["created_at"]), ("status", m["status"]), ("source", m["source"]),
        ("artifact sha256", m["artifact_sha256"] or "not recorded"),
        ("model card", m["model_card"] or "not logged")])]))
    secs.append(("Run", [("kv", [("run id", r["id"]), ("name", r["name"]),
                                  ("experiment", r["experiment_id"]), ("status", r["status"]),
                                  ("user", r["user"]), ("start", r["start"]), ("end", r["end"])]),
                         ("table", ["param", "value"], [[k, x] for k, x in r["params"].items()]),
                         ("table", ["tag", "value"], [[k, x] for k, x in r["tags"].items()])]))
    secs.append(("Code", [("kv", [("git commit", c["git_commit"]),
                                   ("uncommitted changes", c["git_dirty"]),
                                   ("medml version", c["medml_version"]),
                                   ("Prefect flow run", c["flow_run_id"]),
                                   ("entry point", c["source"])])]))
    secs.append(("Environment", [("kv", [("python", e.get("python")),
                                          ("mlflow", e.get("mlflow"))]),
                                 ("table", ["package", "version"],
                                  [[k, x] for k, x in sorted(e.get("packages", {}).items())])]))
    vblocks: list[tuple] = [("kv", [
        ("dataset", d["dataset"]), ("DVC md5", d["dvc_md5"]), ("path", d["path"]),
        ("files", d["nfiles"]), ("git revision", d["git_commit"]),
        ("tracked by", d["tracked_by"]),
        ("split", d.get("split_note")),
        ("de-identified", (f"yes (key {d['deid_key_id']})" if d.get("deidentified") else "no")
         if d.get("split_note") is not None or d.get("deidentified") else None),
        ("validation", ("passed" if v.get("success") else "FAILED") if v.get("recorded")
         else "not recorded"),
        ("expectations", f"{v.get('successful_expectations')}/{v.get('evaluated_expectations')}"
         if v.get("recorded") else None)])]
    if v.get("failures"):
        vblocks.append(("list", [f"FAIL {x}" for x in v["failures"]]))
    if v.get("accepted"):
        vblocks.append(("list", [f"ACCEPTED {x}" for x in v["accepted"]]))
    secs.append(("Data", vblocks))
    mblocks: list[tuple] = [("table", ["metric", "test", "95% CI"], [
        [k, x["value"], f"[{rd.num(x['ci_low'])}, {rd.num(x['ci_high'])}]"
         if x["ci_low"] is not None else ""] for k, x in met["test"].items()])]
    if met["subgroups"]:
        cols = list(met["subgroups"][0])
        mblocks.append(("table", cols, [[row.get(k) for k in cols]
                                        for row in met["subgroups"]]))
    secs.append(("Metrics", mblocks))
    secs.append(("Gate decisions", [("table", ["decided at", "version", "result", "champion",
                                               "checks", "approval", "decision"], [
        [g.get("decided_at"), g.get("version"), "passed" if g.get("passed") else "refused",
         g.get("champion_version"), rd.decision_checks(g), g.get("approval") or "",
         g.get("decision_id")]
        for g in data["gate_decisions"]])]))
    secs.append(("Alias history", [("table", ["#", "at", "alias", "from", "to", "who", "why",
                                              "decision"], [
        [h.get("seq"), h.get("at"), h.get("alias"), h.get("from_version"), h.get("to_version"),
         h.get("who"), h.get("why"), h.get("decision_id")] for h in data["alias_history"]])]))
    secs.append(("Deployments", [("table", ["at", "kind", "version", "from", "who", "why"], [
        [x.get("at"), x.get("kind"), x.get("version"), x.get("from_version"), x.get("who"),
         x.get("why") or x.get("note")] for x in data["deployments"]])]))
    if data.get("model_card_text"):
        secs.append(("Model card", [("pre", data["model_card_text"])]))
    return secs


def _md(data: dict) -> str:
    m = data["model"]
    lines = [f"# Lineage: {m['name']} version {m['version']}", "",
             f"Reference `{data['ref']}`, generated {data['generated_at']}.", ""]
    for title, blocks in _sections(data):
        lines += [f"## {title}", ""]
        for block in blocks:
            kind = block[0]
            if kind == "kv":
                lines += rd.md_kv(block[1])
            elif kind == "table":
                lines += rd.md_table(block[1], block[2])
            elif kind == "list":
                lines += rd.md_list(block[1])
            elif kind == "pre":  # a Markdown document of its own: demote its headings
                lines += [("##" + ln) if ln.startswith("#") else ln
                          for ln in block[1].splitlines()]
            lines.append("")
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;
color:#222}h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #ccc;
margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:600}dd{margin:0;word-break:break-all}pre{background:#f8f8f8;padding:1rem;
white-space:pre-wrap}.none{color:#888}"""


def _html(data: dict) -> str:
    esc = rd.html_text
    m = data["model"]
    title = f"Lineage: {m['name']} version {m['version']}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>Reference <code>{esc(data['ref'])}</code>, generated "
             f"{esc(data['generated_at'])}.</p>"]
    for title_, blocks in _sections(data):
        parts.append(f"<section><h2>{esc(title_)}</h2>")
        for block in blocks:
            kind = block[0]
            if kind == "kv":
                parts.append(rd.html_kv(block[1]))
            elif kind == "table":
                parts.append(rd.html_table(block[1], block[2]))
            elif kind == "list":
                parts.append(rd.html_list(block[1]))
            elif kind == "pre":
                parts.append(f"<pre>{esc(block[1])}</pre>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render(data: dict, fmt: str = "md") -> str:
    """The evidence pack as ``json``, ``md`` (Markdown) or ``html`` (one self-contained,
    escaped page)."""
    if fmt == "json":
        return json.dumps(_clean(data), indent=2, default=str) + "\n"
    if fmt == "md":
        return _md(data)
    if fmt == "html":
        return _html(data)
    raise BadInputError(f"unknown lineage format {fmt!r}; choose one of: {', '.join(FORMATS)}")
