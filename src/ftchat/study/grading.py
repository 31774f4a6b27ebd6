"""Grading a learner's free-text answer against a question's key points.

A key point counts as stated when the answer has one of its wordings, spelled however a
hurried learner spells it ("gradiant accumulation", "quantisation"), or when a sentence of
the answer says what the key point's guide sentence says, in other words (the embedder's
cosine). The score is the share of key points stated; the label (correct, partial, wrong)
comes from the score by the thresholds in GradingPolicy, which were chosen on learner
answers of our own (train/quiz_answers.jsonl) and judged on a reviewer's
(eval/quiz/reviewer.jsonl): docs/study.md has the figures.

Nothing in an answer is ever followed or run: it is text to compare, however it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from rapidfuzz import fuzz

from ftchat.study.answer_key import AnswerKey, KeyPoint
from ftchat.text import split_sentences


class AnswerError(ValueError):
    """An answer that cannot be graded (empty)."""


@dataclass(frozen=True)
class GradingPolicy:
    # A wording's word of at least this many letters matches a misspelt word at this
    # rapidfuzz ratio (85: one wrong letter in seven); shorter ones ("KL", "PPO") must be exact.
    fuzzy_min_chars: int = 5
    fuzzy_ratio: float = 85.0
    # An answer sentence whose cosine to a key point's clause reaches `stated_cosine`
    # states the point in other words; from `close_cosine` it earns half the point.
    stated_cosine: float = 0.70
    close_cosine: float = 0.60
    close_credit: float = 0.5
    # Labels from the score: correct at or above `correct_at`, partial above `partial_above`.
    correct_at: float = 0.67  # 2 of 3 key points is partial
    partial_above: float = 0.0
    # Only the first part of a very long answer is read (it is still stored whole).
    max_chars: int = 4000
    max_sentences: int = 40


GRADING = GradingPolicy()


@dataclass(frozen=True)
class PointResult:
    point: KeyPoint
    credit: float  # 1 stated, close_credit when the answer comes close, else 0
    how: str  # "words", "meaning", "close" or ""

    @property
    def stated(self) -> bool:
        return self.credit >= 1.0


@dataclass(frozen=True)
class PointEvidence:
    """What the answer offers for one key point, before the policy's thresholds."""

    has_wording: bool
    cosine: float  # the best answer sentence's cosine to the point's clause


@dataclass(frozen=True)
class Grade:
    key: AnswerKey
    answer: str  # the learner's
    results: tuple[PointResult, ...]
    score: float
    label: str  # "correct", "partial" or "wrong"

    @property
    def stated(self) -> list[str]:
        return [r.point.label for r in self.results if r.stated]

    @property
    def missed(self) -> list[str]:
        return [r.point.label for r in self.results if not r.stated]

    def to_json(self) -> dict:
        q = self.key.question
        return {
            "id": q.id,
            "question": q.question,
            "score": round(self.score, 3),
            "stated": self.stated,
            "missed": self.missed,
            "answer": self.key.answer_text(),
            "citations": self.key.citations(),
            "label": self.label,
            "section": q.section,
            "key_points": [
                {
                    "point": r.point.label,
                    "stated": r.stated,
                    "credit": r.credit,
                    "how": r.how,
                    "sentence": r.point.sentence.text,
                }
                for r in self.results
            ],
        }


class TextEncoder(Protocol):
    """The embedder (models.embedding.Embedder): guide text is remembered across answers,
    a learner's answer is not (it would crowd the guide's sentences out of its memory)."""

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def encode_remembered(self, texts: list[str]) -> np.ndarray: ...


_TOKEN = re.compile(r"[a-z0-9]+")
_NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "twelve": "12", "twenty": "20", "hundred": "100",
    "twice": "2 times",
}
_SCALE_LETTERS = {"k": "thousand", "m": "million", "b": "billion", "t": "trillion"}


def words(text: str) -> list[str]:
    """Lower-case words; "50,000" and "ten thousand" are both 10000-style digits, "175B" is
    "175 billion", hyphens and apostrophes split."""
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    text = re.sub(r"\b(\d+)\s?x\b", r"\1 times", text)
    text = re.sub(r"\b(\d+(?:\.\d+)?)\s?([kmbt])\b", lambda m: f"{m[1]} {_SCALE_LETTERS[m[2]]}", text)
    out: list[str] = []
    for word in _TOKEN.findall(text):
        if word == "thousand" and out:
            if out[-1].isdigit() and int(out[-1]) < 1000:
                out[-1] = str(int(out[-1]) * 1000)  # "10 thousand" / "ten thousand" -> 10000
            else:
                out.append(word)
            continue
        out.extend((_NUMBER_WORDS.get(word) or ("1000" if word == "thousand" else word)).split())
    return out


def _same_word(said: str, wanted: str, policy: GradingPolicy) -> bool:
    if said == wanted or (len(wanted) >= 4 and said.startswith(wanted)):
        return True
    if len(wanted) < policy.fuzzy_min_chars:
        return False
    return max(fuzz.ratio(said, wanted), fuzz.ratio(said[: len(wanted)], wanted)) >= policy.fuzzy_ratio


def has_wording(answer_words: list[str], wording: str, policy: GradingPolicy = GRADING) -> bool:
    """Whether the answer's words contain this wording: spaced or hyphenated any way
    ("pre-trained", "pretrained", "pre trained"), as words' beginnings ("distil" in
    "distillation"), or each long enough word misspelt by a letter or two."""
    wanted = words(wording)
    if not wanted:
        return False
    joined = "".join(wanted)
    n = len(wanted)
    for i in range(len(answer_words)):
        for span in (n - 1, n + 1):  # the same letters split into one word more or less
            if span >= 1 and i + span <= len(answer_words) and "".join(answer_words[i : i + span]) == joined:
                return True
        window = answer_words[i : i + n]
        if len(window) == n and all(_same_word(a, b, policy) for a, b in zip(window, wanted, strict=True)):
            return True
    return False


def answer_units(answer: str, policy: GradingPolicy = GRADING) -> list[str]:
    """The answer's sentences (and clauses split at ";" or a new line), at most max_sentences."""
    text = answer[: policy.max_chars]
    units = [u.strip() for s in split_sentences(text) for u in re.split(r"[;\n]", s)]
    return [u for u in units if len(words(u)) >= 2][: policy.max_sentences]


def point_evidence(
    key: AnswerKey, answer: str, embedder: TextEncoder, policy: GradingPolicy = GRADING
) -> list[PointEvidence]:
    """For each key point: whether the answer has one of its wordings, and how close in
    meaning the answer's nearest sentence is to the guide's clause stating it."""
    text = answer[: policy.max_chars]
    answer_words = words(text)
    units = answer_units(text, policy)
    if units:
        points = embedder.encode_remembered([p.clause for p in key.points])
        similarity = embedder.encode(units) @ points.T
        best = similarity.max(axis=0)
    else:
        best = np.zeros(len(key.points), dtype=np.float32)
    return [
        PointEvidence(any(has_wording(answer_words, w, policy) for w in p.wordings), float(best[i]))
        for i, p in enumerate(key.points)
    ]


def grade(key: AnswerKey, answer: str, embedder: TextEncoder, policy: GradingPolicy = GRADING) -> Grade:
    if not answer or not answer.strip():
        raise AnswerError('The answer is empty: write what you know, or choose "I don\'t know".')
    evidence = point_evidence(key, answer, embedder, policy)
    results = tuple(PointResult(p, *credit_for(e, policy)) for p, e in zip(key.points, evidence, strict=True))
    score = score_for(evidence, policy)
    return Grade(key, answer, results, score, label_for(score, policy))


def score_for(evidence: list[PointEvidence], policy: GradingPolicy = GRADING) -> float:
    """The share of key points stated, a close one counting close_credit; 0 with none."""
    return sum(credit_for(e, policy)[0] for e in evidence) / len(evidence) if evidence else 0.0


def credit_for(evidence: PointEvidence, policy: GradingPolicy = GRADING) -> tuple[float, str]:
    if evidence.has_wording:
        return 1.0, "words"
    if evidence.cosine >= policy.stated_cosine:
        return 1.0, "meaning"
    if evidence.cosine >= policy.close_cosine:
        return policy.close_credit, "close"
    return 0.0, ""


def label_for(score: float, policy: GradingPolicy = GRADING) -> str:
    if score >= policy.correct_at:
        return "correct"
    return "partial" if score > policy.partial_above else "wrong"
