"""Imaging: classify a medical image (normal/abnormal, benign/malignant, grades)."""

from medml.tasks.imaging.task import ImagingTask

__all__ = ["ImagingTask"]
