"""Great Expectations checks of an NLP manifest's measured columns.

Each document is a UTF-8 JSON file (``docs/<id>.json``); the importers and the generator
measure it into ``n_chars``, ``n_tokens``, ``n_entities``, ``encoding`` and
``tags_valid`` (its entity spans lie on token boundaries, in order and without overlap,
so that its tags are valid IOB2), which these expectations bound.
"""

from __future__ import annotations

import pandas as pd

from medml.data.dataset import DatasetMeta

MEASURED = ["text", "n_chars", "n_tokens", "n_entities", "encoding", "tags_valid"]
MAX_TOKENS = 20_000  # a "document" longer than this is most likely a whole file glued


def nlp_expectations(meta: DatasetMeta, manifest: pd.DataFrame) -> list:
    """GX expectations for the NLP manifest (besides the shared ones)."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    exps: list = [
        gxe.ExpectColumnToExist(column=c, description=f"the manifest has a column '{c}'")
        for c in MEASURED
    ]
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(column="text", description="every document has text"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=1, description="no document text is empty"),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_chars", min_value=1, description="every document has characters"),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_tokens", min_value=1, max_value=MAX_TOKENS,
            description=f"every document has between 1 and {MAX_TOKENS} tokens"),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_entities", min_value=0, description="entity counts are not negative"),
        gxe.ExpectColumnValuesToBeInSet(
            column="encoding", value_set=["utf-8"], description="document files are UTF-8"),
        gxe.ExpectColumnValuesToBeInSet(
            column="tags_valid", value_set=[True],
            description="entity spans lie on token boundaries without overlap (valid IOB2)"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="path", regex=r"\.json$", description="documents are .json files"),
        gxe.ExpectColumnSumToBeBetween(
            column="n_entities", min_value=1, row_condition=Column("split") == "train",
            description="the train split has at least one entity"),
    ]
    return exps
