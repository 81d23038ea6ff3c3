"""The console side of Prefect's logs when a flow runs from the command line.

A MedMLError (bad input, a failed check, diverged training) is a one-line error: the CLI
prints it as such. Prefect logs a failed task or flow with its traceback; on the console
that traceback is left out for these errors (the line itself stays), while the Prefect
API's copy of the log, shown in the UI, keeps it. Any other exception keeps its traceback
everywhere.
"""

from __future__ import annotations

import logging

from medml.errors import MedMLError


class OneLineUserErrors(logging.Formatter):
    """Formats as ``inner`` does, leaving out the traceback of a MedMLError. The record
    itself is left as it was, for any handler after this one."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, MedMLError):
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def install() -> None:
    """Wrap the formatters of the root logger's handlers (the console: medml's rich handler
    under the CLI, Prefect's console handler otherwise), once each. Prefect's API handlers
    hang on the run loggers, not on the root. Handlers added later are not wrapped."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler.formatter, OneLineUserErrors):
            handler.setFormatter(OneLineUserErrors(handler.formatter))
