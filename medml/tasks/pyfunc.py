"""The base of every task's MLflow pyfunc model: load the self-describing bundle.

Each task subclasses ``BundleModel`` (naming its task) and writes ``predict``; its
``model_code.py`` (models-from-code: MLflow copies it into the logged model and runs it
on load) imports the subclass and calls ``mlflow.models.set_model``.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import torch


class BundleModel(mlflow.pyfunc.PythonModel):
    """Loads the bundle logged as artifact ``bundle`` (weights, ``spec`` with constructor
    arguments and preprocessing) and rebuilds the network through the task plug-in."""

    #: the task whose ``rebuild_model`` builds the network (a name in ``medml.tasks.TASKS``)
    task_name: str

    def load_context(self, context: Any) -> None:
        from medml.tasks import get_task

        bundle = torch.load(context.artifacts["bundle"], map_location="cpu", weights_only=True)
        self.spec = bundle["spec"]
        self.net = get_task(self.task_name).rebuild_model(self.model_spec(self.spec))
        self.net.load_state_dict(bundle["state_dict"])
        self.net.eval()

    def model_spec(self, spec: dict) -> dict:
        """The spec the network is rebuilt from. Default: the saved one, unchanged."""
        return spec
