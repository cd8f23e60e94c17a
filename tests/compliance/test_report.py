"""tests/compliance/report.py, which writes docs/report.md."""

from __future__ import annotations

import re

import pytest
import report


def test_the_published_page_has_every_section_filled() -> None:
    page = report.PAGE.read_text("utf-8")
    assert report.check_page(page) == []
    assert re.search(r"\*\*(\d+) of \1 cells passed\*\*", page)  # the published matrix passes
    assert page.count("| 7.13.2 |") == 1  # every case has its row


def test_a_section_is_replaced_and_the_text_around_it_kept() -> None:
    page = "intro\n<!-- report:interop:start -->\nold\n<!-- report:interop:end -->\nafter\n"
    new = report.replace_section(page, "interop", "new table")
    assert new == (
        "intro\n<!-- report:interop:start -->\nnew table\n<!-- report:interop:end -->\nafter\n"
    )
    with pytest.raises(ValueError, match="report:autobahn-cases:start"):
        report.replace_section(page, "autobahn-cases", "x")


def test_kosoku_descriptions_become_one_safe_line() -> None:
    text = "Send <b>big</b> message.<br><br>Payload: 0xb'ff' [(True, 0)] a|b *x*"
    assert report._clean(text) == (
        "Send big message. Payload: 0xb'ff' \\[(True, 0)\\] a\\|b \\*x\\*"
    )
