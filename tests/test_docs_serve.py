"""docs/serve.md documents every key of ``edgeclf serve``'s config, and no key the loader does not know.

Each of config.py's key lists has its own section in docs/serve.md (a heading that starts with the
names below), whose table has one row per key: the key in backticks as the first cell, then its
type, its default and what it does. A key added to (or removed from) config.py without the same
change in docs/serve.md fails here, as does a type or a default that no longer matches.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from edgeclf.service.config import MQTT_KEYS, SERVER_KEYS, SOURCE_KEYS, TOP_KEYS, WEBHOOK_KEYS

DOC = Path(__file__).resolve().parents[1] / "docs" / "serve.md"

#: The start of each key table's heading in docs/serve.md, and the key list it documents.
SECTIONS = {
    "Top level": TOP_KEYS,
    "`[[source]]`": SOURCE_KEYS,  # "`[[source]]` and `[defaults]`": [defaults] takes the same keys
    "`[mqtt]`": MQTT_KEYS,
    "`[[webhook]]`": WEBHOOK_KEYS,
    "`[server]`": SERVER_KEYS,
}
#: How the type column names each type config.py checks (a tuple of other types: each one's word).
TYPE_WORDS = {str: "string", int: "integer", bool: "boolean", dict: "table", list: "list", (int, float): "number"}


def _type_words(kind) -> list[str]:  # noqa: ANN001 (a type or a tuple of types, as in config.py)
    if kind in TYPE_WORDS:
        return [TYPE_WORDS[kind]]
    return [TYPE_WORDS[k] for k in kind]

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_KEY_CELL = re.compile(r"^`([^`]+)`$")


def _sections(text: str) -> dict[str, list[str]]:
    """Each heading's text -> the lines under it, up to the next heading of the same or a higher
    level (fenced code blocks are not searched for headings: a ``# comment`` there is not one)."""
    found: dict[str, list[str]] = {}
    open_: list[tuple[int, str]] = []  # the headings whose sections are still open: (level, text)
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            level = len(m.group(1))
            open_ = [(lv, t) for lv, t in open_ if lv < level]
            title = m.group(2)
            if title in found:
                raise AssertionError(f"docs/serve.md: two headings read {title!r}")
            found[title] = []
            open_.append((level, title))
            continue
        for _, title in open_:
            found[title].append(line)
    return found


def _cells(line: str) -> list[str]:
    """A Markdown table row's cells (a ``|`` inside backticks, as in ``auto\\|cpu``, is escaped)."""
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    return [c.strip() for c in re.split(r"(?<!\\)\|", body)]


def _rows(lines: list[str]) -> dict[str, list[str]]:
    """The table rows whose first cell is one backticked name: name -> the row's cells."""
    rows: dict[str, list[str]] = {}
    for line in lines:
        if not line.lstrip().startswith("|"):
            continue
        cells = _cells(line)
        m = _KEY_CELL.match(cells[0])
        if m is None:
            continue  # the header row, the --- row, or prose in a first cell
        key = m.group(1)
        assert key not in rows, f"docs/serve.md: {key!r} has two rows in one section"
        rows[key] = cells
    return rows


@pytest.fixture(scope="module")
def tables() -> dict[str, dict[str, list[str]]]:
    """Each section's start (as in ``SECTIONS``) -> its table's rows."""
    sections = _sections(DOC.read_text(encoding="utf-8"))
    out = {}
    for start, keys in SECTIONS.items():
        matches = [title for title in sections if title.startswith(start)]
        assert len(matches) == 1, f"docs/serve.md: expected one heading starting with {start!r}, found {matches}"
        out[start] = _rows(sections[matches[0]])
    return out


@pytest.mark.parametrize("start", list(SECTIONS))
def test_every_config_key_has_a_row_in_its_section(tables, start):
    missing = [k for k in SECTIONS[start] if k not in tables[start]]
    assert not missing, f"docs/serve.md, section {start}: no table row for {missing} (keys config.py knows)"


@pytest.mark.parametrize("start", list(SECTIONS))
def test_no_row_names_a_key_the_code_does_not_know(tables, start):
    unknown = [k for k in tables[start] if k not in SECTIONS[start]]
    assert not unknown, f"docs/serve.md, section {start}: rows for {unknown}, which config.py does not know"


@pytest.mark.parametrize("start", list(SECTIONS))
def test_each_row_gives_the_type_and_default_the_code_has(tables, start):
    """Columns: key, type, default, meaning. The type column names config.py's type; a default
    other than None is the first backticked value of the default column, as TOML."""
    wrong = []
    for key, (kind, default) in SECTIONS[start].items():
        cells = tables[start].get(key)
        if cells is None:
            continue  # reported by test_every_config_key_has_a_row_in_its_section
        if len(cells) < 4 or not cells[3]:
            wrong.append(f"{key}: expected the columns key, type, default, meaning")
            continue
        words = _type_words(kind)
        if not all(w in cells[1] for w in words):
            wrong.append(f"{key}: type {cells[1]!r} should say {' and '.join(map(repr, words))}")
        if default is None:
            continue
        code = re.search(r"`([^`]+)`", cells[2])
        try:
            documented = tomllib.loads(f"v = {code.group(1)}")["v"] if code else None
        except tomllib.TOMLDecodeError:
            documented = None
        same = documented == default and isinstance(documented, bool) == isinstance(default, bool)  # 1 is not true
        if documented is None or not same:
            wrong.append(f"{key}: default {cells[2]!r}, the code's is {default!r}")
    assert not wrong, f"docs/serve.md, section {start}: " + "; ".join(wrong)
