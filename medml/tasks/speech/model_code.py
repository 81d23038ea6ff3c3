"""MLflow "model from code" entry for speech models: MLflow copies this file into each
logged model and runs it on load (no pickled Python objects in the registry)."""

import mlflow

from medml.tasks.speech.pyfunc import SpeechModel

mlflow.models.set_model(SpeechModel())
