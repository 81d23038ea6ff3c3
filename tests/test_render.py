"""Rendering: numbers, Markdown and HTML blocks, gate checks as lines."""

from __future__ import annotations

import numpy as np

from medml import render

FLOOR = {"check": "floor:auroc", "value": 0.91234, "op": ">=", "bound": 0.85, "passed": True,
         "detail": {}}
NONINF = {"check": "non_inferiority:auroc", "value": -0.031, "op": ">=", "bound": -0.02,
          "passed": False, "detail": {"difference": 0.01, "ci_low": -0.031, "ci_high": 0.05,
                                      "level": 0.95}}


def test_numbers_none_nan_digits_and_types() -> None:
    assert render.num(None) == "" and render.fmt(None) == ""
    assert render.num(float("nan")) == "nan" and render.num(np.float32("nan")) == "nan"
    assert render.num(0.123456) == "0.1235" and render.num(0.123456, 2) == "0.12"
    assert render.num(np.float64(1.5), 3) == "1.500"
    assert render.num(7) == "7" and render.num(np.int64(7)) == "7"
    assert render.num(float("inf")) == "inf"
    assert render.fmt(True) == "yes" and render.fmt(False) == "no"
    assert render.fmt({"by": "a", "n": 1}) == '{"by": "a", "n": 1}'
    assert render.fmt([1, "x"]) == '[1, "x"]'
    assert render.fmt("text") == "text"


def test_markdown_cell_escapes_pipes_and_line_breaks() -> None:
    assert render.md_cell("a|b\nc\r\nd") == "a\\|b c d"
    assert render.md_cell(float("nan")) == "nan"


def test_markdown_table_and_its_empty_text() -> None:
    assert render.md_table(["a", "b"], []) == ["_none_"]
    assert render.md_table(["a"], [], empty="_none recorded_") == ["_none recorded_"]
    lines = render.md_table(["metric", "value"], [["auroc|x", 0.5], ["ece", None]], digits=3)
    assert lines == ["| metric | value |", "|---|---|", "| auroc\\|x | 0.500 |", "| ece |  |"]
    assert render.md_kv([("a", 1), ("b", None), ("c", ""), ("d", False)]) == [
        "- **a**: 1", "- **d**: no"]
    assert render.md_list(["x|y"]) == ["- x\\|y"]


def test_html_blocks_are_escaped() -> None:
    evil = "<script>alert(1)</script>"
    page = render.html_table(["h<1>"], [[evil, 0.5]])
    assert "<script>" not in page and "&lt;script&gt;" in page and "h&lt;1&gt;" in page
    assert "<td>0.5000</td>" in page
    assert render.html_table(["a"], []) == '<p class="none">none</p>'
    assert render.html_kv([("who", evil), ("skipped", None)]) == (
        "<dl><dt>who</dt><dd>&lt;script&gt;alert(1)&lt;/script&gt;</dd></dl>")
    assert render.html_list(['"q"']) == "<ul><li>&quot;q&quot;</li></ul>"


def test_check_line_and_check_lines() -> None:
    assert render.check_line(FLOOR) == "floor:auroc: 0.9123 >= 0.8500"
    assert render.check_line(FLOOR, mark=True) == "pass floor:auroc: 0.9123 >= 0.8500"
    missing = {**FLOOR, "value": None, "passed": False}  # NaN stored as JSON comes back None
    assert render.check_line(missing) == "floor:auroc: nan >= 0.8500"
    assert render.check_line({**FLOOR, "value": float("nan")}) == "floor:auroc: nan >= 0.8500"
    assert render.check_line(NONINF, ci=True) == (
        "non_inferiority:auroc: -0.0310 >= -0.0200 (difference +0.0100, 95% CI "
        "[-0.0310, +0.0500] vs champion)")
    assert render.check_line(FLOOR, ci=True) == "floor:auroc: 0.9123 >= 0.8500"

    both = [FLOOR, NONINF]
    assert render.check_lines(both) == ("pass floor:auroc: 0.9123 >= 0.8500; "
                                        "FAIL non_inferiority:auroc: -0.0310 >= -0.0200")
    assert render.check_lines(both, marks=False, only_failed=True) == (
        "non_inferiority:auroc: -0.0310 >= -0.0200")
    assert render.check_lines([FLOOR], marks=False, only_failed=True) == (
        "floor:auroc: 0.9123 >= 0.8500")  # none failed: all of them
    assert render.check_lines([]) == "no check configured"


def test_decision_checks_falls_back_to_tags() -> None:
    assert render.decision_checks({"checks": [NONINF]}).startswith("FAIL non_inferiority")
    assert render.decision_checks({"checks": [], "failed_checks": "floor:auroc"}) == (
        "floor:auroc")
    assert render.decision_checks({"raw": "not json"}) == "not json"
    assert render.decision_checks({}) == "no check"
