"""Dataset validation: MedML's Great Expectations suite against plain pandas checks.

`medml.validation.validate_dataset` (shared + imaging expectations, derived columns, JSON
results, Data Docs) against the same rules written by hand with pandas, on synthetic
imaging manifests of 10k, 100k and 1M rows. Prints wall time and peak memory of each and
their ratios, and where the time goes.

    .venv/bin/python bench/validation.py [--sizes 10000 100000 1000000] [--json PATH]

Every measurement is a fresh process; each side runs `--repeats` times (alternating which
goes first) and its fastest run counts. Both sides start from the dataset directory on disk
(read `dataset.json` and `manifest.csv`), check every rule on every row (the file of each
row must be a regular file inside the dataset directory: medml matches the paths against
one listing of the directory, the pandas side resolves each row on disk), and end
with a verdict per rule and a JSON report; medml also writes its Data Docs. Only 1000 real
image files exist per dataset, whatever its size: rows point at them in turn and carry
distinct content hashes (see `make_dataset`). Both must reach the same verdict on every
rule: all pass on the clean manifest, and exactly the rules that the planted faults break
fail on a faulty copy (a patient in two splits, a duplicate content hash, a label outside
the classes in train, a null intensity, a missing file, an intensity above 1).

Memory: peak RSS of the measuring process (VmHWM), and the increment over a baseline
process of the same side that only imported the same modules and read the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ["normal", "benign", "malignant"]  # what `medml data generate --task imaging` uses
SITES = ["site-a", "site-b", "site-c"]
AGE_BANDS = ["18-39", "40-59", "60-79", "80+"]
SIDE = 28  # demo image size
N_FILES = 1000  # real .npy files per dataset; rows point at them in turn (`make_dataset`)
# The imaging rules' constants (`medml.tasks.imaging.checks`), copied so that the pandas
# side does not import medml's task package (and PyTorch with it); `main` checks they match.
MEASURED = ["height", "width", "channels", "intensity_min", "intensity_max"]
CHANNELS = [1, 3]
MIN_SIDE, MAX_SIDE = 8, 4096
MIN_CLASS_SHARE = 0.02  # `medml.validation.MIN_CLASS_SHARE`, checked in `main` too
# The rules the planted faults break (medml's `check_name`: meta.check or type:column).
PLANTED = {
    "patient_leak",
    "duplicate_examples",
    "expect_column_values_to_be_in_set:label",
    "expect_column_values_to_not_be_null:intensity_min",
    "expect_column_values_to_be_in_set:_file_exists",
    "expect_column_values_to_be_between:intensity_max",
}


# ------------------------------------------------------------------ data
def make_dataset(out: Path, n: int, seed: int = 0, faults: bool = False) -> Path:
    """A synthetic imaging dataset of ``n`` rows with the columns, dtypes and value ranges
    `medml data generate --task imaging` writes after its de-identification and split
    stages (pseudonymised patient ids, splits by patient), written by medml's own
    `write_dataset`.

    Only ``N_FILES`` real image files exist: row ``i`` points at ``images/<id of row
    i % N_FILES>.npy``, and every row has its own content hash (a real manifest has one
    file per row and hashes of their bytes; hashing is not what validation does)."""
    import numpy as np
    import pandas as pd

    from medml.data.dataset import DatasetMeta, write_dataset

    rng = np.random.default_rng(seed)
    per = rng.integers(2, 6, size=n // 2 + 1)  # 2-5 images per patient, as the demo
    patient = np.repeat(np.arange(len(per)), per)[:n]
    k = np.concatenate([np.arange(c) for c in per])[:n]
    n_pat = int(patient[-1]) + 1
    raw_pid = np.char.add("P", np.char.zfill(patient.astype(str), 6))
    ids = np.char.add(np.char.add(raw_pid, "-"), k.astype(str))
    pseudo = np.array([f"pt-{hashlib.sha256(b'%d' % p).hexdigest()[:12]}"
                       for p in range(n_pat)])  # the deid stage's form (an HMAC there)
    assert len(set(pseudo.tolist())) == n_pat
    # Per patient: class by index (as the generator), split 70/15/15, site, sex, age band.
    split_of = np.array(["train", "val", "test"])[
        np.searchsorted([0.7, 0.85], rng.random(n_pat), side="right")]
    split_of[:3] = "train"  # every class in train whatever the seed
    m = pd.DataFrame({
        "id": ids,
        "path": np.char.add(np.char.add("images/", ids[np.arange(n) % N_FILES]), ".npy"),
        "label": np.array(CLASSES)[patient % 3],
        "split": split_of[patient],
        "patient_id": pseudo[patient],
        "site": np.array(SITES)[rng.integers(3, size=n_pat)][patient],
        "sex": np.array(["F", "M"])[rng.integers(2, size=n_pat)][patient],
        "age_band": np.array(AGE_BANDS)[rng.integers(4, size=n_pat)][patient],
        "content_hash": [hashlib.sha256(i.encode()).hexdigest() for i in ids.tolist()],
        "source_file": "generated",
        "height": SIDE, "width": SIDE, "channels": 1, "source_dtype": "float32",
        "intensity_min": rng.uniform(0.0, 0.2, n),
        "intensity_max": rng.uniform(0.8, 1.0, n),
        "split_by": "patient",
    })
    if faults:  # each fault on rows of its own, far from the others
        leak = int(np.flatnonzero(m["split"].to_numpy() == "test")[0])  # 2+ rows
        cat = n // 5 + int(np.flatnonzero(m["split"].to_numpy()[n // 5:] == "train")[0])
        assert len({leak, n // 2, n // 3, cat, n // 7, n // 9, n // 11}) == 7
        m.loc[leak, "split"] = "val"  # that patient is now in val and test
        m.loc[n // 2, "content_hash"] = m.at[n // 3, "content_hash"]  # a duplicate example
        m.loc[cat, "label"] = "cat"  # outside the classes, in train
        m.loc[n // 7, "intensity_min"] = np.nan  # not measured
        m.loc[n // 9, "path"] = "images/missing.npy"  # no such file
        m.loc[n // 11, "intensity_max"] = 1.5  # outside [0, 1]
    (out / "images").mkdir(parents=True)
    for i in ids[:N_FILES].tolist():
        img = rng.uniform(0.05, 0.95, (1, SIDE, SIDE)).astype(np.float32)
        np.save(out / "images" / f"{i}.npy", img)
    meta = DatasetMeta(name=out.name, task="imaging", classes=list(CLASSES),
                       source="generated", format="demo", extra={"seed": seed, "bench": True})
    write_dataset(out, m, meta)
    return out


# ------------------------------------------------------------------ the two sides
def medml_side(dataset: Path, report_dir: Path) -> dict:
    """`medml data validate` minus the DVC look-up: `validate_dataset` with the imaging task,
    timed as a whole and by phase (wrappers around its steps; the code run is unchanged)."""
    from collections import defaultdict

    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )

    import medml.validation as mv
    from medml.tasks import get_task

    task = get_task("imaging")
    phases: dict[str, float] = defaultdict(float)

    active: list[str] = []  # a phase inside another counts for the outer one

    def timed(name: str, fn):
        def wrapper(*a, **k):
            if active:
                return fn(*a, **k)
            active.append(name)
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t
                active.pop()
        return wrapper

    mv._read_dataset = timed("read", mv._read_dataset)
    mv.derive_columns = timed("derive_columns", mv.derive_columns)
    gx.Checkpoint.run = timed("gx_run", gx.Checkpoint.run)
    ExpectationSuiteValidationResult.to_json_dict = timed(
        "results_json", ExpectationSuiteValidationResult.to_json_dict)
    mv._failure_lines = timed("failure_lines", mv._failure_lines)
    mv._build_docs = timed("data_docs", mv._build_docs)

    t0 = time.perf_counter()
    report = mv.validate_dataset(dataset, task, report_dir)
    wall = time.perf_counter() - t0
    results = json.loads(report.report_path.read_text())["results"]
    rules = {}
    for r in results:
        cfg = r["expectation_config"]
        key = (cfg.get("meta") or {}).get("check") or f"{cfg['type']}:{cfg['kwargs'].get('column')}"
        rules[key] = bool(r["success"])
    phases["other"] = wall - sum(phases.values())
    return {"wall_s": wall, "success": report.success, "rules": rules, "phases": dict(phases),
            "failures": report.failures}


def pandas_checks(dataset: Path, report_dir: Path) -> dict:
    """The same rules as medml's suite (`shared_expectations` + `imaging_expectations`),
    written by hand with pandas: per rule a verdict, the count of offending rows and up to
    20 of their ids, written as one JSON report."""
    import numpy as np
    import pandas as pd

    from medml.data.dataset import BASE_COLUMNS, SPLITS, load_manifest, load_meta

    t0 = time.perf_counter()
    meta = load_meta(dataset)
    m = load_manifest(dataset).reset_index(drop=True)
    phases = {"read": time.perf_counter() - t0, "derived": 0.0}

    def derived(fn):  # the checks medml computes as derived columns, timed
        def wrapper(s: pd.Series) -> pd.Series:
            t = time.perf_counter()
            try:
                return fn(s)
            finally:
                phases["derived"] += time.perf_counter() - t
        return wrapper

    root = os.path.realpath(dataset)
    prefix = root + os.sep
    out: dict[str, dict] = {}

    def rule(key: str, column: str, bad) -> None:
        """``bad(series)``: a boolean mask of offending rows, or a set of missing values."""
        if column not in m.columns:
            out[key] = {"success": False, "error": f"no column {column!r}"}
            return
        found = bad(m[column])
        if isinstance(found, set):
            out[key] = {"success": not found, "missing": sorted(map(str, found))}
            return
        offending = m.loc[found.to_numpy(), "id"] if "id" in m.columns else found[found]
        out[key] = {"success": not len(offending), "unexpected_count": int(len(offending)),
                    "element_count": len(m), "examples": offending.head(20).tolist()}

    def non_null(s: pd.Series) -> pd.Series:
        return s.isna()

    def unique(s: pd.Series) -> pd.Series:
        return s.duplicated(keep=False) & s.notna()

    def in_set(values) -> callable:
        return lambda s: s.notna() & ~s.isin(list(values))

    def between(lo=None, hi=None) -> callable:
        def bad(s: pd.Series) -> pd.Series:
            x = pd.to_numeric(s, errors="coerce")
            return s.notna() & ~((x >= (lo if lo is not None else -np.inf))
                                 & (x <= (hi if hi is not None else np.inf)))
        return bad

    def has_all(values, where=None) -> callable:
        return lambda s: set(values) - set((s if where is None else s[where]).dropna())

    for c in [*BASE_COLUMNS, *MEASURED]:
        out[f"expect_column_to_exist:{c}"] = {"success": c in m.columns}
    for c in ("id", "path", "label", "split", "intensity_min", "intensity_max"):
        rule(f"expect_column_values_to_not_be_null:{c}", c, non_null)
    rule("expect_column_values_to_be_unique:id", "id", unique)
    rule("expect_column_values_to_be_in_set:label", "label", in_set(meta.classes))
    rule("expect_column_values_to_be_in_set:split", "split", in_set(SPLITS))
    rule("expect_column_distinct_values_to_contain_set:split", "split", has_all(SPLITS))
    rule("duplicate_examples", "content_hash", unique)
    train = (m["split"] == "train").fillna(False) if "split" in m.columns else None
    rule("expect_column_distinct_values_to_contain_set:label", "label",
         has_all(meta.classes, train))

    def file_missing(s: pd.Series) -> pd.Series:
        def exists(p) -> bool | None:  # a file inside the dataset directory, per row
            if not isinstance(p, str) or not p:
                return None
            if os.path.isabs(p):
                return False  # the dataset must stay relocatable, as in medml
            full = os.path.realpath(os.path.join(root, p))
            return full.startswith(prefix) and os.path.isfile(full)
        ok = s.map(exists)
        return ok.notna() & (ok != True)  # noqa: E712 (None = no path, checked elsewhere)

    rule("expect_column_values_to_be_in_set:_file_exists", "path", derived(file_missing))
    if meta.patient_level_split:
        def leak(s: pd.Series) -> pd.Series:
            if "split" not in m.columns:
                return pd.Series(False, index=m.index)
            n = m.groupby("patient_id", dropna=True)["split"].transform("nunique")
            return n.notna() & (n != 1)
        rule("patient_leak", "patient_id", derived(leak))
    rule("expect_column_values_to_be_between:intensity_min", "intensity_min", between(lo=0.0))
    rule("expect_column_values_to_be_between:intensity_max", "intensity_max", between(hi=1.0))

    def rare_class(s: pd.Series) -> pd.Series:  # a label under MIN_CLASS_SHARE of train
        if "split" not in m.columns:
            return pd.Series(False, index=m.index)
        # shares among all train rows; null labels and labels outside the classes are
        # left to their own rules, as in medml
        share = s[train].map(s[train].value_counts(dropna=False, normalize=True))
        rare = (share < MIN_CLASS_SHARE) & s[train].isin(meta.classes)
        return rare.reindex(m.index, fill_value=False)

    rule("class_balance", "label", derived(rare_class))
    rule("expect_column_values_to_be_in_set:channels", "channels", in_set(CHANNELS))
    for c in ("height", "width"):
        rule(f"expect_column_values_to_be_between:{c}", c, between(MIN_SIDE, MAX_SIDE))
    npy = re.compile(r"\.npy$")
    rule("expect_column_values_to_match_regex:path", "path",
         lambda s: s.notna() & ~s.str.contains(npy, na=False))

    success = all(r["success"] for r in out.values())
    t_report = time.perf_counter()
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(
        {"dataset": meta.name, "rows": len(m), "success": success, "results": out},
        indent=2, default=str) + "\n")
    wall = time.perf_counter() - t0
    phases["results_json"] = time.perf_counter() - t_report
    phases["rules"] = wall - sum(phases.values())
    return {"wall_s": wall, "success": success, "phases": phases,
            "rules": {k: r["success"] for k, r in out.items()}}


def baseline(side: str, dataset: Path) -> dict:
    """What a side's process holds before validating: its modules and the manifest."""
    from medml.data.dataset import load_manifest, load_meta

    if side == "medml":
        import great_expectations  # noqa: F401
        import great_expectations.expectations  # noqa: F401

        import medml.validation  # noqa: F401
        from medml.tasks import get_task

        get_task("imaging")
    load_meta(dataset)
    m = load_manifest(dataset)
    return {"rows": len(m)}


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent through fork and exec, so a child never reads less than its parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def child(mode: str, dataset: Path, report_dir: Path) -> None:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    t_import = time.perf_counter()
    if mode.startswith("medml"):
        import great_expectations  # noqa: F401

        import medml.validation  # noqa: F401
        from medml.tasks import get_task

        get_task("imaging")
    else:
        import pandas  # noqa: F401

        import medml.data.dataset  # noqa: F401
    t_import = time.perf_counter() - t_import
    if mode.endswith("-base"):
        out = baseline(mode.removesuffix("-base"), dataset)
    elif mode == "medml":
        out = medml_side(dataset, report_dir)
    else:
        out = pandas_checks(dataset, report_dir)
    out["maxrss_mib"] = peak_rss_mib()
    out["import_s"] = t_import
    print(json.dumps(out))


def run_child(mode: str, dataset: Path, report_dir: Path) -> dict:
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    r = subprocess.run([sys.executable, __file__, "--child", mode, "--dataset", str(dataset),
                        "--report-dir", str(report_dir)], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        sys.exit(f"{mode} on {dataset} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
def machine() -> dict:
    import great_expectations as gx
    import pandas as pd
    import psutil

    return {"node": platform.node(), "cores": os.cpu_count(), "arch": platform.machine(),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "pandas": pd.__version__,
            "great_expectations": gx.__version__, "date": f"{datetime.now(UTC):%Y-%m-%d}"}


def bench_size(n: int, work: Path, faults: bool, repeats: int) -> dict:
    from rich.console import Console

    console = Console(stderr=True)
    row: dict = {"rows": n}
    variants = ["clean", "faulty"] if faults else ["clean"]
    for variant in variants:
        t = time.perf_counter()
        ds = make_dataset(work / f"{variant}-{n}", n, faults=variant == "faulty")
        console.log(f"{n} rows, {variant}: dataset written in {time.perf_counter() - t:.1f} s "
                    f"({(ds / 'manifest.csv').stat().st_size / 2**20:.0f} MiB manifest)")
        runs: dict[str, list[dict]] = {"pandas": [], "medml": []}
        for rep in range(repeats if variant == "clean" else 1):
            for side in ("pandas", "medml") if rep % 2 == 0 else ("medml", "pandas"):
                runs[side].append(run_child(side, ds, work / f"report-{side}-{variant}-{n}"))
                console.log(f"  {side}: {runs[side][-1]['wall_s']:.2f} s, "
                            f"peak {runs[side][-1]['maxrss_mib']:.0f} MiB")
        res = {}
        for side, rs in runs.items():  # the fastest run, with the highest peak of them all
            if any(r["rules"] != rs[0]["rules"] for r in rs):
                sys.exit(f"{n} rows, {variant}: {side} gave different verdicts across runs")
            res[side] = min(rs, key=lambda r: r["wall_s"]) | {
                "maxrss_mib": max(r["maxrss_mib"] for r in rs),
                "walls_s": [r["wall_s"] for r in rs]}
        if res["medml"]["rules"] != res["pandas"]["rules"]:
            diff = {k: (res["medml"]["rules"].get(k), res["pandas"]["rules"].get(k))
                    for k in res["medml"]["rules"].keys() | res["pandas"]["rules"].keys()
                    if res["medml"]["rules"].get(k) != res["pandas"]["rules"].get(k)}
            sys.exit(f"{n} rows, {variant}: verdicts differ (medml, pandas): {diff}")
        failed = {k for k, ok in res["medml"]["rules"].items() if not ok}
        expected = PLANTED if variant == "faulty" else set()
        if failed != expected:
            sys.exit(f"{n} rows, {variant}: failed rules {sorted(failed)}, "
                     f"expected {sorted(expected)}")
        if variant == "clean":
            for side in ("pandas", "medml"):
                res[side]["base"] = run_child(f"{side}-base", ds, work / "unused")
            row.update(res)
            row["n_rules"] = len(res["medml"]["rules"])
        else:
            row["faulty"] = {s: {"wall_s": res[s]["wall_s"], "maxrss_mib": res[s]["maxrss_mib"],
                                 "phases": res[s]["phases"],
                                 "failed": sorted(k for k, ok in res[s]["rules"].items()
                                                  if not ok)}
                             for s in res}
            row["faulty"]["medml_failures"] = res["medml"]["failures"]
        shutil.rmtree(ds)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--json", type=Path, default=None, help="write all measurements here")
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs per side on the clean manifest; the fastest counts (default 3)")
    ap.add_argument("--no-faults", action="store_true",
                    help="skip the faulty manifests (verdict check on clean ones only)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--report-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.dataset, args.report_dir)
        return
    from medml import validation
    from medml.tasks.imaging import checks

    assert (checks.MEASURED, checks.CHANNELS, checks.MIN_SIDE, checks.MAX_SIDE,
            validation.MIN_CLASS_SHARE) == (MEASURED, CHANNELS, MIN_SIDE, MAX_SIDE,
                                            MIN_CLASS_SHARE), "medml's rules changed: update me"
    from rich.console import Console
    from rich.table import Table

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="medml-bench-validation-"))
    try:
        rows = [bench_size(n, work, not args.no_faults, args.repeats) for n in args.sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mach = machine() | {"loadavg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}

    def mib(x: float) -> str:
        return f"{x:,.0f}"

    table = Table(title=f"Manifest validation, imaging, {rows[0]['n_rules']} rules: "
                        "medml (Great Expectations) vs plain pandas")
    cols = ["rows", "medml s", "pandas s", "time ratio", "medml peak MiB (+incr.)",
            "pandas peak MiB (+incr.)", "incr. ratio"]
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        md, pd_ = r["medml"], r["pandas"]
        inc_m = md["maxrss_mib"] - md["base"]["maxrss_mib"]
        inc_p = pd_["maxrss_mib"] - pd_["base"]["maxrss_mib"]
        r["time_ratio"] = md["wall_s"] / pd_["wall_s"]
        r["increment_mib"] = {"medml": inc_m, "pandas": inc_p}
        r["increment_ratio"] = inc_m / inc_p if inc_p > 0 else None
        table.add_row(f"{r['rows']:,}", f"{md['wall_s']:.2f}", f"{pd_['wall_s']:.2f}",
                      f"{r['time_ratio']:.1f}x",
                      f"{mib(md['maxrss_mib'])} (+{mib(inc_m)})",
                      f"{mib(pd_['maxrss_mib'])} (+{mib(inc_p)})",
                      f"{r['increment_ratio']:.1f}x" if r["increment_ratio"] else "-")
    phases = Table(title="Where the time goes (s)")
    heads = ["rows", "side", "read CSV", "derived cols", "rules", "JSON report", "Data Docs",
             "other", "total"]
    for c in heads:
        phases.add_column(c, justify="left" if c == "side" else "right")
    for r in rows:
        p, q = r["medml"]["phases"], r["pandas"]["phases"]
        phases.add_row(f"{r['rows']:,}", "medml", *(f"{x:.2f}" for x in (
            p.get("read", 0), p.get("derive_columns", 0), p.get("gx_run", 0),
            p.get("results_json", 0) + p.get("failure_lines", 0), p.get("data_docs", 0),
            p.get("other", 0), r["medml"]["wall_s"])))
        phases.add_row("", "pandas", *(f"{x:.2f}" for x in (
            q["read"], q["derived"], q["rules"], q["results_json"])), "-", "-",
            f"{r['pandas']['wall_s']:.2f}")
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(phases)
    faults = (f"; both fail exactly the {len(PLANTED)} rules the 6 planted faults break"
              if not args.no_faults else "")
    print(f"verdicts: medml and pandas agree on every rule (clean: all pass{faults}). "
          f"Wall: the validation call in a warm process (imports excluded), fastest of "
          f"{args.repeats} runs; peak: VmHWM, highest of those runs; "
          "incr.: over a process that imported the same modules and read the manifest.")
    print("imports (not in wall, fixed per process): medml (GX, PyTorch via the task) "
          f"{max(r['medml']['import_s'] for r in rows):.1f} s, pandas "
          f"{max(r['pandas']['import_s'] for r in rows):.1f} s (the slowest of the runs)")
    print(f"machine: {mach['node']}, {mach['cores']} cores ({mach['arch']}), "
          f"{mach['ram_gib']} GiB RAM, Python {mach['python']}, pandas {mach['pandas']}, "
          f"great_expectations {mach['great_expectations']}; {mach['date']}; load average "
          f"{mach['loadavg_1m'][0]} before, {mach['loadavg_1m'][1]} after")
    if args.json:
        args.json.write_text(json.dumps({"machine": mach, "sizes": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
