"""NLP: named-entity recognition (diseases, drugs, procedures...) in clinical notes."""

from medml.tasks.nlp.task import NlpTask

__all__ = ["NlpTask"]
