"""Reading users' text files (token files, JSONL manifests) with errors that name the file
and line: UTF-8 with the line of the first undecodable byte, and JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medml.errors import BadInputError


def read_utf8(path: Path) -> str:
    """A text file as UTF-8 (BOM dropped), or BadInputError naming the file and the line
    of the first undecodable byte; an empty file is an error too."""
    data = Path(path).read_bytes()
    if not data.strip():
        raise BadInputError(f"{path}:1: file is empty; give a file with at least one "
                            "record (or remove it from the folder)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BadInputError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at "
                            f"offset {exc.start}); re-save the file as UTF-8, e.g. "
                            f"`iconv -f latin1 -t utf-8`") from None
    return text.removeprefix("\ufeff")


def json_lines(path: Path, expected: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(where, line number, object)`` per non-blank line of a JSONL file (``where`` is
    ``path:line`` for messages); a line that is not a JSON object names its line and
    ``expected`` (what the object should hold)."""
    for n, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{where}: not JSON ({exc.msg}); write one JSON object per "
                                "line") from None
        if not isinstance(rec, dict):
            raise BadInputError(f"{where}: expected a JSON object with {expected}")
        yield where, n, rec
