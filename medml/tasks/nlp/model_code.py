"""MLflow "model from code" entry for NER models: MLflow copies this file into each
logged model and runs it on load (no pickled Python objects in the registry)."""

import mlflow

from medml.tasks.nlp.pyfunc import NerModel

mlflow.models.set_model(NerModel())
