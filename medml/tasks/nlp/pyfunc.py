"""The NER model as an MLflow pyfunc: raw texts in (a DataFrame column ``text``, a list or
a string), entity spans out, one row per entity: ``row`` (which input), ``start``/``end``
(character offsets into that input, end exclusive), ``label``, ``text`` (exactly
``input[start:end]``) and ``score`` (mean per-word confidence). Tokenization happens
inside the model, with the tokenizer the model was trained with."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from medml.errors import BadInputError
from medml.tasks.pyfunc import BundleModel

COLUMNS = ["row", "start", "end", "label", "text", "score"]
MAX_CHARS = 1_000_000  # per text: bounds memory; split longer documents


def texts_from_input(model_input: Any) -> list[str]:
    """Texts from a DataFrame with a ``text`` column, a dict, a list or one string."""
    if isinstance(model_input, pd.DataFrame):
        if "text" not in model_input.columns:
            raise BadInputError("input has no 'text' column")
        cells = model_input["text"].tolist()
    elif isinstance(model_input, dict) and "text" in model_input:
        cells = model_input["text"]
        cells = [cells] if isinstance(cells, str) else list(cells)
    elif isinstance(model_input, str):
        cells = [model_input]
    else:
        cells = list(model_input)
    for i, c in enumerate(cells):
        if not isinstance(c, str):
            raise BadInputError(f"text {i}: expected a string, got {type(c).__name__}")
        if len(c) > MAX_CHARS:
            raise BadInputError(f"text {i}: {len(c)} characters, more than {MAX_CHARS}; "
                                "split the document")
    return cells


class NerModel(BundleModel):
    """Texts in, entity spans out; the bundle carries vocabularies or tokenizer and tags."""

    task_name = "nlp"

    def model_spec(self, spec: dict) -> dict:
        """The spec without the training checkpoint path: a loaded model takes everything
        from its bundle, never from where it was fine-tuned from."""
        args = {k: v for k, v in spec["args"].items() if k != "checkpoint"}
        return {**spec, "args": args}

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints
        from medml.tasks.nlp.data import predict_texts

        texts = texts_from_input(model_input)
        rows = [{"row": i, **span}
                for i, spans in enumerate(predict_texts(self.net, texts, torch.device("cpu")))
                for span in spans]
        return pd.DataFrame(rows, columns=COLUMNS)
