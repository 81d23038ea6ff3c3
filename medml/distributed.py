"""Data-parallel training: ``lifecycle.train`` with ``train.nproc > 1`` starts ``torchrun``
on this module, one process per rank (NCCL on GPUs, gloo on CPU).

The calling process owns the MLflow run; here rank 0 logs each epoch's metrics into that
run (by id), writes the checkpoints and the bundle; the other ranks create no runs. The
job (settings, dataset, spec, run id) comes in a JSON file, the outcome goes back in
another beside it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from medml.errors import MedMLError

log = logging.getLogger("medml.distributed")
JOB = "ddp-job.json"
OUTCOME = "ddp-outcome.json"
ERROR = "ddp-error.json"  # a rank's MedMLError, raised again by the caller as the same type


def launch(job: dict, checkpoint_dir: Path, nproc: int):
    """Run ``job`` on ``nproc`` ranks through torchrun and wait; the rank-0 outcome."""
    from medml.train import TrainOutcome

    checkpoint_dir = Path(checkpoint_dir)
    job_file = checkpoint_dir / JOB
    job_file.write_text(json.dumps(job))
    for name in (OUTCOME, ERROR):
        (checkpoint_dir / name).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "medml.distributed", str(job_file)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(job.get("threads") or 1))
    log.info("DDP: %s", " ".join(cmd))
    done = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0 and (err := _rank_error(checkpoint_dir / ERROR)) is not None:
        raise err
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        sys.stderr.write("\n".join(lines[-40:]) + "\n")
        error = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        raise MedMLError(f"distributed training ({nproc} processes) failed: {error.strip()}")
    out = json.loads((checkpoint_dir / OUTCOME).read_text())
    return TrainOutcome(Path(out["bundle_path"]), out["epochs"], out["resumed_from"],
                        out["seconds"], out["history"], out["kept_epoch"])


def _rank_error(path: Path) -> MedMLError | None:
    """The MedMLError a rank left at ``path``, as its own type; None if there is none."""
    from medml import errors

    try:
        err = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cls = getattr(errors, str(err.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, MedMLError)):
        cls = MedMLError
    return cls(str(err.get("message", "")))


def _write_rank_error(path: Path, e: MedMLError, rank: int) -> None:
    """Leave ``e`` for the caller; whole or not at all (ranks may fail at once)."""
    tmp = path.with_name(f"{path.name}.{rank}.tmp")
    tmp.write_text(json.dumps({"type": type(e).__name__, "message": str(e), "rank": rank}))
    os.replace(tmp, path)


def main(job_file: str) -> None:
    """One rank: join the process group, train, and (rank 0) report the outcome."""
    import mlflow
    import torch
    from torch import distributed as dist

    from medml import tracking
    from medml.data.dataset import load_manifest, load_meta
    from medml.settings import Settings
    from medml.tasks import get_task
    from medml.train import fit, pick_device

    job = json.loads(Path(job_file).read_text())
    settings = Settings(**job["settings"])
    params = settings.task(job["task"])
    cuda = pick_device(params.train.device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    try:
        task = get_task(job["task"])
        path = Path(job["dataset_dir"])
        datasets = task.datasets(path, load_meta(path), load_manifest(path), params)
        on_epoch = None
        if rank == 0:
            tracking.configure(settings)

            def on_epoch(epoch: int, metrics: dict) -> None:
                mlflow.log_metrics(metrics, step=epoch, run_id=job["run_id"])

        outcome = fit(task, datasets, job["spec"], params.train, Path(job["checkpoint_dir"]),
                      on_epoch=on_epoch, extra=job["extra"], progress=job["progress"])
        if rank == 0:
            Path(job["checkpoint_dir"], OUTCOME).write_text(json.dumps({
                "bundle_path": str(outcome.bundle_path), "epochs": outcome.epochs,
                "resumed_from": outcome.resumed_from, "seconds": outcome.seconds,
                "history": outcome.history, "kept_epoch": outcome.kept_epoch,
                "world_size": dist.get_world_size()}))
    except MedMLError as e:  # the caller raises it again, as itself (one line)
        _write_rank_error(Path(job["checkpoint_dir"], ERROR), e, rank)
        raise
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
