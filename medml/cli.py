"""The ``medml`` command line. Settings are loaded here, once, and passed down."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from medml.errors import BadInputError, CheckFailed, MedMLError
from medml.render import num
from medml.settings import Settings, load_settings, override_task
from medml.tracking import KNOWN_WARNINGS

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="MedML: versioned data to a gated, served, auditable model.")
data_app = typer.Typer(no_args_is_help=True, help="Create, import and validate datasets.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()


def _settings(ctx: typer.Context) -> Settings:
    return ctx.obj


_NPROC_HELP = ("train with DDP over N processes (torchrun: NCCL on GPUs, gloo on CPU); "
               "default: tasks.<task>.train.nproc")


class _OneLineErrors(logging.Formatter):
    """A MedMLError is one line: when Prefect logs a task or flow that failed on one, the
    console leaves its traceback out (the Prefect API's copy of the log keeps it). The record
    is left as it was for any other handler."""

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and isinstance(record.exc_info[1], MedMLError)):
            return super().format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


@app.callback()
def _main(ctx: typer.Context,
          params: Path = typer.Option(None, "--params", envvar="MEDML_PARAMS",
                                      help="settings file (default ./params.yaml)"),
          verbose: bool = typer.Option(False, "-v", "--verbose")) -> None:
    handler = RichHandler(console=console, show_path=False)
    handler.setFormatter(_OneLineErrors("%(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("medml").setLevel(logging.INFO)
    if not verbose:  # MLflow's own chatter (schema hints, monitor start/stop) stays out
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        # Great Expectations sets some of its loggers to INFO itself (Data Docs notes)
        handler.addFilter(lambda r: r.levelno >= logging.WARNING
                          or not r.name.startswith("great_expectations"))
        for message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
    ctx.obj = load_settings(params)


# ------------------------------------------------------------------ data
def _tracked_md5(s: Settings, name: str) -> str | None:
    from medml.data.versioning import data_version

    try:
        return data_version(s.workspace, s.data_dir / name).md5
    except (MedMLError, OSError, ValueError):
        return None


def _announce(s: Settings, v: Any, before: str | None) -> None:
    """With a Prefect server, a changed dataset is an event that deployments scheduled
    `--on-data-change` react to."""
    if s.prefect_api_url and v.md5 != before:
        os.environ.update(s.prefect_env())
        from flows.schedule import emit_data_changed

        emit_data_changed(v.name, v.md5, before)
        out.print(f"announced the new version of {v.name!r} to Prefect")


_STAGE_HELP = ("with --out: raw (as the source gives it) or split (de-identified and "
               "split, the default)")


@data_app.command("deid")
def data_deid(ctx: typer.Context, src: Path,
              out_dir: Path = typer.Option(..., "--out", help="write the result to DIR"),
              overwrite: bool = False,
              retain_patient_characteristics: bool = typer.Option(
                  False, help="DICOM: keep sex, age, size, weight (ages over 89 as 090Y)"),
              clean_descriptors: bool = typer.Option(
                  False, help="DICOM: keep study/series descriptions, with PHI removed")
              ) -> None:
    """De-identify a dataset (the deid stage: identifying manifest columns), or a folder
    of DICOM files (headers per the PS3.15 basic profile) before importing it."""
    from medml import lifecycle

    is_dataset = (src / "dataset.json").is_file()
    opts = {} if is_dataset else {
        "retain_patient_characteristics": retain_patient_characteristics,
        "clean_descriptors": clean_descriptors}
    n = lifecycle.deidentify(_settings(ctx), src, out_dir, overwrite=overwrite, **opts)
    what = "examples" if is_dataset else "DICOM files"
    report = "deid_report.json" if is_dataset else "dicom_deid_report.json"
    out.print(f"de-identified {n} {what} into {out_dir} (report: {report})")


@data_app.command("split")
def data_split(ctx: typer.Context, src: Path,
               out_dir: Path = typer.Option(..., "--out", help="write the result to DIR"),
               overwrite: bool = False) -> None:
    """Split stage: train/val/test by patient (tasks.<task>.split), or the source's own."""
    from medml import lifecycle

    n = lifecycle.split(_settings(ctx), src, out_dir, overwrite=overwrite)
    out.print(f"split {n} examples into {out_dir}")


@data_app.command("generate")
def data_generate(ctx: typer.Context, task: str = typer.Option(..., "--task"),
                  name: str = typer.Option(None, "--name", help="dataset name"),
                  out_dir: Path = typer.Option(None, "--out", help="write to DIR (no DVC)"),
                  stage: str = typer.Option("split", "--stage", help=_STAGE_HELP),
                  seed: int = 0, overwrite: bool = False) -> None:
    """Write a demo dataset: into the workspace under DVC (--name), or to a folder (--out)."""
    from medml import lifecycle

    s = _settings(ctx)
    if out_dir is not None:
        n = lifecycle.materialise(s, task, out_dir, seed=seed, overwrite=overwrite,
                                  stage=stage)
        out.print(f"wrote {n} examples to {out_dir}")
        return
    name = name or f"demo-{task}"
    before = _tracked_md5(s, name)
    v = lifecycle.create_dataset(s, task, name, seed=seed, overwrite=overwrite)
    out.print(f"dataset [bold]{v.name}[/] at {v.path}: dvc md5 {v.md5}, {v.nfiles} files")
    _announce(s, v, before)


@data_app.command("import")
def data_import(ctx: typer.Context, src: Path, task: str = typer.Option(..., "--task"),
                fmt: str = typer.Option(..., "--format"),
                name: str = typer.Option(None, "--name", help="dataset name"),
                out_dir: Path = typer.Option(None, "--out", help="write to DIR (no DVC)"),
                stage: str = typer.Option("split", "--stage", help=_STAGE_HELP),
                seed: int = 0, overwrite: bool = False) -> None:
    """Import real data: into a DVC-tracked dataset (--name), or to a folder (--out)."""
    from medml import lifecycle

    s = _settings(ctx)
    if out_dir is not None:
        n = lifecycle.materialise(s, task, out_dir, fmt=fmt, src=src, seed=seed,
                                  overwrite=overwrite, stage=stage)
        out.print(f"wrote {n} examples to {out_dir}")
        return
    if not name:
        raise MedMLError("give --name NAME (a DVC-tracked dataset) or --out DIR")
    before = _tracked_md5(s, name)
    v = lifecycle.create_dataset(s, task, name, fmt=fmt, src=src, seed=seed,
                                 overwrite=overwrite)
    out.print(f"dataset [bold]{v.name}[/] at {v.path}: dvc md5 {v.md5}, {v.nfiles} files")
    _announce(s, v, before)


@data_app.command("validate")
def data_validate(ctx: typer.Context, name: str) -> None:
    """Run the task's validation suite; exit 1 on failure."""
    from medml import lifecycle

    report = lifecycle.validate(lifecycle.open_run(_settings(ctx), name))
    for line in report.failures:
        out.print(f"[red]FAIL[/] {line}")
    for line in report.accepted:
        out.print(f"[yellow]ACCEPTED[/] {line}")
    out.print(f"report: {report.report_path}")
    if report.docs_path:
        out.print(f"data docs: {report.docs_path}")
    if not report.success:
        raise CheckFailed(f"dataset {name!r} failed {len(report.failures)} validation checks")
    out.print(f"[green]dataset {name!r} passed validation[/]")


# ------------------------------------------------------------------ lifecycle
def _run_flow(s: Settings, dataset: str, model: str, task: str) -> dict[str, Any]:
    os.environ.update(s.prefect_env())
    from flows.lifecycle import lifecycle_flow

    return lifecycle_flow(settings=s.for_flow(), dataset=dataset, model=model, task=task)


def _summary(result: dict[str, Any], s: Settings) -> None:
    table = Table(title=f"{result['model']} version {result['version']}")
    table.add_column("metric")
    table.add_column("test", justify="right")
    for k, v in sorted(result["metrics"].items()):
        table.add_row(k, num(v))
    out.print(table)
    d = result["decision"]
    out.print(f"gate: {'[green]passed' if d.passed else '[red]refused'}[/] "
              f"({escape(d.reasons())}); "
              f"alias champion -> version {d.version}" if d.passed else "")
    out.print(f"MLflow run {result['run_id']}, Prefect flow run {result['flow_run_id']}; "
              f"store {s.mlflow_uri}; browse with `medml ui`")


def _precheck(s: Settings, task: str, dataset: str, model: str | None) -> None:
    """What can be checked before a flow starts (and creates any store): a known task, a
    valid model name, a dataset that exists. The flow checks the dataset's task."""
    from medml.lifecycle.context import find_dataset
    from medml.registry import check_name
    from medml.tasks import get_task

    get_task(task)
    if model is not None:
        check_name(model)
    find_dataset(s, dataset)


@app.command()
def pipeline(ctx: typer.Context, task: str = typer.Option(..., "--task"),
             dataset: str = typer.Option(..., "--dataset"),
             model: str = typer.Option(None, "--model", help="registered model name"),
             nproc: int = typer.Option(None, "--nproc", min=1, help=_NPROC_HELP)) -> None:
    """validate -> train -> evaluate -> register -> gate, as a Prefect flow."""
    s = _settings(ctx)
    _precheck(s, task, dataset, model)
    s = override_task(s, task, train={"nproc": nproc})
    _summary(_run_flow(s, dataset, model or f"{task}-{dataset}", task), s)


@app.command()
def tune(ctx: typer.Context, task: str = typer.Option(..., "--task"),
         dataset: str = typer.Option(..., "--dataset"),
         model: str = typer.Option(None, "--model", help="registered model name"),
         trials: int = typer.Option(None, "--trials", min=1,
                                    help="default: tasks.<task>.tune.trials"),
         parallel: int = typer.Option(None, "--parallel", min=1,
                                      help="trials at once (Dask worker processes); "
                                           "default: tasks.<task>.tune.parallel")) -> None:
    """Hyperparameter search (Optuna; trials in parallel on a Prefect Dask task runner,
    each a nested MLflow run), then the best trial through evaluate -> register -> gate."""
    s = _settings(ctx)
    _precheck(s, task, dataset, model)
    os.environ.update(s.prefect_env())
    from flows.tune import run

    result = run(s, dataset, model or f"{task}-{dataset}", task, trials=trials,
                 parallel=parallel)
    table = Table(title=f"trials (parent MLflow run {result['parent_run_id']})")
    for col in ("trial", "val", "settings", "run"):
        table.add_column(col)
    for t in sorted(result["trials"], key=lambda t: t["number"]):
        mark = " *" if t["run_id"] == result["run_id"] else ""
        value = ("failed" if t["error"] else "-") if t["value"] is None else num(t["value"])
        table.add_row(f"{t['number']}{mark}", value,
                      escape(json.dumps(t["overrides"])), t["run_id"])
    out.print(table)
    _summary(result, s)


@app.command()
def demo(ctx: typer.Context, task: str = typer.Option("imaging", "--task"),
         seed: int = 0) -> None:
    """Generate demo data, then run the whole lifecycle, embedded."""
    from medml import lifecycle
    from medml.tasks import TASKS, get_task

    s = _settings(ctx)
    names = sorted(TASKS) if task == "all" else [task]
    for name in names:
        get_task(name)
    for name in names:
        demo_cfg = dict(s.task(name).demo)
        ds_settings = override_task(
            s, name, train=demo_cfg.pop("train", {}), data=demo_cfg.pop("data", {}),
            gate=demo_cfg.pop("gate", {}), demo=demo_cfg, where=f"tasks.{name}.demo")
        dataset = f"demo-{name}"
        v = lifecycle.create_dataset(ds_settings, name, dataset, seed=seed, overwrite=True)
        out.print(f"[bold]demo[/] {name}: generated {v.nfiles} files into {v.path} "
                  f"(dvc md5 {v.md5})")
        _summary(_run_flow(ds_settings, dataset, dataset, name), ds_settings)


@app.command()
def train(ctx: typer.Context, dataset: str = typer.Option(..., "--dataset"),
          nproc: int = typer.Option(None, "--nproc", min=1, help=_NPROC_HELP)) -> None:
    """Validate, train and evaluate one dataset's model (no registration)."""
    from medml import lifecycle

    run = lifecycle.open_run(_settings(ctx), dataset)
    run = run.with_settings(override_task(run.settings, run.task.name, train={"nproc": nproc}))
    report = lifecycle.validate(run, check=True)
    trained = lifecycle.train(run, validation_report=str(report.report_path))
    ev = lifecycle.evaluate(run, trained)
    out.print(f"run {trained.run_id}: " + ", ".join(f"{k} {num(v)}"
                                                  for k, v in sorted(ev.metrics.items())))


@app.command()
def evaluate(ctx: typer.Context, model: str = typer.Argument(..., help="NAME@alias or NAME/V"),
             dataset: str = typer.Option(..., "--dataset")) -> None:
    """Evaluate a registered model on a dataset's test split (a new MLflow run)."""
    from medml import lifecycle

    ev = lifecycle.evaluate_registered(lifecycle.open_run(_settings(ctx), dataset), model)
    out.print(f"run {ev.run_id}: " + ", ".join(f"{k} {num(v)}"
                                              for k, v in sorted(ev.metrics.items())))


def _print_decision(d: Any) -> None:
    from medml.render import check_line

    for c in d.checks:
        mark = "[green]pass[/]" if c["passed"] else "[red]FAIL[/]"
        out.print(f"{mark} {escape(check_line(c, ci=True))}")
    for note in d.notes:
        out.print(f"[dim]note: {escape(note)}[/]")


@app.command()
def promote(ctx: typer.Context, name: str,
            version: str = typer.Option(None, "--version"),
            by: str = typer.Option(None, "--by", help="who asks (default: the OS user)")) -> None:
    """Run the gate on a version (default: the latest); exit 1 if refused."""
    import getpass

    from medml import lifecycle

    d = lifecycle.promote(_settings(ctx), name, version, who=by or getpass.getuser())
    _print_decision(d)
    out.print(f"decision {d.decision_id}")
    if not d.passed:
        raise CheckFailed(f"{name} version {d.version} not promoted: {d.reasons()}")
    out.print(f"[green]{name} version {d.version} is now champion[/]")


@app.command()
def approve(ctx: typer.Context, name: str, version: str,
            by: str = typer.Option(..., "--by", help="who approves"),
            reason: str = typer.Option(..., "--reason"),
            reject: bool = typer.Option(False, "--reject", help="answer no instead")) -> None:
    """Answer a lifecycle run that waits for approval of NAME VERSION."""
    s = _settings(ctx)
    os.environ.update(s.prefect_env())
    from flows.lifecycle import answer_approval

    run_id = answer_approval(s, name, version, by=by, reason=reason, approved=not reject)
    out.print(f"{'rejected' if reject else 'approved'} {name} version {version} "
              f"(flow run {run_id})")


@app.command()
def rollback(ctx: typer.Context, name: str,
             by: str = typer.Option(None, "--by", help="who (default: the OS user)"),
             reason: str = typer.Option("", "--reason")) -> None:
    """Move alias champion back to the previous champion (recorded in the alias history)."""
    from medml import registry

    e = registry.rollback(_settings(ctx), name, who=by, why=reason)
    out.print(f"{name}: champion {e['from_version']} -> {e['to_version']} (by {e['who']})")


@app.command()
def lineage(ctx: typer.Context,
            target: str = typer.Argument(..., metavar="NAME@REF",
                                         help="NAME@alias or NAME/V; or `verify NAME@REF`"),
            ref: str = typer.Argument(None, hidden=True),
            fmt: str = typer.Option("md", "--format", "-f", help="json, md or html"),
            output: Path = typer.Option(None, "--output", "-o", help="write to this file")
            ) -> None:
    """The evidence pack of a registered version (data, code, environment, validation,
    metrics, gate decisions, alias history, deployments); `medml lineage verify NAME@REF`
    recomputes the data and model hashes and exits 1 naming what changed."""
    from medml import lineage as lin

    s = _settings(ctx)
    if target == "verify":
        if not ref:
            raise BadInputError("give the model to verify: medml lineage verify NAME@REF")
        problems = lin.verify(s, ref)
        for line in problems:
            out.print(f"[red]CHANGED[/] {escape(line)}", soft_wrap=True)
        if problems:
            raise CheckFailed(f"{ref}: {len(problems)} hash(es) differ from the registered ones")
        out.print(f"[green]{ref}: data and model artifact match their registered hashes[/]")
        return
    if ref:
        raise BadInputError(f"unexpected argument {ref!r}; use medml lineage NAME@REF "
                            "or medml lineage verify NAME@REF")
    if fmt not in lin.FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; choose one of: {', '.join(lin.FORMATS)}")
    text = lin.render(lin.collect(s, target), fmt)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command()
def serve(ctx: typer.Context, name: str = typer.Argument(..., help="registered model name"),
          alias: str = typer.Option("champion", "--alias", help="the alias to follow"),
          host: str = typer.Option("127.0.0.1", "--host"),
          port: int = typer.Option(8080, "--port"),
          token: str = typer.Option(None, "--token", envvar="MEDML_SERVE_TOKEN",
                                    help="require this bearer token (default: none)"),
          max_batch: int = typer.Option(32, "--max-batch", help="items per model call"),
          max_wait_ms: float = typer.Option(5.0, "--max-wait-ms",
                                            help="how long a batch waits for more under load"),
          max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="request size limit"),
          poll_s: float = typer.Option(2.0, "--poll-s", help="how often the alias is checked")
          ) -> None:
    """Serve NAME@champion over HTTP (POST /predict, GET /health, GET /version, /docs),
    following the alias without a restart."""
    from medml.serving import serve as run

    run(_settings(ctx), name, alias=alias, host=host, port=port, token=token,
        max_batch=max_batch, max_wait_ms=max_wait_ms,
        max_body_bytes=int(max_body_mb * 1024 * 1024), poll_s=poll_s)


@app.command()
def schedule(ctx: typer.Context, name: str = typer.Argument(..., help="registered model name"),
             dataset: str = typer.Option(..., "--dataset"),
             cron: str = typer.Option(None, "--cron", help='e.g. "0 2 * * 0" (UTC)'),
             on_data_change: bool = typer.Option(
                 False, "--on-data-change",
                 help="also run when `medml data import/generate` changes the dataset"),
             pool: str = typer.Option("medml", "--pool", help="Prefect work pool")) -> None:
    """Retrain on a schedule: the lifecycle as a Prefect deployment on a work pool (run a
    worker: `prefect worker start --pool medml`). Needs a Prefect server (server profile)."""
    from medml import lifecycle

    s = _settings(ctx)
    if not cron and not on_data_change:
        raise BadInputError("give --cron EXPR and/or --on-data-change")
    if not s.prefect_api_url:
        raise BadInputError("scheduling needs a Prefect server: set MEDML_PREFECT_API_URL "
                            "(the server profile)")
    from medml.registry import check_name

    check_name(name)
    lifecycle.open_run(s, dataset)  # exists, clear error otherwise
    os.environ.update(s.prefect_env())
    from flows.schedule import schedule_lifecycle

    dep = schedule_lifecycle(s.for_flow(), dataset, name,
                             cron=cron, on_data_change=on_data_change, pool=pool)
    out.print(f"deployment {name}-{dataset} ({dep}) on work pool {pool!r}"
              + (f", cron {cron!r} (UTC)" if cron else "")
              + (", and on data change" if on_data_change else "")
              + f"; start a worker: prefect worker start --pool {pool}")


@app.command()
def ui(ctx: typer.Context, port: int = 5000, host: str = "127.0.0.1") -> None:
    """Open the MLflow UI on the embedded store."""
    s = _settings(ctx)
    s.state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", s.mlflow_uri,
           "--default-artifact-root", s.artifact_root.as_uri(), "--host", host,
           "--port", str(port)]
    out.print(f"MLflow UI on http://{host}:{port} (store {s.mlflow_uri})")
    raise typer.Exit(subprocess.call(cmd))


def main() -> None:
    """Entry point: user errors become one line and an exit code, never a traceback.
    (Usage errors are Typer's own: a short message and exit code 2.)"""
    try:
        app()
    except MedMLError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True, highlight=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
