"""A learner's progress: every attempt, and when each question comes back (a Leitner schedule).

One SQLite file (Settings.progress_file) holds every learner on the machine, each by the
name they chose; there are no accounts. Each call opens its own connection in WAL mode
with a busy timeout, so page sessions answering at once, in threads or in processes, queue
for the write lock instead of losing an attempt.

A file that is not a SQLite database, or fails SQLite's own check, is moved aside (kept,
named in the warning) and a fresh one is started: progress is never silently emptied. A
database another program holds locked past the timeout is left alone (moving a file that
is being written would split the learner's history): ProgressLocked says so.
"""

from __future__ import annotations

import csv
import io
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    learner TEXT NOT NULL,
    question_id TEXT NOT NULL,
    section TEXT NOT NULL,
    answer TEXT NOT NULL,
    score REAL NOT NULL,
    label TEXT NOT NULL,
    answered_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_learner ON attempts (learner, question_id);
CREATE TABLE IF NOT EXISTS schedule (
    learner TEXT NOT NULL,
    question_id TEXT NOT NULL,
    box INTEGER NOT NULL,
    due_at TEXT NOT NULL,
    PRIMARY KEY (learner, question_id)
);
"""

# Leitner boxes: a correct answer moves a question up a box and it comes back after that
# box's wait; a wrong one (or "I don't know") sends it to box 1, back in ten minutes, so it
# returns within the same session after a few other questions; a partial one stays in its box
# and comes back after at most a day.
BOX_WAIT = {
    1: timedelta(minutes=10),
    2: timedelta(days=1),
    3: timedelta(days=3),
    4: timedelta(days=7),
    5: timedelta(days=21),
}
TOP_BOX = max(BOX_WAIT)


def next_box(box: int, label: str) -> tuple[int, timedelta]:
    """The box a question moves to after an answer with this label, and its wait there. A
    new question (box 0) starts in box 1, so a first correct answer brings it back in a day."""
    box = max(box, 1)
    if label == "correct":
        box = min(box + 1, TOP_BOX)
        return box, BOX_WAIT[box]
    if label == "partial":
        return box, min(BOX_WAIT[box], timedelta(days=1))
    return 1, BOX_WAIT[1]


def rescheduled(current: Scheduled | None, label: str, answered_at: datetime) -> tuple[int, datetime]:
    """(box, due) after an answer. Answering before the question is due (a second "Check",
    practising ahead) never moves it up: only an answer when due earns the next box; a miss
    always sends it back to box 1."""
    if current is not None and answered_at < current.due_at and label != "wrong":
        due = min(current.due_at, answered_at + BOX_WAIT[2]) if label == "partial" else current.due_at
        return current.box, due
    box, wait = next_box(current.box if current else 0, label)
    return box, answered_at + wait


class ProgressError(RuntimeError):
    """The progress database cannot be used (locked, unreadable, not writable); nothing moved."""


class ProgressLocked(ProgressError):
    """Another program holds the progress database locked."""


@dataclass(frozen=True)
class Attempt:
    learner: str
    question_id: str
    section: str
    answer: str
    score: float
    label: str
    answered_at: datetime


@dataclass(frozen=True)
class Scheduled:
    question_id: str
    box: int
    due_at: datetime


def now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def clean_learner(name: str | None) -> str:
    name = " ".join((name or "").split())[:60]
    return name or "learner"


def _inert(cell: str) -> str:
    """A spreadsheet runs a cell that starts with = + - or @ as a formula: an answer
    opened from the export must stay text."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


class Progress:
    """The progress database at `path`, created (with its folder) on first use."""

    BUSY_TIMEOUT_S = 10.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._checked = False
        self._lock = threading.Lock()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if not self._checked:
                self._open_checked()
                self._checked = True
        try:
            connection = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S)
        except sqlite3.OperationalError as exc:
            raise self._unusable(exc) from exc
        try:
            with connection:
                yield connection
        except sqlite3.OperationalError as exc:
            raise self._unusable(exc) from exc
        finally:
            connection.close()

    def _unusable(self, exc: sqlite3.OperationalError) -> ProgressError:
        if "locked" in str(exc) or "busy" in str(exc):
            return ProgressLocked(f"The progress database {self.path} is locked by another program "
                                  "(another ftchat quiz?); nothing was saved. Try again.")
        return ProgressError(f"Cannot use the progress database {self.path}: {exc}")

    def _open_checked(self) -> None:
        """Create the database, or check the one there. Only a file SQLite cannot read as a
        database, or one failing its own check, is damage and moved aside; a file that is
        locked, read-only or unreadable (an OperationalError) is left where it is."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._initialise_when_free()
        except sqlite3.OperationalError as exc:
            raise self._unusable(exc) from exc
        except sqlite3.DatabaseError as exc:
            aside = self._move_aside()
            log.warning("The progress database %s was damaged (%s): kept as %s, starting a fresh one.",
                        self.path, exc, aside)
            self._initialise()

    def _initialise_when_free(self) -> None:
        """_initialise, retried while another session holds the lock: switching a new file to
        WAL fails at once with "database is locked" (SQLite's busy timeout does not wait for
        it) when two sessions create the database together."""
        deadline = time.monotonic() + self.BUSY_TIMEOUT_S
        while True:
            try:
                return self._initialise()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _initialise(self) -> None:
        connection = sqlite3.connect(self.path, timeout=self.BUSY_TIMEOUT_S)
        try:
            check = connection.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check[0] if check else 'no result'}")
            if connection.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                # Only a new (or older) database is written to here: opening one that is up
                # to date only reads, so it never waits for another session's write lock.
                connection.execute("PRAGMA journal_mode=WAL")
                with connection:
                    connection.executescript(SCHEMA)
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            connection.close()

    def _move_aside(self) -> Path:
        stamp = now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        self.path.rename(aside)
        for suffix in ("-wal", "-shm", "-journal"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        return aside

    # Writing ---------------------------------------------------------------------------

    def record(self, attempt: Attempt) -> Scheduled:
        """Store the attempt and move its question in the schedule, in one transaction."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # take the write lock before reading the box
            row = db.execute(
                "SELECT box, due_at FROM schedule WHERE learner = ? AND question_id = ?",
                (attempt.learner, attempt.question_id),
            ).fetchone()
            current = Scheduled(attempt.question_id, row[0], datetime.fromisoformat(row[1])) if row else None
            box, due = rescheduled(current, attempt.label, attempt.answered_at)
            db.execute(
                "INSERT INTO attempts (learner, question_id, section, answer, score, label, answered_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.learner,
                    attempt.question_id,
                    attempt.section,
                    attempt.answer,
                    attempt.score,
                    attempt.label,
                    _stamp(attempt.answered_at),
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO schedule (learner, question_id, box, due_at) VALUES (?, ?, ?, ?)",
                (attempt.learner, attempt.question_id, box, _stamp(due)),
            )
        return Scheduled(attempt.question_id, box, due)

    def reset(self, learner: str) -> int:
        """Forget one learner's attempts and schedule; returns how many attempts went."""
        with self._connect() as db:
            gone = db.execute("DELETE FROM attempts WHERE learner = ?", (learner,)).rowcount
            db.execute("DELETE FROM schedule WHERE learner = ?", (learner,))
        return gone

    # Reading ---------------------------------------------------------------------------

    def attempts(self, learner: str) -> list[Attempt]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT learner, question_id, section, answer, score, label, answered_at FROM attempts"
                " WHERE learner = ? ORDER BY id",
                (learner,),
            ).fetchall()
        return [Attempt(*r[:6], datetime.fromisoformat(r[6])) for r in rows]

    def schedule(self, learner: str) -> dict[str, Scheduled]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT question_id, box, due_at FROM schedule WHERE learner = ?", (learner,)
            ).fetchall()
        return {r[0]: Scheduled(r[0], r[1], datetime.fromisoformat(r[2])) for r in rows}

    def latest_scores(self, learner: str) -> dict[str, tuple[str, float]]:
        """question id -> (section, score of its latest attempt)."""
        return {a.question_id: (a.section, a.score) for a in self.attempts(learner)}

    def export_csv(self, learner: str) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["answered_at", "question_id", "section", "score", "label", "answer"])
        for a in self.attempts(learner):
            writer.writerow(
                [_stamp(a.answered_at), a.question_id, a.section, f"{a.score:.3f}", a.label, _inert(a.answer)]
            )
        return out.getvalue()
