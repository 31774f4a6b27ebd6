"""The quiz over one guide: which question comes next, grading, progress, worksheets.

    tutor = assistant.tutor()                       # ftchat.api builds it over the index
    pick = tutor.next_question("ada", ["LoRA (Low-Rank Adaptation)"])
    grade = tutor.grade(pick.question.id, "It freezes the weights and trains two small matrices", "ada")
    grade.score, grade.stated, grade.missed, grade.key.answer_text()
    tutor.mastery("ada")                            # per section
    tutor.worksheet(["Key concepts › Training process"], count=8, fmt="html")

The page's Study tab and `ftchat quiz` both call only this.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ftchat.documents.book import Guide
from ftchat.study import worksheet
from ftchat.study.answer_key import (
    AnswerKey,
    GuideSentence,
    KeyPoint,
    build_answer_key,
    read_guide_file,
    sentences_with_lines,
)
from ftchat.study.deck import SEPARATOR, Deck, QuizQuestion, UnknownSection
from ftchat.study.grading import GRADING, Grade, GradingPolicy, PointResult, TextEncoder, grade
from ftchat.study.progress import Attempt, Progress, clean_learner, now

DONT_KNOW = "I don't know"
WEAKEST_SECTIONS = 3


@dataclass(frozen=True)
class Pick:
    question: QuizQuestion
    reason: str  # "due" (back from the schedule), "new", "ahead" (nothing due yet)


@dataclass(frozen=True)
class SectionMastery:
    section: str
    questions: int  # quiz questions on it
    answered: int  # of those, answered at least once
    mastery: float  # mean latest score over the answered ones
    due: int  # answered ones due again now


class Tutor:
    def __init__(
        self,
        guide: Guide,
        embedder: TextEncoder,
        questions_file: Path,
        progress_file: Path,
        corpus_dir: Path,
        policy: GradingPolicy = GRADING,
    ) -> None:
        self.guide = guide
        self.embedder = embedder
        self.corpus_dir = corpus_dir
        self.policy = policy
        self.deck = Deck.load(questions_file, set(_section_titles(guide)))
        self.progress = Progress(progress_file)
        self._keys: dict[str, AnswerKey] = {}
        self._files: dict[str, str | None] = {}

    # Questions ---------------------------------------------------------------------------

    def headings(self) -> list[str]:
        return self.deck.headings()

    def resolve(self, titles: Sequence[str]) -> list[str]:
        return self.deck.resolve(titles)

    def questions(
        self, titles: Sequence[str] = (), count: int | None = None, seed: int | None = None
    ) -> list[QuizQuestion]:
        return self.deck.pick(self.resolve(titles), count, seed)

    def question(self, qid: str) -> QuizQuestion:
        return self.deck.get(qid)

    def key(self, qid: str) -> AnswerKey:
        question = self.deck.get(qid)
        if question.id not in self._keys:
            remembered = self.embedder.encode_remembered  # guide text recurs across learners
            self._keys[question.id] = build_answer_key(question, self._section_sentences, remembered)
        return self._keys[question.id]

    def section_source(self, section: str) -> str:
        """The file a section is in, for a link to it."""
        places = self.guide.section(tuple(section.split(SEPARATOR))).places
        return places[0].source if places else self.guide.guide_root

    def _section_sentences(self, section: str) -> list[GuideSentence]:
        found = self.guide.section(tuple(section.split(SEPARATOR)))
        source = found.places[0].source if found.places else ""
        if source not in self._files:
            relative = (
                Path(source).relative_to(self.guide.guide_root) if self.guide.in_guide(source) else None
            )
            self._files[source] = read_guide_file(self.corpus_dir / relative) if relative else None
        return sentences_with_lines(section, found.text, source, self._files[source])

    # Answers -----------------------------------------------------------------------------

    def grade(self, qid: str, answer: str, learner: str | None = None) -> Grade:
        """Grade an answer; with a learner, the attempt is saved and the question rescheduled."""
        result = grade(self.key(qid), answer, self.embedder, self.policy)
        if learner is not None:
            self.record(learner, result)
        return result

    def dont_know(self, qid: str, learner: str | None = None) -> Grade:
        """ "I don't know" is an answer: every key point missed, the guide's answer shown."""
        key = self.key(qid)
        result = Grade(key, DONT_KNOW, tuple(_missed(p) for p in key.points), 0.0, "wrong")
        if learner is not None:
            self.record(learner, result)
        return result

    def record(self, learner: str, result: Grade) -> None:
        """Save a grade as the learner's attempt and reschedule its question."""
        q = result.key.question
        self.progress.record(
            Attempt(clean_learner(learner), q.id, q.section, result.answer, result.score, result.label, now())
        )

    # Schedule and progress ---------------------------------------------------------------

    def next_question(
        self,
        learner: str,
        titles: Sequence[str] = (),
        weakest: bool = False,
        after: str | None = None,
        seed: int | None = None,
    ) -> Pick | None:
        """The question to ask now: one due again, else a new one from the least practised
        section, else the one due soonest. `weakest`: only the learner's weakest sections
        (all of the scope until they have answered something). `after`: not this one again."""
        learner = clean_learner(learner)
        pool = self.deck.in_scope(self.resolve(titles))
        if weakest:
            weak = self.weakest_sections(learner)
            pool = [q for q in pool if q.section in weak] or pool
        pool = [q for q in pool if q.id != after] or pool
        if not pool:
            return None
        schedule = self.progress.schedule(learner)
        moment = now()
        due = sorted(
            (schedule[q.id].due_at, q.id)
            for q in pool
            if q.id in schedule and schedule[q.id].due_at <= moment
        )
        if due:
            return Pick(self.deck.get(due[0][1]), "due")
        unseen = [q for q in pool if q.id not in schedule]
        if unseen:
            practised: dict[str, int] = {}
            for qid in schedule:
                section = self.deck.by_id[qid].section if qid in self.deck.by_id else ""
                practised[section] = practised.get(section, 0) + 1
            least = min(practised.get(q.section, 0) for q in unseen)
            return Pick(
                random.Random(seed).choice([q for q in unseen if practised.get(q.section, 0) == least]), "new"
            )
        soonest = min(pool, key=lambda q: schedule[q.id].due_at)
        return Pick(soonest, "ahead")

    def mastery(self, learner: str) -> list[SectionMastery]:
        """Per section the learner has answered on, in guide order."""
        learner = clean_learner(learner)
        latest = self.progress.latest_scores(learner)
        schedule = self.progress.schedule(learner)
        moment = now()
        rows = []
        for section, questions in self.deck.by_section.items():
            ids = [q.id for q in questions]
            scores = [latest[i][1] for i in ids if i in latest]
            if scores:
                due = sum(1 for i in ids if i in schedule and schedule[i].due_at <= moment)
                rows.append(SectionMastery(section, len(ids), len(scores), sum(scores) / len(scores), due))
        return rows

    def weakest_sections(self, learner: str) -> list[str]:
        rows = sorted(self.mastery(learner), key=lambda m: (m.mastery, -m.due))
        return [m.section for m in rows if m.mastery < 1.0][:WEAKEST_SECTIONS]

    def reset(self, learner: str) -> int:
        return self.progress.reset(clean_learner(learner))

    def export_csv(self, learner: str) -> str:
        return self.progress.export_csv(clean_learner(learner))

    # Teaching ----------------------------------------------------------------------------

    def worksheet(
        self, titles: Sequence[str], count: int = 10, fmt: str = "md", seed: int | None = None
    ) -> str:
        """Numbered questions over these headings, then the answer key (heading, file, line)."""
        scope = self.resolve(titles)
        questions = self.deck.pick(scope, count, seed)
        if not questions:
            raise UnknownSection("No quiz questions to put on a worksheet (none are loaded).")
        return worksheet.render([self.key(q.id) for q in questions], scope, fmt)


def _missed(point: KeyPoint) -> PointResult:
    return PointResult(point, 0.0, "")


def _section_titles(guide: Guide) -> list[str]:
    titles: list[str] = []
    stack = list(guide.contents.guide)
    while stack:
        entry = stack.pop()
        titles.append(SEPARATOR.join(entry.path))
        stack.extend(entry.children)
    return titles
