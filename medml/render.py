"""Rendering shared by the lineage, the model card, the gate and the CLI: numbers and
values as text, Markdown and HTML blocks, gate checks as lines.

One convention everywhere: ``None`` is an empty cell, a NaN number is ``nan``, floats get
``digits`` decimals (4 unless a caller asks otherwise), booleans are ``yes``/``no``, dicts
and lists are compact JSON. Pure functions: strings in, strings out.
"""

from __future__ import annotations

import html
import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DIGITS = 4
NAN = "nan"
NONE_MD = "_none_"  # an empty Markdown table
NONE_HTML = '<p class="none">none</p>'  # an empty HTML table
PASS, FAIL = "pass", "FAIL"  # marks of a gate check


# ------------------------------------------------------------------ values
def num(v: Any, digits: int = DIGITS) -> str:
    """A number as text: ``None`` -> ``""``, NaN -> ``"nan"``, a float with ``digits``
    decimals (``inf`` stays ``inf``), an integer as is; anything else ``str(v)``."""
    if v is None:
        return ""
    if isinstance(v, numbers.Integral):
        return str(v)
    if isinstance(v, numbers.Real):
        v = float(v)
        return NAN if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def fmt(v: Any, digits: int = DIGITS) -> str:
    """Any value as cell text: :func:`num` for numbers, ``yes``/``no`` for booleans, compact
    JSON for dicts and lists, ``str`` otherwise (``None`` -> ``""``)."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=str)
    return num(v, digits)


# ------------------------------------------------------------------ Markdown
def md_cell(v: Any, digits: int = DIGITS) -> str:
    """:func:`fmt` made safe for one Markdown table cell or list item: ``|`` escaped,
    line breaks turned into spaces."""
    text = fmt(v, digits)
    return text.replace("|", "\\|").replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def md_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, empty: str = NONE_MD,
             digits: int = DIGITS) -> list[str]:
    """A Markdown table as lines (header, separator, one line per row; cells through
    :func:`md_cell`), or the single line ``empty`` when there is no row."""
    rows = list(rows)
    if not rows:
        return [empty]
    return (["| " + " | ".join(md_cell(h, digits) for h in header) + " |",
             "|" + "---|" * len(header)]
            + ["| " + " | ".join(md_cell(x, digits) for x in row) + " |" for row in rows])


def md_kv(pairs: Iterable[tuple[str, Any]], digits: int = DIGITS) -> list[str]:
    """``- **key**: value`` lines, leaving out pairs whose value is ``None`` or ``""``."""
    return [f"- **{k}**: {md_cell(v, digits)}" for k, v in pairs if v not in (None, "")]


def md_list(items: Iterable[Any], digits: int = DIGITS) -> list[str]:
    """``- item`` lines."""
    return [f"- {md_cell(x, digits)}" for x in items]


# ------------------------------------------------------------------ HTML
def html_text(v: Any, digits: int = DIGITS) -> str:
    """:func:`fmt`, HTML-escaped (quotes included)."""
    return html.escape(fmt(v, digits))


def html_kv(pairs: Iterable[tuple[str, Any]], digits: int = DIGITS) -> str:
    """A ``<dl>`` of key/value pairs, escaped, leaving out values ``None`` or ``""``."""
    return "<dl>" + "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html_text(v, digits)}</dd>"
                            for k, v in pairs if v not in (None, "")) + "</dl>"


def html_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *,
               empty: str = NONE_HTML, digits: int = DIGITS) -> str:
    """An escaped ``<table>`` (``<thead>`` and ``<tbody>``), or ``empty`` (raw HTML) when
    there is no row."""
    rows = list(rows)
    if not rows:
        return empty
    head = "".join(f"<th>{html_text(h, digits)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_text(x, digits)}</td>" for x in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_list(items: Iterable[Any], digits: int = DIGITS) -> str:
    """An escaped ``<ul>``."""
    return "<ul>" + "".join(f"<li>{html_text(x, digits)}</li>" for x in items) + "</ul>"


# ------------------------------------------------------------------ gate checks
def _check_num(v: Any, digits: int) -> str:
    # A missing metric is recorded as NaN by the gate and as None once stored as JSON.
    return NAN if v is None else num(v, digits)


def check_line(check: Mapping[str, Any], *, mark: bool = False, ci: bool = False,
               digits: int = DIGITS) -> str:
    """One gate check (``{"check", "value", "op", "bound", "passed", "detail"}``, as
    ``gate.checks_as_dicts`` or a recorded decision holds it) as one line::

        floor:auroc: 0.9123 >= 0.8500

    ``mark``: prefix ``pass``/``FAIL``. ``ci``: when ``detail`` holds a paired bootstrap
    (non-inferiority), append `` (difference +0.0100, 95% CI [-0.0200, +0.0300] vs
    champion)``. A missing value or bound reads ``nan``."""
    line = (f"{check.get('check', '?')}: {_check_num(check.get('value'), digits)} "
            f"{check.get('op', '')} {_check_num(check.get('bound'), digits)}")
    detail = check.get("detail") or {}
    if ci and "ci_low" in detail:
        level = detail.get("level")
        level_text = f"{level:.0%}" if isinstance(level, numbers.Real) else "?"

        def signed(v: Any) -> str:
            return NAN if v is None or v != v else f"{v:+.{digits}f}"

        line += (f" (difference {signed(detail.get('difference'))}, {level_text} CI "
                 f"[{signed(detail.get('ci_low'))}, {signed(detail.get('ci_high'))}] "
                 "vs champion)")
    if mark:
        line = f"{PASS if check.get('passed') else FAIL} {line}"
    return line


def check_lines(checks: Iterable[Mapping[str, Any]], *, marks: bool = True,
                only_failed: bool = False, sep: str = "; ",
                empty: str = "no check configured", ci: bool = False,
                digits: int = DIGITS) -> str:
    """Gate checks as one text: :func:`check_line` of each, joined by ``sep``.

    ``marks``: prefix each with ``pass``/``FAIL``. ``only_failed``: only the failed checks
    when some failed (all of them when none did). ``empty``: the text when there is no
    check."""
    checks = list(checks)
    if not checks:
        return empty
    if only_failed:
        checks = [c for c in checks if not c.get("passed")] or checks
    return sep.join(check_line(c, mark=marks, ci=ci, digits=digits) for c in checks)


def decision_checks(decision: Mapping[str, Any]) -> str:
    """The checks of a recorded gate decision (a ``gate/decision-*.json`` dict) with
    ``pass``/``FAIL`` marks; for a decision known only from version tags, its
    ``failed_checks`` tag (or its unparsed ``raw`` text), else ``no check``."""
    checks = decision.get("checks") or []
    if not checks:
        return str(decision.get("failed_checks") or decision.get("raw") or "no check")
    return check_lines(checks)
