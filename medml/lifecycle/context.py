"""The run context: what a lifecycle run knows about its dataset, found once.

``open_run`` reads the dataset's metadata, manifest and DVC version (two git
subprocesses) once per flow run or command; every step then takes the frozen
``RunContext`` and never opens the dataset again, nor re-derives its task, data hash or
git commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from medml.data.dataset import DatasetMeta, dataset_dir, load_manifest, load_meta
from medml.data.versioning import DataVersion, data_version
from medml.errors import BadInputError, NotFoundError
from medml.settings import Settings, TaskParams
from medml.tasks import get_task
from medml.tasks.base import Task


@dataclass(frozen=True)
class RunContext:
    """One dataset at one DVC version, with the settings a run uses on it."""

    settings: Settings
    dataset: str
    path: Path
    meta: DatasetMeta
    version: DataVersion
    task: Task
    _manifest: pd.DataFrame = field(repr=False, compare=False)
    experiment_id: str | None = None  # the MLflow experiment, once configured

    @property
    def params(self) -> TaskParams:
        """The task's settings (``tasks.<task>`` of the run's settings)."""
        return self.settings.task(self.task.name)

    @property
    def data_md5(self) -> str:
        return self.version.md5

    @property
    def git_commit(self) -> str:
        return self.version.git_commit or ""

    def manifest(self) -> pd.DataFrame:
        """The manifest as read at opening (a copy: steps may change theirs)."""
        return self._manifest.copy()

    def with_settings(self, settings: Settings) -> RunContext:
        """The same dataset with other settings (a tuning trial's, a command's overrides)."""
        return replace(self, settings=settings)

    def client(self):
        """An MlflowClient on the run's store, MLflow pointed at it in this process (a
        Dask worker or DDP rank gets the context by value, not MLflow's global state)."""
        import mlflow

        from medml import tracking

        if self.experiment_id is None:
            tracking.configure(self.settings)
        else:
            tracking.point(self.settings)
        return mlflow.MlflowClient()

    def tracked(self) -> RunContext:
        """The context with its MLflow experiment created or found (once)."""
        from medml import tracking

        if self.experiment_id is not None:
            tracking.point(self.settings)
            return self
        return replace(self, experiment_id=tracking.configure(self.settings))


def open_run(settings: Settings, name: str, *, task: str | None = None) -> RunContext:
    """Open dataset ``name`` of the workspace: metadata, manifest and DVC version. With
    ``task``, a dataset of another task is refused with one line naming the right one."""
    if task is not None:
        get_task(task)  # an unknown task fails first, naming the known ones
    path = find_dataset(settings, name)
    meta = load_meta(path)
    if task is not None and meta.task != task:
        raise BadInputError(f"dataset {name!r} belongs to task {meta.task}, not {task}; "
                            f"run with --task {meta.task}")
    return RunContext(settings, name, path, meta, data_version(settings.workspace, path),
                      get_task(meta.task), _read_manifest(path))


def find_dataset(settings: Settings, name: str) -> Path:
    """Where dataset ``name`` is; NotFoundError (one line) when the workspace has none.
    Reads nothing in it: a check a command makes before it starts a flow."""
    path = dataset_dir(settings.data_dir, name)
    if not path.is_dir():
        raise NotFoundError(f"dataset {name!r} not found in {settings.data_dir}; "
                            "create it with `medml data import` or `medml data generate`")
    return path


def _read_manifest(path: Path) -> pd.DataFrame:
    try:
        return load_manifest(path)
    except (ValueError, OSError) as e:  # ParserError, EmptyDataError, UnicodeDecodeError
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInputError(f"{path / 'manifest.csv'}: unreadable manifest ({msg}); "
                            "re-import the dataset") from None

