"""NER documents as a torch dataset: words and IOB2 tags per document (the models encode
words themselves, so one dataset serves every model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from medml.tasks.nlp.documents import Doc, read_doc, repair_iob2, spans_from_tags, tokenize


class NerDataset(Dataset):
    """One split, held in memory: ids, documents, words and tags."""

    def __init__(self, dataset_dir: Path, rows: pd.DataFrame) -> None:
        self.ids = rows["id"].astype(str).tolist()
        self.docs: list[Doc] = [read_doc(Path(dataset_dir) / p) for p in rows["path"]]
        self.words = [d.words for d in self.docs]
        self.tags = [d.tags() for d in self.docs]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[str], list[str], int]:
        return self.words[i], self.tags[i], i


def collate(items: list[tuple[list[str], list[str], int]]
            ) -> tuple[list[list[str]], list[list[str]], torch.Tensor]:
    """(words, tags, indices): the last element has one entry per document."""
    return ([w for w, _, _ in items], [t for _, t, _ in items],
            torch.tensor([i for _, _, i in items]))


def loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0,
           generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      num_workers=num_workers, generator=generator,
                      persistent_workers=num_workers > 0)


@torch.no_grad()
def tag_words(model: Any, words: list[list[str]], device: torch.device,
              batch_size: int = 32) -> tuple[list[list[str]], list[list[float]]]:
    """IOB2 tags (repaired to be valid) and per-word confidences, batched by length."""
    model.eval()
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    tags: list[list[str]] = [[] for _ in words]
    conf: list[list[float]] = [[] for _ in words]
    for k in range(0, len(order), batch_size):
        idx = [i for i in order[k:k + batch_size] if words[i]]
        if not idx:
            continue
        paths, probs = model.decode([words[i] for i in idx], device)
        for i, p, c in zip(idx, paths, probs, strict=True):
            tags[i] = repair_iob2([model.tags[j] for j in p])
            conf[i] = c
    return tags, conf


def predict_texts(model: Any, texts: list[str], device: torch.device
                  ) -> list[list[dict[str, Any]]]:
    """Entity spans ``{start, end, label, text, score}`` per raw text (offsets into it)."""
    toks = [tokenize(t) for t in texts]
    words = [[t[s:e] for s, e in tk] for t, tk in zip(texts, toks, strict=True)]
    tags, conf = tag_words(model, words, device)
    out = []
    for text, tk, tg, cf in zip(texts, toks, tags, conf, strict=True):
        spans = []
        for s, e, label, idx in spans_from_tags(tk, tg):
            spans.append({"start": s, "end": e, "label": label, "text": text[s:e],
                          "score": float(sum(cf[i] for i in idx) / len(idx))})
        out.append(spans)
    return out
