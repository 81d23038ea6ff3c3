"""MLflow "model from code" entry for imaging models: MLflow copies this file into each
logged model and runs it on load (no pickled Python objects in the registry)."""

import mlflow

from medml.tasks.imaging.pyfunc import ImagingModel

mlflow.models.set_model(ImagingModel())
