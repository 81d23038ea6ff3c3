"""MedML: versioned data to a gated, served, auditable diagnostic model."""

__version__ = "0.1.0"
