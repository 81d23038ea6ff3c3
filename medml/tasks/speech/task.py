"""The speech task plug-in: transcribe medical dictation (CTC speech recognition)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from medml import evaluation
from medml.data.dataset import DatasetMeta
from medml.settings import TaskParams
from medml.tasks.base import EvalResult, Task
from medml.tasks.speech import metrics
from medml.tasks.speech.audio import MAX_SECONDS, SAMPLE_RATE
from medml.tasks.speech.data import BucketBatchSampler, SpeechDataset, collate
from medml.tasks.speech.models import build
from medml.tasks.speech.text import VOCAB

DEFAULT_MODEL = "ctc_bigru"
DEFAULT_SPEC_AUGMENT = {"freq_masks": 2, "freq_width": 10, "time_masks": 2, "time_width": 20,
                        "time_ratio": 0.1}


class SpeechTask(Task):
    name = "speech"
    monitor = "wer"
    monitor_mode = "min"
    group_column = "patient_id"  # the speaker (pseudonymised)
    subgroup_columns = ("sex", "site", "age_band", "noise")
    text_columns = ("text",)  # transcripts: de-identified and checked for PHI like notes
    requirements = ("soundfile", "scipy", "jiwer")
    intended_use = "transcribes medical dictation (WAV audio) into text"

    def deid_rules(self, meta: DatasetMeta) -> dict[str, str]:
        """Besides speaker ids and transcripts: the source paths of a WAV/JSONL import
        (folder and file names may carry names) become pseudonyms."""
        rules = super().deid_rules(meta)
        if meta.format == "wav-jsonl":
            rules["source_file"] = "pseudonym"
        return rules

    def expectations(self, meta: DatasetMeta, manifest: pd.DataFrame) -> list[Any]:
        from medml.tasks.speech.checks import speech_expectations

        return speech_expectations(meta, manifest)

    # ---- data and model ----
    def datasets(self, dataset_dir: Path, meta: DatasetMeta, manifest: pd.DataFrame,
                 params: TaskParams) -> dict[str, Dataset]:
        return {split: SpeechDataset(dataset_dir, manifest[manifest["split"] == split], VOCAB,
                                     augment=params.train.augment and split == "train",
                                     seed=params.train.seed)
                for split in ("train", "val", "test")}

    def build_model(self, params: TaskParams, meta: DatasetMeta, manifest: pd.DataFrame
                    ) -> tuple[nn.Module, dict]:
        # TrainParams' default model name is the imaging one: no speech settings given
        name = params.train.model if params.train.model != "small_cnn" else DEFAULT_MODEL
        augment = ({**DEFAULT_SPEC_AUGMENT, **params.data.get("spec_augment", {})}
                   if params.train.augment else None)
        spec = {
            "name": name,
            "args": {"vocab": VOCAB, "sample_rate": SAMPLE_RATE,
                     "n_mels": int(params.data.get("n_mels", 64)), "spec_augment": augment,
                     **params.train.model_args},
            "vocab": VOCAB,
            "sample_rate": SAMPLE_RATE,
            "max_seconds": float(params.data.get("max_seconds", MAX_SECONDS)),
        }
        return self.rebuild_model(spec), spec

    def rebuild_model(self, spec: dict) -> nn.Module:
        return build(spec["name"], **spec["args"])

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        waves, lengths, targets, target_lengths = batch
        log_probs, frames = model(waves.to(device, non_blocking=True), lengths.to(device))
        return nn.functional.ctc_loss(log_probs.transpose(0, 1), targets.to(device), frames,
                                      target_lengths.to(device), blank=0, zero_infinity=True)

    def model_input(self, batch: Any, device: torch.device) -> Any:
        return batch[0].to(device)

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, device: torch.device,
               num_workers: int, generator: torch.Generator | None = None) -> DataLoader:
        # the trainer hands its epoch order as a Subset of the train split: bucket by
        # length within that order (``BucketBatchSampler``)
        order = list(dataset.indices) if isinstance(dataset, Subset) else None
        base = dataset.dataset if isinstance(dataset, Subset) else dataset
        assert isinstance(base, SpeechDataset)
        sampler = BucketBatchSampler(base.lengths, batch_size, shuffle, generator, order)
        return DataLoader(base, batch_sampler=sampler, collate_fn=collate,
                          num_workers=num_workers, pin_memory=device.type == "cuda",
                          persistent_workers=num_workers > 0)

    def predict_split(self, model: nn.Module, dataset: Dataset, spec: dict,
                      device: torch.device) -> pd.DataFrame:
        from medml.tasks.speech.pyfunc import transcribe

        assert isinstance(dataset, SpeechDataset)
        waves = [w.float().numpy() / 32768.0 for w in dataset.waves]
        hyps = transcribe(model, waves, spec["vocab"], device, batch_size=32)
        return pd.DataFrame({"id": dataset.ids, "reference": dataset.texts,
                             "hypothesis": hyps})

    def score(self, predictions: pd.DataFrame, spec: dict) -> dict[str, float]:
        return metrics.score(predictions)

    def evaluate(self, predictions: pd.DataFrame, manifest: pd.DataFrame, spec: dict,
                 params: TaskParams) -> EvalResult:
        counted = metrics.with_counts(predictions)  # each resample and subgroup: a sum
        result = metrics.score(counted)
        groups = predictions[["id"]].merge(manifest[["id", self.group_column]], on="id",
                                           how="left")[self.group_column]
        cis = evaluation.bootstrap_ci(counted, groups, metrics.score, ("wer", "cer"),
                                      seed=params.train.seed)
        for m, (lo, hi) in cis.items():
            result.update({f"{m}_ci_low": lo, f"{m}_ci_high": hi})
        # per speaker (attribute "speaker") and per filled-in value of each subgroup column
        table = evaluation.subgroup_table(counted, manifest,
                                          (self.group_column, *metrics.SUBGROUPS), metrics.score)
        table = table.reindex(columns=["attribute", "value", "n", "wer", "cer", "exact_match"])
        table = table.assign(attribute=table["attribute"].replace(self.group_column, "speaker"),
                             value=table["value"].astype(str))
        return EvalResult(metrics=result, figures=metrics.figures(predictions, table),
                          predictions=predictions, tables={"subgroups.json": table})

    # ---- serving ----
    def pyfunc(self) -> Any:
        return str(Path(__file__).with_name("model_code.py"))

    def signature_and_example(self, spec: dict, dataset_dir: Path, manifest: pd.DataFrame
                              ) -> tuple[Any, Any]:
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, ColSpec, Schema

        inputs = Schema([ColSpec(AnyType(), "audio")])
        outputs = Schema([ColSpec("string", "text"), ColSpec("double", "duration_s")])
        test = manifest[manifest["split"] == "test"]
        row = test.loc[test["num_samples"].idxmin()] if "num_samples" in test else test.iloc[0]
        data = (Path(dataset_dir) / row["path"]).read_bytes()
        example = pd.DataFrame({"audio": [base64.b64encode(data).decode()]})
        return ModelSignature(inputs=inputs, outputs=outputs), example
