"""Great Expectations checks of a speech manifest's measured columns.

Utterances are stored as 16 kHz mono 16-bit WAV; the importers measure each one into
``sample_rate``, ``channels``, ``duration_s``, ``peak`` and ``silence_ratio``, and the
transcript is in ``text``; these expectations bound them.
"""

from __future__ import annotations

import pandas as pd

from medml.data.dataset import DatasetMeta
from medml.tasks.speech.audio import MAX_SECONDS, SAMPLE_RATE

MEASURED = ["text", "sample_rate", "channels", "duration_s", "peak", "silence_ratio"]
MAX_SILENCE = 0.98  # an utterance that is (almost) all silence holds no speech


def speech_expectations(meta: DatasetMeta, manifest: pd.DataFrame) -> list:
    """GX expectations for the speech manifest (besides the shared ones)."""
    import great_expectations.expectations as gxe

    exps: list = [
        gxe.ExpectColumnToExist(column=c, description=f"the manifest has a column '{c}'")
        for c in MEASURED
    ]
    exps += [
        gxe.ExpectColumnValuesToNotBeNull(
            column="text", description="every utterance has a transcript (text)"),
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="text", min_value=1, meta={"check": "empty_transcript"},
            description="transcripts are not empty"),
        gxe.ExpectColumnValuesToBeInSet(
            column="sample_rate", value_set=[SAMPLE_RATE],
            description=f"audio is stored at {SAMPLE_RATE} Hz"),
        gxe.ExpectColumnValuesToBeInSet(
            column="channels", value_set=[1], description="audio is stored as mono"),
        gxe.ExpectColumnValuesToBeBetween(
            column="duration_s", min_value=0.0, max_value=MAX_SECONDS, strict_min=True,
            description=f"utterances last more than 0 and at most {MAX_SECONDS:g} s"),
        gxe.ExpectColumnValuesToBeBetween(
            column="peak", min_value=0.0, max_value=1.0,
            description="peak levels are within full scale (0-1)"),
        gxe.ExpectColumnValuesToBeBetween(
            column="silence_ratio", min_value=0.0, max_value=MAX_SILENCE,
            meta={"check": "silent_audio"},
            description=f"utterances are not all silence (silence_ratio <= {MAX_SILENCE})"),
        gxe.ExpectColumnValuesToMatchRegex(
            column="path", regex=r"\.wav$", description="audio files are .wav"),
    ]
    return exps
