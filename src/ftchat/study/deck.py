"""The quiz's questions: the guide's sample questions that read as a question to a learner.

Every in-scope row of `train/questions.jsonl` names the sections that answer it and its
nuggets, the key facts a good answer states: exactly what a quiz needs to grade a free-text
answer. Rows written as search queries ("short": "qlora memory", "misspelled") are left out;
the rest are term, beginner, paraphrase, symptom, how-to and comparison questions.

A question's id is taken from its text, so it stays the same when rows are added, removed
or reordered, and a learner's progress keeps pointing at the right question.
"""

from __future__ import annotations

import difflib
import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ftchat.files import read_lines

SEPARATOR = " › "  # as documents.chunking.TITLE_SEPARATOR spells a heading path
QUIZ_STYLES = ("term", "beginner", "paraphrase", "symptom", "how-to", "comparison")


class UnknownQuestion(LookupError):
    """No quiz question has this id."""


class UnknownSection(LookupError):
    """A section title that names no part, category or section with quiz questions."""


@dataclass(frozen=True)
class QuizQuestion:
    id: str
    question: str
    style: str
    sections: tuple[str, ...]  # heading paths; the first is the one that answers it
    nuggets: tuple[tuple[str, ...], ...]  # each key point's interchangeable wordings

    @property
    def section(self) -> str:
        return self.sections[0]

    @property
    def prompt(self) -> str:
        """The question as a learner is asked it. Some sample questions were written as
        search phrases ("GLUE vs SuperGLUE", "swapping words for thesaurus equivalents to make
        extra training sentences"): those get a lead-in and an ending, so they read as a
        question; the rest are shown as written."""
        text = self.question
        if text[-1:] in "?.!":
            return text
        if self.style == "comparison":
            return f"Compare: {text}."
        if self.style == "paraphrase":
            return f"What is this called: {text}?"
        return text[:1].upper() + text[1:] + ("." if self.style == "symptom" else "?")

    def in_scope(self, prefixes: Sequence[str]) -> bool:
        """Whether its section is one of these headings or lies under one (no prefixes: all)."""
        return not prefixes or any(
            self.section == p or self.section.startswith(p + SEPARATOR) for p in prefixes
        )

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "section": self.section, "style": self.style,
                "prompt": self.prompt}


def question_id(text: str) -> str:
    return "q" + hashlib.sha1(" ".join(text.split()).encode("utf-8")).hexdigest()[:8]


def _question_from(row: object, known_sections: set[str] | None) -> QuizQuestion | None:
    if not isinstance(row, dict) or not row.get("answerable", True) or row.get("style") not in QUIZ_STYLES:
        return None
    text, sections, nuggets = row.get("question"), row.get("sections"), row.get("nuggets")
    if not isinstance(text, str) or not text.strip() or not isinstance(sections, list) or not sections:
        return None
    if not isinstance(nuggets, list) or not nuggets:
        return None  # nothing to grade against
    points = tuple(tuple(str(w) for w in n if str(w).strip()) for n in nuggets if isinstance(n, list))
    sections = tuple(str(s) for s in sections)
    if not all(points) or (known_sections is not None and sections[0] not in known_sections):
        return None  # a section the current guide no longer has
    text = " ".join(text.split())
    return QuizQuestion(question_id(text), text, row["style"], sections, points)


class Deck:
    """The quiz questions of one questions file, by id and by section."""

    def __init__(self, questions: Iterable[QuizQuestion]) -> None:
        self.by_id: dict[str, QuizQuestion] = {}
        for q in questions:
            self.by_id.setdefault(q.id, q)  # the same question twice is one question
        self.questions = list(self.by_id.values())
        # Each section's questions, sections in the order the file first names them.
        self.by_section: dict[str, list[QuizQuestion]] = {}
        for q in self.questions:
            self.by_section.setdefault(q.section, []).append(q)

    @classmethod
    def load(cls, path: Path, known_sections: set[str] | None = None) -> Deck:
        """The quiz questions of a questions file (a missing file is an empty deck); rows
        that are no quiz question, or whose section `known_sections` lacks, are skipped."""
        if not path.is_file():
            return cls([])
        rows = (line.value for line in read_lines(path) if not line.error)
        return cls(q for row in rows if (q := _question_from(row, known_sections)))

    def __len__(self) -> int:
        return len(self.questions)

    def get(self, qid: str) -> QuizQuestion:
        try:
            return self.by_id[qid.strip()]
        except KeyError:
            raise UnknownQuestion(
                f"No quiz question has the id {qid!r} (`ftchat quiz questions --json` lists them)."
            ) from None

    def sections(self) -> list[str]:
        return list(self.by_section)

    def in_scope(self, prefixes: Sequence[str] = ()) -> list[QuizQuestion]:
        """The questions under these headings (no prefixes: all), in file order."""
        return [q for q in self.questions if q.in_scope(prefixes)]

    def headings(self) -> list[str]:
        """Every part, category and section that has quiz questions under it, in guide order."""
        seen: dict[str, None] = {}
        for section in self.sections():
            parts = section.split(SEPARATOR)
            for depth in range(1, len(parts) + 1):
                seen.setdefault(SEPARATOR.join(parts[:depth]), None)
        return list(seen)

    def resolve(self, titles: Iterable[str]) -> list[str]:
        """The heading paths these titles name: a whole path, or a heading's own title when
        only one heading has it (case and spacing ignored). Raises UnknownSection naming
        the closest titles for a title that matches nothing."""
        return [self._resolve_one(t) for t in titles if t.strip()]

    def _resolve_one(self, title: str) -> str:
        headings = self.headings()
        if not headings:
            raise UnknownSection(f"No quiz questions are loaded, so no section '{title}' to practise.")
        wanted = _folded(title)
        for heading in headings:
            if _folded(heading) == wanted:
                return heading
        by_last = [h for h in headings if _folded(h.split(SEPARATOR)[-1]) == wanted]
        if len(by_last) == 1:
            return by_last[0]
        if len(by_last) > 1:
            raise UnknownSection(
                f"'{title}' names {len(by_last)} headings; give the whole path: " + "; ".join(by_last[:5])
            )
        raise UnknownSection(
            f"No part, category or section is called '{title}'. "
            f"Closest: {'; '.join(closest_titles(title, headings))}"
        )

    def pick(
        self, prefixes: Sequence[str] = (), count: int | None = None, seed: int | None = None
    ) -> list[QuizQuestion]:
        """Questions under these headings, spread over their sections and styles: shuffled
        with `seed`, then taken round-robin by section so that ten questions over three
        sections are not ten questions about one."""
        rng = random.Random(seed)
        queues = [list(qs) for qs in self.by_section.values() if qs[0].in_scope(prefixes)]
        for queue in queues:
            rng.shuffle(queue)
        rng.shuffle(queues)
        picked: list[QuizQuestion] = []
        while any(queues) and (count is None or len(picked) < count):
            for queue in queues:
                if queue and (count is None or len(picked) < count):
                    picked.append(queue.pop())
        return picked


def _folded(text: str) -> str:
    return " ".join(text.replace(">", "›").replace("›", " › ").split()).casefold()


def closest_titles(title: str, headings: Sequence[str], n: int = 3) -> list[str]:
    """The headings nearest to a mistyped title, compared with their own title and path."""
    wanted = _folded(title)
    scored = sorted(
        (
            (
                max(
                    difflib.SequenceMatcher(None, wanted, _folded(h)).ratio(),
                    difflib.SequenceMatcher(None, wanted, _folded(h.split(SEPARATOR)[-1])).ratio(),
                ),
                h,
            )
            for h in headings
        ),
        reverse=True,
    )
    return [h for _, h in scored[:n]]
