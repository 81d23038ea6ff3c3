"""Parallel trials and DDP against their plain baselines, on BreastMNIST.

Search (`--part tune`): the same grid of learning rates (one trial each), the same epochs,
(a) as a bare PyTorch loop that trains the trials one after another, (b) `medml tune
--parallel 1` (one trial at a time, all cores each), (c) `medml tune --parallel 2` (two
trials at once on the Dask task runner, the cores shared out). medml's rows include what
the bare loop does not do: validation, Prefect, MLflow runs, checkpoints, and evaluation,
registration and gate of the winner.

DDP (`--part ddp`): one training, (a) the bare loop, (b) `medml train --nproc 1`,
(c) `medml train --nproc 2` (torchrun, gloo, same global batch).

    .venv/bin/python bench/parallel.py [--part all|tune|ddp] [--epochs 15]
        [--lrs 0.0003,0.001,0.003,0.01] [--npz ../shared/data/imaging/breastmnist.npz]

Every variant runs as fresh processes in its own workspace, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import DEFAULT_NPZ, bare, workspace  # noqa: E402

DATASET = "breastmnist"


def medml(ws: Path, env: dict, *args: str) -> float:
    """Run one `medml` command; its wall time. Exit 1 (the gate refused) still counts."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "medml.cli", *args], cwd=ws, env=env,
                       capture_output=True, text=True)
    if r.returncode not in (0, 1):
        sys.exit(f"medml {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def client(ws: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{ws / '.medml' / 'mlflow.db'}")


def runs(ws: Path) -> list:
    c = client(ws)
    return c.search_runs([e.experiment_id for e in c.search_experiments()],
                         order_by=["attributes.start_time ASC"])


def bare_child(npz: Path, epochs: int, seed: int, size: int, lrs: list[float]) -> dict:
    """In a fresh process: the trials one after another; the best by last-epoch val AUROC."""
    out = subprocess.run([sys.executable, __file__, "--bare", "--npz", str(npz), "--epochs",
                          str(epochs), "--seed", str(seed), "--image-size", str(size),
                          "--lrs", ",".join(map(str, lrs))],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tune_variant(npz: Path, epochs: int, seed: int, size: int, lrs: list[float],
                 parallel: int) -> dict:
    ws, env = workspace(npz, epochs, seed, size, tune={
        "trials": len(lrs), "parallel": 1, "sampler": "grid", "space": {"lr": lrs}})
    wall = medml(ws, env, "tune", "--task", "imaging", "--dataset", DATASET,
                 "--parallel", str(parallel))
    rs = runs(ws)
    parent = next(r for r in rs if r.data.tags.get("medml.tune") == "parent")
    trials = [r for r in rs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best = next(r for r in trials if r.info.run_id == parent.data.tags["medml.tune.best_run_id"])
    overlap = _overlap(ws, trials)
    return {"wall_s": wall, "trials": len(trials), "best_lr": float(best.data.params["train.lr"]),
            "val_auroc": best.data.metrics["val_auroc"],
            "test_auroc": best.data.metrics["test_auroc"],
            "train_s": sum(r.data.metrics["train_seconds"] for r in trials),
            "overlap_s": overlap}


def _overlap(ws: Path, trials: list) -> float:
    """Seconds during which at least two trials were training at once (from each run's
    start to its last epoch's metric: the winner's run stays open for its evaluation)."""
    c = client(ws)
    ends = [max(m.timestamp for m in c.get_metric_history(r.info.run_id, "train_loss"))
            for r in trials]
    events = sorted([(r.info.start_time, 1) for r in trials] + [(e, -1) for e in ends])
    open_, last, total = 0, 0, 0
    for t, step in events:
        if open_ >= 2:
            total += t - last
        open_, last = open_ + step, t
    return total / 1000


def ddp_variant(npz: Path, epochs: int, seed: int, size: int, nproc: int) -> dict:
    ws, env = workspace(npz, epochs, seed, size)
    wall = medml(ws, env, "train", "--dataset", DATASET, "--nproc", str(nproc))
    run = runs(ws)[-1]
    return {"wall_s": wall, "train_s": run.data.metrics["train_seconds"],
            "val_auroc": run.data.metrics["val_auroc"],
            "test_auroc": run.data.metrics["test_auroc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("all", "tune", "ddp"), default="all")
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lrs", default="0.0003,0.001,0.003,0.01")
    ap.add_argument("--image-size", type=int, default=None,
                    help="default: tasks.imaging.data.image_size in params.yaml")
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    lrs = [float(x) for x in args.lrs.split(",")]
    if args.image_size is None:
        import yaml

        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        args.image_size = int(params["tasks"]["imaging"]["data"]["image_size"])
    if args.bare:  # child process of the bare variant
        t0 = time.perf_counter()
        results = [bare(args.npz, args.epochs, args.seed, args.image_size, lr) | {"lr": lr}
                   for lr in lrs]
        best = max(results, key=lambda r: r["val_auroc"])
        print(json.dumps({"wall_s": time.perf_counter() - t0, "trials": len(results),
                          "best_lr": best["lr"], "val_auroc": best["val_auroc"],
                          "test_auroc": best["test_auroc"],
                          "train_s": sum(r["train_s"] for r in results)}))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    stamp = (f"CPU ({os.cpu_count()} cores, {platform.node()}), "
             f"{datetime.now(UTC):%Y-%m-%d}")
    if args.part in ("all", "tune"):
        t0 = time.perf_counter()
        rows = {"bare loop, trials one after another": bare_child(
            args.npz, args.epochs, args.seed, args.image_size, lrs) | {
            "wall_s": time.perf_counter() - t0, "overlap_s": 0.0}}
        for k in (1, 2):
            console.print(f"medml tune --parallel {k} ...")
            rows[f"medml tune --parallel {k}"] = tune_variant(
                args.npz, args.epochs, args.seed, args.image_size, lrs, k)
        table = Table(title=f"search: {len(lrs)} grid trials (lr), small_cnn, BreastMNIST, "
                            f"{args.image_size} px, {args.epochs} epochs, {stamp}")
        for col in ("variant", "wall s", "sum of training s", "trials overlapping s",
                    "best lr", "its val AUROC", "its test AUROC", "wall vs bare"):
            table.add_column(col, justify="left" if col == "variant" else "right")
        base = rows["bare loop, trials one after another"]["wall_s"]
        for name, r in rows.items():
            table.add_row(name, f"{r['wall_s']:.1f}", f"{r['train_s']:.1f}",
                          f"{r['overlap_s']:.1f}", f"{r['best_lr']:g}", f"{r['val_auroc']:.4f}",
                          f"{r['test_auroc']:.4f}", f"{r['wall_s'] / base:.2f}x")
        console.print(table)
    if args.part in ("all", "ddp"):
        t0 = time.perf_counter()
        b = json.loads(subprocess.run(
            [sys.executable, str(ROOT / "bench" / "overhead.py"), "--bare", "--npz",
             str(args.npz), "--epochs", str(args.epochs), "--seed", str(args.seed),
             "--image-size", str(args.image_size)],
            capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        rows = {"bare loop, 1 process": b | {"wall_s": time.perf_counter() - t0}}
        for n in (1, 2):
            console.print(f"medml train --nproc {n} ...")
            rows[f"medml train --nproc {n}"] = ddp_variant(args.npz, args.epochs, args.seed,
                                                       args.image_size, n)
        table = Table(title=f"DDP: one training, small_cnn, BreastMNIST, {args.image_size} px, "
                            f"{args.epochs} epochs, lr 0.001, {stamp}")
        for col in ("variant", "wall s (process)", "training s", "val AUROC", "test AUROC",
                    "training vs bare"):
            table.add_column(col, justify="left" if col == "variant" else "right")
        base = rows["bare loop, 1 process"]["train_s"]
        for name, r in rows.items():
            table.add_row(name, f"{r['wall_s']:.1f}", f"{r['train_s']:.1f}",
                          f"{r['val_auroc']:.4f}", f"{r['test_auroc']:.4f}",
                          f"{r['train_s'] / base:.2f}x")
        console.print(table)


if __name__ == "__main__":
    main()
