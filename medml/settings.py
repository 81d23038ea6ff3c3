"""One typed settings model, loaded once at the entry point from params.yaml plus environment.

Precedence: environment (``MEDML_*``, nested keys joined with ``__``) over ``params.yaml``
over the defaults below. Loading reads files only; nothing is created or contacted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from medml.errors import BadInputError


class TrainParams(BaseModel):
    """Training settings shared by every task (a task may add its own keys)."""

    model: str = "small_cnn"  # name in the task's model registry
    model_args: dict[str, Any] = Field(default_factory=dict)  # constructor overrides
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # fractions of epochs
    lr_gamma: float = 0.1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0  # DataLoader workers (raised automatically on CUDA)
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    nproc: int = Field(1, ge=1)  # > 1: DDP over this many processes (torchrun; gloo/NCCL)
    average_from: float | None = None  # average weights from this fraction of epochs on
    keep: Literal["last", "best"] = "last"  # final weights: last epoch, or best val monitor
    patience: int | None = None  # with keep=best: stop after this many epochs without gain
    augment: bool = True
    tta: bool = True  # average predictions over flips at evaluation


class GateParams(BaseModel):
    """Promotion gate (medml/gate.py). Metrics are the task's test metrics, without the
    ``test_`` prefix. A gate with no check configured refuses to promote."""

    floors: dict[str, float] = Field(default_factory=dict)  # metric >= bound
    ceilings: dict[str, float] = Field(default_factory=dict)  # metric <= bound (e.g. ece)
    non_inferiority: dict[str, float] = Field(default_factory=dict)  # metric -> margin
    subgroup_floors: dict[str, float] = Field(default_factory=dict)  # in every subgroup
    min_subgroup_n: int = 30  # subgroups with fewer test examples are not judged
    bootstrap: int = 500  # resamples for the paired non-inferiority CI
    level: float = 0.95  # confidence level of that CI
    approval: bool = False  # wait for a human approval after the checks pass
    approval_timeout_s: int = 3600  # no answer in time: not promoted


class DatasetParams(BaseModel):
    """Per-dataset settings, keyed by dataset name under ``datasets:`` in params.yaml."""

    # Validation findings accepted for this dataset: check name -> why. An accepted failure
    # is still reported (and recorded with the run) but does not stop the lifecycle.
    accept: dict[str, str] = Field(default_factory=dict)


class SplitParams(BaseModel):
    """The split stage (medml/data/splits.py): train/val/test fractions and the seed.
    Splits given by a source (MedMNIST's official ones) are kept as they are."""

    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0


class TuneParams(BaseModel):
    """The hyperparameter search of ``medml tune`` (medml/tune.py): ``space`` maps a
    ``train`` key (``model_args.<name>`` for a constructor argument) to a list of choices
    or a range ``{low, high, log}`` (integers when both ends are integers)."""

    trials: int = Field(8, ge=1)
    parallel: int = Field(2, ge=1)  # trials at once, each in its own Dask worker process
    sampler: Literal["tpe", "grid"] = "tpe"  # grid: every combination of the lists
    space: dict[str, Any] = Field(default_factory=dict)


class TaskParams(BaseModel):
    """Everything one task needs: preprocessing, training, gate and demo-data settings."""

    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    gate: GateParams = Field(default_factory=GateParams)
    data: dict[str, Any] = Field(default_factory=dict)  # task-specific preprocessing
    demo: dict[str, Any] = Field(default_factory=dict)  # task-specific demo generator
    tune: TuneParams = Field(default_factory=TuneParams)


class Settings(BaseSettings):
    """MedML settings. ``home`` holds all embedded state; ``workspace`` is the DVC repository."""

    model_config = SettingsConfigDict(
        env_prefix="MEDML_", env_nested_delimiter="__", extra="forbid"
    )

    profile: Literal["embedded", "server"] = "embedded"
    workspace: Path = Field(default_factory=Path.cwd)
    home: Path | None = None  # default: <workspace>/.medml
    tracking_uri: str | None = None  # default (embedded): sqlite under home
    prefect_api_url: str | None = None  # server profile; embedded uses Prefect's local server
    dvc_remote: str | None = None  # default (embedded): <home>/dvc-remote
    experiment: str = "medml"
    shared_data: Path | None = None  # where ../shared/data lives, for real-data benchmarks
    deid_key: SecretStr | None = None  # pseudonymisation key; default: <home>/deid.key
    tasks: dict[str, TaskParams] = Field(default_factory=dict)
    datasets: dict[str, DatasetParams] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over params.yaml (passed as init kwargs).
        return env_settings, init_settings

    # ---- derived locations (pure: nothing is created here) ----
    @property
    def state_dir(self) -> Path:
        return (self.home or self.workspace / ".medml").resolve()

    @property
    def data_dir(self) -> Path:
        return self.workspace.resolve() / "data"

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.state_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.state_dir / "mlartifacts"

    @property
    def prefect_home(self) -> Path:
        return self.state_dir / "prefect"

    @property
    def checkpoint_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    @property
    def remote_url(self) -> str:
        return self.dvc_remote or str(self.state_dir / "dvc-remote")

    def task(self, name: str) -> TaskParams:
        """The settings of one task (defaults when params.yaml has none)."""
        return self.tasks.get(name) or TaskParams()

    def for_flow(self) -> dict[str, Any]:
        """The settings as JSON for a flow's or a child process's parameters, without the
        pseudonymisation key: a dump would carry it masked ("**********"), which would
        silently become the key there. The receiver reads MEDML_DEID_KEY or home's key file."""
        return self.model_dump(mode="json", exclude={"deid_key"})

    def prefect_env(self) -> dict[str, str]:
        """Environment for Prefect: its local data under home (embedded) or a server URL."""
        env = {"PREFECT_HOME": str(self.prefect_home),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               # the temporary server's 20 s start-up limit is missed on a loaded machine
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
        if self.prefect_api_url:
            env["PREFECT_API_URL"] = self.prefect_api_url
        else:
            env["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "true"
        return env


def override_task(settings: Settings, task: str, *, train: dict[str, Any] | None = None,
                  data: dict[str, Any] | None = None, gate: dict[str, Any] | None = None,
                  demo: dict[str, Any] | None = None, where: str | None = None) -> Settings:
    """``settings`` with ``tasks.<task>`` changed, validated like params.yaml: ``train`` and
    ``gate`` keys replace those fields (``model_args.<name>`` goes into the model's
    constructor arguments; None values are ignored), ``data`` is merged into the task's
    preprocessing settings, ``demo`` replaces its demo-data settings. The one way the CLI,
    the demo and tune change settings; ``where`` names the source of the overrides in
    errors (default ``tasks.<task>.train``)."""
    tp = settings.task(task)
    train_d = tp.train.model_dump()
    for key, value in (train or {}).items():
        if value is None:
            continue
        if key.startswith("model_args."):
            train_d["model_args"] = {**train_d["model_args"], key.split(".", 1)[1]: value}
        elif key in TrainParams.model_fields:
            train_d[key] = value
        else:
            raise BadInputError(f"{where or f'tasks.{task}.train'}.{key}: not a train setting; "
                                f"use one of {', '.join(TrainParams.model_fields)} "
                                "or model_args.<name>")
    gate_d = tp.gate.model_dump()
    for key, value in (gate or {}).items():
        if key not in GateParams.model_fields:
            raise BadInputError(f"{where or f'tasks.{task}.gate'}.{key}: not a gate setting; "
                                f"use one of {', '.join(GateParams.model_fields)}")
        gate_d[key] = value
    raw = {**tp.model_dump(), "train": train_d, "gate": gate_d,
           "data": {**tp.data, **(data or {})},
           "demo": tp.demo if demo is None else demo}
    try:
        tp = TaskParams(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise BadInputError(f"{where or f'tasks.{task}'}: setting '{loc}': {err['msg']}"
                            ) from exc
    return settings.model_copy(update={"tasks": {**settings.tasks, task: tp}})


def load_settings(params_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Read ``params.yaml`` (default: ``$MEDML_PARAMS`` or ``./params.yaml`` if present),
    apply environment and keyword overrides, and validate."""
    path = Path(params_file or os.environ.get("MEDML_PARAMS", "params.yaml"))
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise BadInputError(f"{path}: not valid YAML ({exc}); fix the file") from exc
        if not isinstance(data, dict):
            raise BadInputError(f"{path}: expected a mapping of settings at the top level")
    elif params_file is not None:
        raise BadInputError(f"{path}: settings file not found")
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadInputError(f"{path}: setting '{where}': {err['msg']}") from exc
