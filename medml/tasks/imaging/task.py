"""The imaging task plug-in: classify a medical image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medml import evaluation
from medml.data.dataset import DatasetMeta
from medml.settings import TaskParams
from medml.tasks.base import EvalResult, Task
from medml.tasks.imaging import metrics
from medml.tasks.imaging.data import ImageDataset, train_augmentation
from medml.tasks.imaging.models import build

DEFAULT_IMAGE_SIZE = 28


@torch.no_grad()
def predict_proba(net: nn.Module, x: torch.Tensor, tta: bool, device: torch.device,
                  batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities, averaged with the horizontally flipped image when ``tta``."""
    net.eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        p = torch.softmax(net(xb).float(), 1)
        if tta:
            p = (p + torch.softmax(net(torch.flip(xb, dims=[-1])).float(), 1)) / 2
        out.append(p.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


class ImagingTask(Task):
    name = "imaging"
    monitor = "auroc"
    group_column = "patient_id"
    subgroup_columns = metrics.SUBGROUPS
    requirements = ("monai", "pydicom", "pillow", "scikit-learn")
    intended_use = "classifies one medical image into {classes}"

    def deid_rules(self, meta: DatasetMeta) -> dict[str, str]:
        """Besides patient ids: for DICOM imports the header fields kept in the manifest
        follow the PS3.15 basic profile (UIDs remapped consistently, institution
        pseudonymised, exact age removed: the age band stays), and file paths of real
        imports (folder names may carry names) become pseudonyms."""
        rules = super().deid_rules(meta)
        if meta.format == "dicom":
            rules |= {"site": "pseudonym", "study_uid": "uid", "series_uid": "uid",
                      "sop_uid": "uid", "patient_age": "remove"}
        if meta.format in ("dicom", "folder"):
            rules["source_file"] = "pseudonym"
        return rules

    def expectations(self, meta: DatasetMeta, manifest: pd.DataFrame) -> list[Any]:
        from medml.tasks.imaging.checks import imaging_expectations

        return imaging_expectations(meta, manifest)

    # ---- data and model ----
    def _shape(self, params: TaskParams, manifest: pd.DataFrame) -> tuple[int, int]:
        size = int(params.data.get("image_size", DEFAULT_IMAGE_SIZE))
        channels = 3 if (manifest["channels"] == 3).any() else 1
        return size, channels

    def datasets(self, dataset_dir: Path, meta: DatasetMeta, manifest: pd.DataFrame,
                 params: TaskParams) -> dict[str, Dataset]:
        size, channels = self._shape(params, manifest)
        aug = train_augmentation(params.train.seed) if params.train.augment else None
        return {
            split: ImageDataset(dataset_dir, manifest[manifest["split"] == split], meta.classes,
                                size, channels, aug if split == "train" else None,
                                params.train.seed)
            for split in ("train", "val", "test")
        }

    def build_model(self, params: TaskParams, meta: DatasetMeta, manifest: pd.DataFrame
                    ) -> tuple[nn.Module, dict]:
        size, channels = self._shape(params, manifest)
        spec = {
            "name": params.train.model,
            "args": {"in_channels": channels, "num_classes": len(meta.classes),
                     **params.train.model_args},
            "classes": list(meta.classes),
            "image_size": size,
            "in_channels": channels,
            "tta": params.train.tta,
            "positive_class": metrics.positive_class(meta.classes,
                                                     meta.extra.get("positive_class")),
        }
        return self.rebuild_model(spec), spec

    def params_for(self, params: TaskParams, spec: dict) -> TaskParams:
        return params.model_copy(update={"data": {**params.data,
                                                  "image_size": spec["image_size"]}})

    def rebuild_model(self, spec: dict) -> nn.Module:
        return build(spec["name"], **spec["args"])

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        x, y = batch
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return nn.functional.cross_entropy(model(x), y)

    def predict_split(self, model: nn.Module, dataset: Dataset, spec: dict,
                      device: torch.device) -> pd.DataFrame:
        assert isinstance(dataset, ImageDataset)
        probs = predict_proba(model, dataset.images, spec.get("tta", True), device)
        pred = pd.DataFrame({"id": dataset.ids, "y": dataset.labels.numpy()})
        for k, c in enumerate(spec["classes"]):
            pred[f"p_{c}"] = probs[:, k] if len(probs) else []
        return pred

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, device: torch.device,
               num_workers: int, generator: torch.Generator | None = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          num_workers=num_workers, pin_memory=device.type == "cuda",
                          generator=generator, persistent_workers=num_workers > 0)

    def score(self, predictions: pd.DataFrame, spec: dict) -> dict[str, float]:
        return metrics.score(predictions, spec["classes"], spec["positive_class"])

    def evaluate(self, predictions: pd.DataFrame, manifest: pd.DataFrame, spec: dict,
                 params: TaskParams) -> EvalResult:
        classes, pos = spec["classes"], spec["positive_class"]

        def score(pred: pd.DataFrame) -> dict[str, float]:
            return metrics.score(pred, classes, pos)

        result = score(predictions)
        groups = predictions[["id"]].merge(manifest[["id", self.group_column]], on="id",
                                           how="left")[self.group_column]
        lo, hi = evaluation.bootstrap_ci(predictions, groups, score, ("auroc",),
                                         seed=params.train.seed)["auroc"]
        result.update({"auroc_ci_low": lo, "auroc_ci_high": hi})
        return EvalResult(
            metrics=result,
            figures=metrics.figures(predictions, classes, pos),
            predictions=predictions,
            tables={"subgroups.json": evaluation.subgroup_table(
                predictions, manifest, self.subgroup_columns, score)},
        )

    # ---- serving ----
    def pyfunc(self) -> Any:
        return str(Path(__file__).with_name("model_code.py"))

    def signature_and_example(self, spec: dict, dataset_dir: Path, manifest: pd.DataFrame
                              ) -> tuple[Any, Any]:
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, ColSpec, Schema

        inputs = Schema([ColSpec(AnyType(), "image")])
        outputs = Schema([ColSpec("double", f"p_{c}") for c in spec["classes"]]
                         + [ColSpec("string", "label")])
        row = manifest[manifest["split"] == "test"].iloc[0]
        example = pd.DataFrame({"image": [np.load(Path(dataset_dir) / row["path"]).tolist()]})
        return ModelSignature(inputs=inputs, outputs=outputs), example
