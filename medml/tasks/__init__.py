"""Registry of task plug-ins, by name. Tasks are imported when first asked for."""

from __future__ import annotations

import importlib

from medml.errors import BadInputError
from medml.tasks.base import Task

# name -> "module:Class"; a fixed registry of known names, never read from user config.
TASKS: dict[str, str] = {
    "imaging": "medml.tasks.imaging:ImagingTask",
    "nlp": "medml.tasks.nlp:NlpTask",
    "speech": "medml.tasks.speech:SpeechTask",
}


def get_task(name: str) -> Task:
    """The task plug-in called ``name``."""
    try:
        module, cls = TASKS[name].split(":")
    except KeyError:
        raise BadInputError(
            f"unknown task {name!r}; choose one of: {', '.join(sorted(TASKS))}"
        ) from None
    return getattr(importlib.import_module(module), cls)()
