"""A quiz question's answer key: each key point with the guide sentence that states it.

A nugget of `train/questions.jsonl` is a few interchangeable wordings ("distil", "distill");
shown alone it tells a learner little. Its key point is the first sentence of the question's
sections that contains one of the wordings (or, when none does, the sentence nearest in
meaning to them), with the heading path, file and line it is on. The guide's answer to the
question is those sentences, in guide order, each cited.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ftchat.study.deck import QuizQuestion
from ftchat.text import split_sentences


@dataclass(frozen=True)
class GuideSentence:
    text: str
    section: str  # heading path
    source: str  # the file, as citations show it
    line: int | None  # 1-based line of the file the sentence is on, when found
    position: int = 0  # its place among the section's sentences (one line holds a paragraph)


@dataclass(frozen=True)
class KeyPoint:
    wordings: tuple[str, ...]
    sentence: GuideSentence

    @property
    def label(self) -> str:
        return self.wordings[0]

    @property
    def clause(self) -> str:
        """The part of its sentence that states the point (between commas, semicolons,
        brackets, "and", "but", "which"): a learner's sentence about this one point is
        compared with it, since a whole guide sentence often carries several points."""
        parts = [p.strip() for p in _CLAUSE_BREAK.split(self.sentence.text) if p.strip()]
        return next(
            (p for p in parts if any(contains_wording(p, w) for w in self.wordings)), self.sentence.text
        )


_CLAUSE_BREAK = re.compile(r"[,;:()]|\b(?:and|but|which)\b")


@dataclass(frozen=True)
class AnswerKey:
    question: QuizQuestion
    points: tuple[KeyPoint, ...]

    def sentences(self) -> list[GuideSentence]:
        """The key points' sentences without repeats, in the order the guide has them."""
        unique = list(dict.fromkeys(p.sentence for p in self.points))
        order = {s: i for i, s in enumerate(self.question.sections)}
        return sorted(unique, key=lambda s: (order.get(s.section, len(order)), s.position))

    def citations(self) -> list[dict]:
        """One citation per section the answer quotes, numbered in order of first use."""
        cited: dict[str, dict] = {}
        for sentence in self.sentences():
            entry = cited.setdefault(
                sentence.section,
                {
                    "n": len(cited) + 1,
                    "title": sentence.section,
                    "source": sentence.source,
                    "location": f"line {sentence.line}" if sentence.line else "",
                    "text": [],
                },
            )
            entry["text"].append(sentence.text)
        return [{**c, "text": " ".join(c["text"])} for c in cited.values()]

    def answer_text(self) -> str:
        """The guide's answer: the key points' sentences, each run of sentences from one
        section followed by its citation [n]."""
        numbers = {c["title"]: c["n"] for c in self.citations()}
        sentences = self.sentences()
        parts = []
        for i, s in enumerate(sentences):
            last_of_run = i + 1 == len(sentences) or sentences[i + 1].section != s.section
            parts.append(f"{s.text} [{numbers[s.section]}]" if last_of_run else s.text)
        return " ".join(parts)


# (heading path) -> (sentences with their places); the Tutor reads them from the index.
SectionSentences = Callable[[str], list[GuideSentence]]
Encode = Callable[[list[str]], np.ndarray]


def contains_wording(text: str, wording: str) -> bool:
    """Whether the guide sentence has this wording (case, hyphens and spacing ignored)."""
    return _squeezed(wording) in _squeezed(text)


def _squeezed(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower())


def build_answer_key(
    question: QuizQuestion, section_sentences: SectionSentences, encode: Encode
) -> AnswerKey:
    sentences = [s for section in question.sections for s in section_sentences(section)]
    if not sentences:
        raise LookupError(f"The guide has no text for {question.section!r}")
    points = []
    for wordings in question.nuggets:
        found = next((s for s in sentences if any(contains_wording(s.text, w) for w in wordings)), None)
        points.append(KeyPoint(wordings, found or _nearest(wordings, sentences, encode)))
    return AnswerKey(question, tuple(points))


def _nearest(wordings: Sequence[str], sentences: list[GuideSentence], encode: Encode) -> GuideSentence:
    vectors = encode([" ".join(wordings)] + [s.text for s in sentences])
    return sentences[int(np.argmax(vectors[1:] @ vectors[0]))]


def sentences_with_lines(section: str, text: str, source: str, file_text: str | None) -> list[GuideSentence]:
    """The section's sentences, each with the line of `file_text` it is on (None when the
    file cannot be read or the sentence is not found in it as written)."""
    lines = file_text.splitlines() if file_text else []
    found: list[GuideSentence] = []
    start = 0
    for position, sentence in enumerate(split_sentences(text)):
        probe = sentence[:60]
        line = next((i for i in range(start, len(lines)) if probe in " ".join(lines[i].split())), None)
        if line is not None:
            start = line  # sentences come in file order: search on from here
        number = line + 1 if line is not None else None
        found.append(GuideSentence(sentence, section, source, number, position))
    return found


def read_guide_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
