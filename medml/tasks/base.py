"""The task plug-in interface: what the lifecycle needs from imaging, nlp or speech.

The lifecycle (``medml.lifecycle``), the trainer (``medml.train``) and the flows only
call these methods; adding a task means writing one subclass and naming it in
``medml.tasks.TASKS``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medml.data.dataset import DatasetMeta
from medml.settings import TaskParams

# An importer reads ``src`` and writes example files into ``out_dir`` (an empty staging
# directory); it returns the manifest and metadata. It raises BadInputError naming the file.
Importer = Callable[..., tuple[pd.DataFrame, DatasetMeta]]


@dataclass
class EvalResult:
    """Test-split evaluation: scalar metrics, figures for MLflow and per-example predictions."""

    metrics: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)  # file name -> matplotlib Figure
    predictions: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # e.g. per-subgroup metrics


class Task(ABC):
    """One kind of model (imaging, nlp, speech) behind one interface."""

    name: str
    #: what the model is for, completing "This model ..." (a sentence fragment, e.g.
    #: "transcribes medical dictation (WAV audio) into text"); may contain ``{classes}``,
    #: filled in with the model's class names (the model card states it)
    intended_use: str
    #: metric used to choose/monitor during training (on the val split), and its direction
    monitor: str
    monitor_mode: str = "max"
    #: manifest column whose rows are resampled together in bootstrap CIs and in the gate's
    #: paired comparison (patient, document or speaker); rows without one stand alone
    group_column: str = "patient_id"
    #: manifest columns whose values form the subgroups the gate and the reports look at
    subgroup_columns: tuple[str, ...] = ()
    #: manifest columns of free text (notes, transcripts): de-identified by the deid stage
    #: (``deid_rules``) and checked for identifiers left by validation
    text_columns: tuple[str, ...] = ()
    #: distributions the logged pyfunc model needs besides mlflow, torch, pandas and numpy
    requirements: tuple[str, ...] = ()

    # ---- data ----
    # By convention a task's package holds ``importers.IMPORTERS`` and
    # ``generate.generate``; they are imported when first used (they pull in their
    # format libraries).
    @property
    def importers(self) -> dict[str, Importer]:
        """Format name -> importer (``<task package>.importers.IMPORTERS``)."""
        return importlib.import_module(f"{self._package()}.importers").IMPORTERS

    def generate(self, out_dir: Path, params: dict[str, Any], seed: int, name: str
                 ) -> tuple[pd.DataFrame, DatasetMeta]:
        """Write a demo dataset into ``out_dir`` (``<task package>.generate.generate``)."""
        module = importlib.import_module(f"{self._package()}.generate")
        return module.generate(out_dir, params, seed, name)

    def _package(self) -> str:
        return type(self).__module__.rsplit(".", 1)[0]

    def deid_rules(self, meta: DatasetMeta) -> dict[str, str]:
        """Manifest column -> de-identification action (``medml.deid.manifest``): by
        default patient ids become keyed pseudonyms. Tasks add their identifying columns
        (DICOM UIDs, free text)."""
        return {"patient_id": "pseudonym", **dict.fromkeys(self.text_columns, "text")}

    def deid_files(self, dataset_dir: Path, manifest: pd.DataFrame, meta: DatasetMeta,
                   key: bytes) -> tuple[pd.DataFrame, dict[str, Any]]:
        """De-identify the example files themselves (notes, transcripts) in ``dataset_dir``
        during the deid stage, after the manifest rules; returns the manifest (e.g. with
        new content hashes) and a report section without original values (``{}``: nothing
        to do). Replace a file by writing a new one and ``os.replace``-ing it, never in
        place: example files may be hard links to the previous stage's. Default: none."""
        return manifest, {}

    @abstractmethod
    def expectations(self, meta: DatasetMeta, manifest: pd.DataFrame) -> list[Any]:
        """Great Expectations expectations for this task's manifest (besides the shared ones)."""

    @abstractmethod
    def datasets(self, dataset_dir: Path, meta: DatasetMeta, manifest: pd.DataFrame,
                 params: TaskParams) -> dict[str, Dataset]:
        """torch datasets per split (train with augmentation; val/test without)."""

    # ---- model ----
    @abstractmethod
    def build_model(self, params: TaskParams, meta: DatasetMeta, manifest: pd.DataFrame
                    ) -> tuple[nn.Module, dict]:
        """A fresh model and its ``spec``: constructor arguments, classes and preprocessing,
        saved beside the weights so that the model rebuilds itself."""

    @abstractmethod
    def rebuild_model(self, spec: dict) -> nn.Module:
        """The model from the spec saved beside its weights."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        """Training loss on one batch."""

    @abstractmethod
    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, device: torch.device,
               num_workers: int, generator: torch.Generator | None = None) -> DataLoader:
        """A DataLoader with the task's collation."""

    def model_input(self, batch: Any, device: torch.device) -> Any:
        """What ``model(...)`` takes from a batch (used to refresh BatchNorm statistics of
        averaged weights). Default: the first element of an (inputs, targets) batch."""
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return x.to(device)

    def params_for(self, params: TaskParams, spec: dict) -> TaskParams:
        """The settings to prepare data for a saved model: its own preprocessing (from its
        ``spec``) over the current settings, so that an older model is fed as it was
        trained. Default: unchanged."""
        return params

    @abstractmethod
    def predict_split(self, model: nn.Module, dataset: Dataset, spec: dict,
                      device: torch.device) -> pd.DataFrame:
        """Per-example predictions on one split (column ``id`` first), in its order."""

    @abstractmethod
    def score(self, predictions: pd.DataFrame, spec: dict) -> dict[str, float]:
        """Scalar metrics from predictions (used on val each epoch and on test)."""

    @abstractmethod
    def evaluate(self, predictions: pd.DataFrame, manifest: pd.DataFrame, spec: dict,
                 params: TaskParams) -> EvalResult:
        """Full test evaluation: metrics, figures, subgroup tables."""

    # ---- serving ----
    @abstractmethod
    def pyfunc(self) -> Any:
        """What ``mlflow.pyfunc.log_model(python_model=...)`` takes: the path of a
        models-from-code file that calls ``mlflow.models.set_model``."""

    @abstractmethod
    def signature_and_example(self, spec: dict, dataset_dir: Path,
                              manifest: pd.DataFrame) -> tuple[Any, Any]:
        """MLflow model signature and input example."""
