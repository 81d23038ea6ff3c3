"""The NLP task plug-in: named-entity recognition in clinical notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medml import evaluation
from medml.data.dataset import DatasetMeta
from medml.errors import BadInputError
from medml.settings import TaskParams
from medml.tasks.base import EvalResult, Task
from medml.tasks.nlp import metrics
from medml.tasks.nlp.data import NerDataset, loader, tag_words
from medml.tasks.nlp.documents import tokenize
from medml.tasks.nlp.models import (
    bilstm_assets,
    build,
    checkpoint_config,
    register_assets,
    transformer_assets,
)


def tag_set(types: list[str]) -> list[str]:
    """IOB2 tags of the entity types: O, then B-/I- per type."""
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in ("B", "I")]


class NlpTask(Task):
    name = "nlp"
    monitor = "f1"
    #: bootstrap CIs and the gate's paired comparison resample whole documents (a CoNLL
    #: sentence belongs to the document its -DOCSTART- block names, else stands alone)
    group_column = "document_id"
    subgroup_columns = metrics.SUBGROUPS
    requirements = ("pytorch-crf", "seqeval", "transformers", "tokenizers")
    intended_use = ("finds clinical entities (diseases, drugs, procedures...) in free-text "
                    "notes, as labelled character spans (named-entity recognition)")

    def deid_rules(self, meta: DatasetMeta) -> dict[str, str]:
        """Patient ids become pseudonyms; the ``text`` column is rewritten from the
        de-identified files by ``deid_files`` (so that it matches them exactly)."""
        return {"patient_id": "pseudonym"}

    def deid_files(self, dataset_dir: Path, manifest: pd.DataFrame, meta: DatasetMeta,
                   key: bytes) -> tuple[pd.DataFrame, dict[str, Any]]:
        from medml.tasks.nlp.deid import deid_files

        return deid_files(dataset_dir, manifest, key)

    #: the note text is kept in the manifest: validation checks it for PHI left
    text_columns = ("text",)

    def expectations(self, meta: DatasetMeta, manifest: pd.DataFrame) -> list[Any]:
        from medml.tasks.nlp.checks import nlp_expectations

        return nlp_expectations(meta, manifest)

    # ---- data and model ----
    def datasets(self, dataset_dir: Path, meta: DatasetMeta, manifest: pd.DataFrame,
                 params: TaskParams) -> dict[str, Dataset]:
        return {split: NerDataset(dataset_dir, manifest[manifest["split"] == split])
                for split in ("train", "val", "test")}

    def build_model(self, params: TaskParams, meta: DatasetMeta, manifest: pd.DataFrame
                    ) -> tuple[nn.Module, dict]:
        types = sorted({t for v in manifest.get("entity_types", pd.Series(dtype=str)).fillna("")
                        for t in str(v).split()})
        if not types:
            raise BadInputError(f"dataset {meta.name!r} has no entity: nothing to learn")
        tags = tag_set(types)
        name = params.train.model
        args = dict(params.train.model_args)
        if name == "bilstm_crf":
            train_text = manifest.loc[manifest["split"] == "train", "text"].fillna("")
            words = [[t[s:e] for s, e in tokenize(t)] for t in train_text]
            data = bilstm_assets(words, int(args.pop("min_count", 1)))
            import json

            from medml.tasks.nlp.models import unpack

            vocab = json.loads(unpack(data)["vocab.json"])
            args |= {"n_words": len(vocab["words"]), "n_chars": len(vocab["chars"])}
        elif name == "transformer":
            ckpt = args.get("checkpoint")
            if not ckpt or not Path(ckpt).is_dir():
                raise BadInputError(
                    f"nlp model 'transformer' needs model_args.checkpoint: a local Hugging "
                    f"Face checkpoint directory (got {ckpt!r})")
            args["checkpoint"] = str(Path(ckpt).resolve())
            data = transformer_assets(Path(ckpt))
            args["config"] = checkpoint_config(Path(ckpt), len(tags))
        else:
            data = b""
        args |= register_assets(data)
        spec = {"name": name, "args": {"tags": tags, **args}, "entity_types": types,
                "tag_scheme": "IOB2", "tokenizer": "medml.tasks.nlp.documents.TOKEN_RE"}
        return self.rebuild_model(spec), spec

    def rebuild_model(self, spec: dict) -> nn.Module:
        return build(spec["name"], **spec["args"])

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> torch.Tensor:
        words, tags, _ = batch
        index = {t: i for i, t in enumerate(getattr(model, "module", model).tags)}
        return model(words, [[index.get(t, 0) for t in s] for s in tags])  # DDP-safe

    def loader(self, dataset: Dataset, batch_size: int, shuffle: bool, device: torch.device,
               num_workers: int, generator: torch.Generator | None = None) -> DataLoader:
        return loader(dataset, batch_size, shuffle, num_workers, generator)

    def model_input(self, batch: Any, device: torch.device) -> Any:
        return batch[0]

    def predict_split(self, model: nn.Module, dataset: Dataset, spec: dict,
                      device: torch.device) -> pd.DataFrame:
        assert isinstance(dataset, NerDataset)
        pred, _ = tag_words(model, dataset.words, device)
        types = spec["entity_types"]
        rows = []
        for i, (y, p) in enumerate(zip(dataset.tags, pred, strict=True)):
            rows.append({"id": dataset.ids[i], "y_true": " ".join(y), "y_pred": " ".join(p),
                         **metrics.doc_counts(y, p, types)})
        cols = ["id", "y_true", "y_pred"]
        return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)

    def score(self, predictions: pd.DataFrame, spec: dict) -> dict[str, float]:
        return metrics.score(predictions, spec["entity_types"])

    def evaluate(self, predictions: pd.DataFrame, manifest: pd.DataFrame, spec: dict,
                 params: TaskParams) -> EvalResult:
        types = spec["entity_types"]

        def score(pred: pd.DataFrame) -> dict[str, float]:
            return metrics.score(pred, types)

        result = score(predictions)
        groups = predictions[["id"]].merge(manifest[["id", self.group_column]], on="id",
                                           how="left")[self.group_column]
        cis = evaluation.bootstrap_ci(predictions, groups, score, ("f1", "precision", "recall"),
                                      n=1000, seed=params.train.seed)
        for m, (lo, hi) in cis.items():
            result |= {f"{m}_ci_low": lo, f"{m}_ci_high": hi}
        table = metrics.per_type_table(predictions)
        return EvalResult(metrics=result, figures=metrics.figures(table),
                          predictions=predictions,
                          tables={"per_type.json": table,
                                  "subgroups.json": evaluation.subgroup_table(
                                      predictions, manifest, self.subgroup_columns, score)})

    # ---- serving ----
    def pyfunc(self) -> Any:
        return str(Path(__file__).with_name("model_code.py"))

    def signature_and_example(self, spec: dict, dataset_dir: Path, manifest: pd.DataFrame
                              ) -> tuple[Any, Any]:
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        inputs = Schema([ColSpec("string", "text")])
        outputs = Schema([ColSpec("long", "row"), ColSpec("long", "start"),
                          ColSpec("long", "end"), ColSpec("string", "label"),
                          ColSpec("string", "text"), ColSpec("double", "score")])
        test = manifest[manifest["split"] == "test"]
        text = str((test if len(test) else manifest)["text"].iloc[0])[:2000]
        return ModelSignature(inputs=inputs, outputs=outputs), pd.DataFrame({"text": [text]})
