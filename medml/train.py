"""The training loop every task shares: seeded, GPU when present (mixed precision, pinned
memory), CPU otherwise, checkpointed each epoch and resumed from the last checkpoint.

Under ``torchrun`` (``medml.distributed``, ``train.nproc > 1``) the same loop runs as
DistributedDataParallel: each rank takes every ``world``-th example of the epoch's
shuffled order (together, the examples of one single-process batch) with
``batch_size / world`` per rank; rank 0 scores the validation split, logs, checkpoints
and writes the bundle; the others follow its decisions."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import distributed as dist
from torch.utils.data import Dataset, Subset

from medml.errors import BadInputError, TrainingDiverged
from medml.settings import TrainParams
from medml.tasks.base import Task

log = logging.getLogger("medml.train")
LAST = "last.pt"


@dataclass
class TrainOutcome:
    """What training produced: the final self-describing bundle and its history."""

    bundle_path: Path
    epochs: int
    resumed_from: int | None  # epochs already done when this process started
    seconds: float
    history: list[dict] = field(default_factory=list)
    kept_epoch: int | None = None  # the epoch whose weights are in the bundle (keep: best)

    def kept(self) -> dict:
        """The history entry of the weights kept: the best epoch or the last one."""
        if self.kept_epoch is not None:
            return next(h for h in self.history if h["epoch"] == self.kept_epoch)
        return self.history[-1] if self.history else {}


def pick_device(preference: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device {preference!r} asked for but CUDA is not available")
    return torch.device(preference)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shard(n: int, gen: torch.Generator, rank: int, world: int) -> list[int]:
    """This rank's share of the epoch's order: a permutation drawn from ``gen``, padded to a
    multiple of ``world`` (as DistributedSampler does), every ``world``-th index from
    ``rank`` on. Batch i of all ranks together holds the examples of batch i of one
    process with ``world`` times the batch size."""
    order = torch.randperm(n, generator=gen).tolist()
    order += order[: (-n) % world]
    return order[rank::world]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-write never leaves a half checkpoint


def fit(
    task: Task,
    datasets: dict[str, Dataset],
    spec: dict,
    params: TrainParams,
    checkpoint_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    extra: dict | None = None,
    progress: bool = True,
) -> TrainOutcome:
    """Train ``task``'s model described by ``spec``; resume from ``checkpoint_dir/last.pt``.

    ``on_epoch(epoch, metrics)`` is called after each epoch (the lifecycle logs to MLflow
    there). ``extra`` is stored in the checkpoint and the final bundle (run id, data version).
    """
    if len(datasets["train"]) == 0:
        raise BadInputError("the train split is empty; re-split the dataset")
    t0 = time.perf_counter()
    rank, world = rank_and_world()
    device = pick_device(params.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if params.threads:
        torch.set_num_threads(params.threads)
    batch_size = params.batch_size // world
    if batch_size < 1:
        raise BadInputError(f"batch_size {params.batch_size} is smaller than nproc {world}")
    progress = progress and rank == 0
    seed_everything(params.seed)
    model = task.rebuild_model(spec).to(device)
    net = model  # what the batches go through: the DDP wrapper under torchrun
    if world > 1:
        if device.type == "cuda":  # BatchNorm statistics over all ranks' batches (GPU only)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    milestones = sorted({max(1, int(f * params.epochs)) for f in params.lr_milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=params.lr_gamma)
    use_amp = device.type == "cuda"
    amp_dtype = (torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported()
                 else torch.float16)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    # Weight averaging over the last epochs (torch.optim.swa_utils): a flatter, steadier
    # final model than the last epoch's weights on small, noisy medical data sets.
    swa_from = (int(params.average_from * params.epochs) if params.average_from is not None
                else None)
    averaged = torch.optim.swa_utils.AveragedModel(model) if swa_from is not None else None

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / LAST
    start, history, resumed_from = 0, [], None
    best: dict | None = None  # keep=best: {"epoch", "value", "state"} of the best val epoch
    if last.is_file():
        # our own checkpoint under MEDML_HOME (it holds numpy RNG state, which
        # weights_only refuses); never a model file from the registry
        ck = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        if averaged is not None and ck.get("averaged") is not None:
            averaged.load_state_dict(ck["averaged"])
        _set_rng_state(ck["rng"])
        start, history, resumed_from = ck["epoch"], ck["history"], ck["epoch"]
        best = ck.get("best")
        log.warning("resuming from checkpoint %s at epoch %d/%d", last, start, params.epochs)

    workers = params.num_workers or (min(4, os.cpu_count() or 1) if use_amp else 0)
    val = datasets.get("val")
    columns = [TextColumn("[bold]train[/] {task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} epochs"), TimeElapsedColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("", total=params.epochs, completed=start)
        for epoch in range(start, params.epochs):
            if (best is not None and params.patience is not None
                    and epoch - best["epoch"] >= params.patience):
                log.info("early stop after epoch %d: no val_%s gain since epoch %d",
                         epoch, task.monitor, best["epoch"])
                break
            if hasattr(datasets["train"], "set_epoch"):
                datasets["train"].set_epoch(epoch)
            gen = torch.Generator().manual_seed(params.seed * 100_003 + epoch)
            # The epoch's order is drawn here, the same for any number of ranks (world 1:
            # the whole order), so a DDP run sees the single process's batches.
            shard = Subset(datasets["train"], _shard(len(datasets["train"]), gen, rank, world))
            loader = task.loader(shard, batch_size, False, device, workers)
            net.train()
            total, count, finite = 0.0, 0, 0
            for batch in loader:
                opt.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = task.loss(net, batch, device)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                n = len(batch[-1]) if isinstance(batch, list | tuple) else 1
                value = float(loss.detach())
                total += value * n
                count += n
                finite += math.isfinite(value)
            sched.step()
            if averaged is not None and epoch + 1 > swa_from:
                averaged.update_parameters(model)
            if world > 1:  # the loss over all ranks' examples
                sums = torch.tensor([total, float(count), float(finite)], dtype=torch.float64)
                dist.all_reduce(sums)
                total, count, finite = float(sums[0]), int(sums[1]), int(sums[2])
            metrics = {"train_loss": total / max(count, 1), "lr": opt.param_groups[0]["lr"]}
            # Nothing comes back from NaN weights, nor from an epoch without one finite loss
            # (fp16 loss scaling skips those steps, so the weights stay finite): stop before
            # this epoch is saved. Every rank sees the same weights and sums, so all stop.
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                why = "the weights are no longer finite"
            elif count and not finite:
                why = "no batch had a finite loss"
            else:
                why = None
            if why:
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1}: {why} (train loss "
                    f"{metrics['train_loss']:.4g}); lower tasks.{task.name}.train.lr (now "
                    f"{params.lr:g}) or check the data")
            if val is not None and len(val) and rank == 0:
                pred = task.predict_split(model, val, spec, device)
                metrics.update({f"val_{k}": v for k, v in task.score(pred, spec).items()})
            if world > 1:  # every rank follows rank 0's validation (best epoch, early stop)
                shared = [metrics]
                dist.broadcast_object_list(shared, src=0)
                metrics = shared[0]
            history.append({"epoch": epoch + 1, **metrics})
            if params.keep == "best":
                best = _better(best, epoch + 1, metrics.get(f"val_{task.monitor}"),
                               task.monitor_mode, model)
            if rank == 0:
                _atomic_save({"epoch": epoch + 1, "model": model.state_dict(), "best": best,
                              "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                              "scaler": scaler.state_dict(), "rng": _rng_state(),
                              "averaged": averaged.state_dict() if averaged is not None
                              else None, "history": history, "spec": spec,
                              "extra": extra or {}}, last)
                if on_epoch:
                    on_epoch(epoch + 1, metrics)
            shown = metrics.get(f"val_{task.monitor}", metrics["train_loss"])
            bar.update(job, advance=1, description=f"loss {metrics['train_loss']:.3f} "
                                                   f"val_{task.monitor} {shown:.3f}")
    bundle_path = checkpoint_dir / "bundle.pt"
    averaging = averaged is not None and int(averaged.n_averaged) > 0
    kept = best["epoch"] if best is not None and not averaging else None
    if rank != 0:  # rank 0 writes the bundle; the others wait for it
        dist.barrier()
        return TrainOutcome(bundle_path, len(history), resumed_from,
                            time.perf_counter() - t0, history, kept)
    if averaging:
        # Recompute BatchNorm statistics for the averaged weights (one pass, no grad).
        loader = task.loader(datasets["train"], params.batch_size, False, device, workers)
        torch.optim.swa_utils.update_bn((task.model_input(b, device) for b in loader),
                                        averaged, device)
        model = averaged.module
    elif kept is not None:
        model.load_state_dict(best["state"])
        log.info("keeping epoch %d (val_%s %.4f)", best["epoch"], task.monitor, best["value"])
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _atomic_save({"task": task.name, "spec": spec, "state_dict": state,
                  "extra": extra or {}, "params": params.model_dump()}, bundle_path)
    if world > 1:
        dist.barrier()
    return TrainOutcome(bundle_path, len(history), resumed_from,
                        time.perf_counter() - t0, history, kept)


def _better(best: dict | None, epoch: int, value: float | None, mode: str,
            model: torch.nn.Module) -> dict | None:
    """The best epoch so far by the validation monitor (NaN or missing never wins)."""
    if value is None or value != value:
        return best
    if best is None or (value > best["value"] if mode == "max" else value < best["value"]):
        return {"epoch": epoch, "value": value,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    return best
