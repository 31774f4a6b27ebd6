"""Files ftchat writes and checks: sha256 records, the freshness rule, atomic writes and folder
swaps; and JSON Lines files read a row at a time.

The index (its corpus records and version folders) and the weight cache (the dequantized
model) both rely on these; one copy keeps their rules the same.

JSON Lines: the one reader for questions files, eval sets and the load test's question
pool. Each non-blank line comes back as a `Line` holding either its parsed value or what
is wrong with it, and the caller decides whether a bad row stops the run or only fails
that row, so that one bad row costs only itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_digest(value: object) -> str:
    """The sha256 of a JSON value written with sorted keys: what a manifest records of the
    weights beside it, so that a hand-edited or truncated weight shows as damaged."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


T = TypeVar("T")


def read_trained_file(path: Path, parse: Callable[[dict], T], unusable: type[Exception],
                      remake: str) -> T | str:
    """A trained part's JSON file parsed, or why it cannot be used, in one line: missing,
    unreadable, without its weights or manifest, or `unusable` (its own check failed).
    `remake`: the command that writes it again."""
    try:
        return parse(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return f"it is missing (reinstall ftchat, or run `{remake}`)"
    except (OSError, ValueError) as exc:
        return f"it is unreadable ({type(exc).__name__})"
    except (KeyError, TypeError, AttributeError):
        return "it lacks its weights or manifest"
    except unusable as exc:
        return str(exc)


def file_record(path: Path) -> dict:
    """What `is_unchanged` later compares: the content's sha256, its size and modification time."""
    stat = path.stat()
    return {"sha256": sha256_file(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_unchanged(path: Path, record: dict) -> bool:
    """True when the file still holds what `record` (from file_record) describes.

    Hashing is skipped while size and modification time are exactly those recorded, so a
    check costs a stat rather than a read (540 MB of weights hash in about a second); any
    write to the file changes its time and brings the full sha256 comparison back.
    """
    stat = path.stat()
    if stat.st_size != record["size"]:
        return False
    if record.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return sha256_file(path) == record["sha256"]


def write_text_atomically(path: Path, text: str) -> None:
    """`path` holds the old text or the new, never a part of either."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """`path` holds the old bytes or the new, never a part of either."""
    staging = path.with_name(f".{path.name}.part")
    staging.write_bytes(data)
    fsync(staging)
    os.replace(staging, path)


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_folder(final: Path) -> Iterator[Path]:
    """A private staging folder that replaces `final` in one rename once the block succeeds.

    Readers see the old folder or the complete new one, never a half-written one; a failed
    or interrupted write leaves only the staging folder, which is removed.
    """
    staging = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        for item in staging.iterdir():
            if item.is_file():
                fsync(item)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def read_objects(path: Path, error: type[Exception] = ValueError,
                 missing: str = "") -> Iterator[tuple[str, dict]]:
    """("file:line", row) for every row of a JSON Lines file of objects, for a loader that
    checks each row's fields. A missing file, a line that is not JSON or not an object
    raises `error` naming it (`missing` adds to the missing file's message, e.g. where the
    format is described)."""
    if not path.is_file():
        raise error(f"{path} does not exist{f' ({missing})' if missing else ''}")
    for line in read_lines(path):
        where = f"{path}:{line.number}"
        if line.error:
            raise error(f"{where}: {line.error}")
        if not isinstance(line.value, dict):
            raise error(f"{where}: a row must be a JSON object")
        yield where, line.value

