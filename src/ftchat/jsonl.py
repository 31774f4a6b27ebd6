"""JSON Lines files read a row at a time, so that one bad row costs only itself.

The one reader for questions files, eval sets and the load test's question pool: each
non-blank line comes back as a `Line` holding either its parsed value or what is wrong
with it, and the caller decides whether a bad row stops the run or only fails that row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, counting blank lines, as an editor shows it
    value: object = None  # the parsed JSON value (or the plain text, see read_lines)
    error: str | None = None  # why the line could not be read


def read_lines(path: Path, plain_text: bool = False) -> Iterator[Line]:
    """Every non-blank line of path, parsed; with plain_text, a line that does not start
    with "{" is taken as it is (stripped), for files of one question per line."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if plain_text and not line.startswith("{"):
            yield Line(number, line)
            continue
        try:
            yield Line(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield Line(number, error=f"not valid JSON ({exc.msg} at column {exc.colno})")
