"""The project's own exception types; the CLI maps them to exit codes."""

from __future__ import annotations


class MedMLError(Exception):
    """An error a user can cause: one clear line, exit code 2."""

    exit_code = 2


class BadInputError(MedMLError):
    """Bad input data or arguments (corrupt file, wrong shape, unknown name)."""


class NotFoundError(MedMLError):
    """A dataset, model or run that does not exist."""


class CheckFailed(MedMLError):
    """A check ran and failed (validation, promotion gate, lineage verify): exit code 1."""

    exit_code = 1


class TrainingDiverged(MedMLError):
    """Training cannot go on: the weights became NaN or infinite, or no batch of an epoch
    had a finite loss (a learning rate too high, bad data). ``run_id``: the MLflow run,
    once the lifecycle knows it."""

    run_id: str | None = None
