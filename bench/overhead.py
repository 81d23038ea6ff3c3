"""Platform overhead: the same model, data and epochs trained (a) by `medml pipeline`
(validation, Prefect, MLflow, checkpoints, evaluation, registration, gate) and (b) by a
bare PyTorch loop. Prints both wall times and their ratio.

    .venv/bin/python bench/overhead.py [--epochs 100] [--npz ../shared/data/imaging/breastmnist.npz]

Both run as fresh processes, one after the other, on the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "imaging" / "breastmnist.npz"


def bare(npz: Path, epochs: int, seed: int, size: int, lr: float = 1e-3) -> dict:
    """What a researcher writes by hand: load, train, evaluate. Same network, augmentation,
    optimiser and schedule as medml's defaults; no tracking, no checkpoints."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from torch.utils.data import DataLoader, TensorDataset

    from medml.tasks.imaging.data import train_augmentation
    from medml.tasks.imaging.models import small_cnn

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    d = np.load(npz)

    def split(s: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.tensor(d[f"{s}_images"], dtype=torch.float32)[:, None] / 255.0
        if x.shape[-1] != size:  # medml's default upsamples 28 px inputs
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="area")
        return (x - 0.5) / 0.5, torch.tensor(d[f"{s}_labels"][:, 0], dtype=torch.long)

    (xtr, ytr), (xva, yva), (xte, yte) = split("train"), split("val"), split("test")
    aug = train_augmentation(seed)

    class Aug(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return torch.as_tensor(aug(x)), y

    net = small_cnn(1, 2)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs // 2, int(epochs * 0.75)], 0.1)

    def proba(x: torch.Tensor) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            p = (torch.softmax(net(x), 1) + torch.softmax(net(x.flip(-1)), 1)) / 2
        return p[:, 0].numpy()

    t_train = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for xb, yb in DataLoader(Aug(xtr, ytr), batch_size=64, shuffle=True):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xb), yb).backward()
            opt.step()
        sched.step()
        val = roc_auc_score(yva == 0, proba(xva))  # per-epoch validation, as one would
    train_s = time.perf_counter() - t_train
    auroc = roc_auc_score(yte == 0, proba(xte))  # class 0 = malignant
    return {"train_s": train_s, "total_s": time.perf_counter() - t0, "test_auroc": auroc,
            "val_auroc": val}


def workspace(npz: Path, epochs: int, seed: int, size: int,
              **imaging: dict) -> tuple[Path, dict[str, str]]:
    """A fresh git workspace, params.yaml with the benchmark's training settings (and any
    other ``tasks.imaging`` sections given), the BreastMNIST .npz imported as breastmnist."""
    import yaml

    ws = Path(tempfile.mkdtemp(prefix="medml-bench-"))
    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tasks"]["imaging"]["train"].update({"epochs": epochs, "seed": seed})
    params["tasks"]["imaging"]["data"]["image_size"] = size
    params["tasks"]["imaging"].update(imaging)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "MEDML_HOME": str(ws / ".medml"), "MEDML_WORKSPACE": str(ws)}
    r = subprocess.run([sys.executable, "-m", "medml.cli", "data", "import", "--task",
                        "imaging", "--format", "medmnist", str(npz), "--name", "breastmnist"],
                       cwd=ws, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"medml data import failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return ws, env


def pipeline(npz: Path, epochs: int, seed: int, size: int) -> dict:
    """`medml data import` (not timed), then `medml pipeline` timed as a whole command."""
    import mlflow

    ws, env = workspace(npz, epochs, seed, size)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "medml.cli", "pipeline", "--task", "imaging",
                        "--dataset", "breastmnist"], cwd=ws, env=env, capture_output=True,
                       text=True)
    total = time.perf_counter() - t0
    if r.returncode not in (0, 1):  # 1: the gate refused, still a full lifecycle
        sys.exit(f"medml pipeline failed:\n{r.stderr[-3000:]}")
    client = mlflow.MlflowClient(f"sqlite:///{ws / '.medml' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    if not runs or "test_auroc" not in runs[0].data.metrics:
        sys.exit(f"medml pipeline trained nothing (exit {r.returncode}):\n{r.stderr[-3000:]}")
    run = runs[0]
    return {"train_s": run.data.metrics["train_seconds"], "total_s": total,
            "test_auroc": run.data.metrics["test_auroc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=None,
                    help="default: tasks.imaging.data.image_size in params.yaml")
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.image_size is None:
        import yaml

        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        args.image_size = int(params["tasks"]["imaging"]["data"]["image_size"])
    if args.bare:  # child process of the bare variant
        print(json.dumps(bare(args.npz, args.epochs, args.seed, args.image_size)))
        return
    from rich.console import Console
    from rich.table import Table

    p = pipeline(args.npz, args.epochs, args.seed, args.image_size)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--bare", "--npz", str(args.npz),
                          "--epochs", str(args.epochs), "--seed", str(args.seed),
                          "--image-size", str(args.image_size)],
                         capture_output=True, text=True, check=True)
    b = json.loads(out.stdout.strip().splitlines()[-1]) | {
        "total_s": time.perf_counter() - t0}
    table = Table(title=f"BreastMNIST, small_cnn, {args.image_size} px, {args.epochs} epochs, CPU "
                        f"({os.cpu_count()} cores), {datetime.now(UTC):%Y-%m-%d}")
    for col in ("variant", "wall s (process)", "training s", "test AUROC"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    table.add_row("bare PyTorch loop", f"{b['total_s']:.1f}", f"{b['train_s']:.1f}",
                  f"{b['test_auroc']:.4f}")
    table.add_row("medml pipeline", f"{p['total_s']:.1f}", f"{p['train_s']:.1f}",
                  f"{p['test_auroc']:.4f}")
    Console().print(table)
    print(f"ratio pipeline / bare (wall): {p['total_s'] / b['total_s']:.3f}; "
          f"training only: {p['train_s'] / b['train_s']:.3f}; machine: {platform.node()} "
          f"{platform.processor() or platform.machine()}")


if __name__ == "__main__":
    main()
