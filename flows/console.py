"""The console side of Prefect's logs when a flow runs from the command line.

A MedMLError (bad input, a failed check, diverged training) is a one-line error: the CLI
prints it as such. Prefect logs a failed task or flow with its traceback; on the console
that traceback is dropped for these errors (the line itself stays), while the Prefect
API's copy of the log, shown in the UI, keeps it. Any other exception keeps its traceback
everywhere.
"""

from __future__ import annotations

import logging

from medml.errors import MedMLError


class OneLineUserErrors(logging.Filter):
    """Drops the traceback of records whose exception is a MedMLError."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, MedMLError):
            # The console handler is the last to see the record (the run loggers' API
            # handler formats it first), so this changes nothing for the UI.
            record.exc_info, record.exc_text = None, None
        return True


def install() -> None:
    """Add the filter to the root logger's handlers (the console: medml's rich handler
    under the CLI, Prefect's console handler otherwise), once each. Prefect's API handlers
    hang on the run loggers, not on the root."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OneLineUserErrors) for f in handler.filters):
            handler.addFilter(OneLineUserErrors())
