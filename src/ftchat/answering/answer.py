"""The Answer every path returns, its citations, and the two answers built from evidence alone.

A 135M-parameter model cannot be trusted to refuse, to cite, or to stay on its sources, so
it decides none of that. The gate (gate.py) decides whether the guide covers the question;
the model only phrases an answer from a few numbered evidence sentences (prompt.py); every
sentence it writes is checked against them (verify.py, streamcheck.py) before the user sees
it. If nothing it wrote survives, the answer is the evidence sentences themselves (the
"extractive" path), still with citations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ftchat.answering.evidence import Evidence, EvidenceSet
from ftchat.answering.retrieval import Passage
from ftchat.answering.verify import cited_numbers
from ftchat.models.embedding import Embedder
from ftchat.text import tokenize


@dataclass
class Citation:
    n: int
    passage: Passage
    quotes: list[str]

    def to_json(self) -> dict:
        c = self.passage.chunk
        return {
            "n": self.n,
            "chunk_id": c.id,
            "title": c.title,
            "source": c.source,
            "location": c.location,
            "text": " ".join(self.quotes) if self.quotes else c.text,
        }


class AnswerMode(StrEnum):
    """How the text was made: the model's verified words, the evidence itself, or a decline."""

    GENERATED = "generated"
    EXTRACTIVE = "extractive"
    DECLINED = "declined"


@dataclass(kw_only=True)
class Answer:
    question: str
    text: str
    answerable: bool
    citations: list[Citation]
    passages: list[Passage]
    model: str
    timings: dict[str, float]
    tokens: int
    mode: AnswerMode
    search_query: str = ""
    dropped_sentences: list[str] = field(default_factory=list)
    model_sentences: int = 0  # sentences of the text in the model's own words

    def to_json(self) -> dict:
        return {
            "question": self.question,
            "answer": self.text,
            "answerable": self.answerable,
            "citations": [c.to_json() for c in self.citations],
            "passages": [p.to_json() for p in self.passages],
            "model": self.model,
            "timings": {k: round(v, 1) for k, v in self.timings.items()},
            "tokens": self.tokens,
            "mode": str(self.mode),
            "search_query": self.search_query,
            "model_sentences": self.model_sentences,
        }

    def cited_evidence(self, embedder: Embedder) -> EvidenceSet:
        """The evidence this answer cites, rebuilt to re-check the answer independently."""
        items = [Evidence(c.n, c.passage, q, 0.0) for c in self.citations for q in c.quotes]
        if not items:
            return EvidenceSet.empty()
        vectors = embedder.encode_remembered([e.sentence for e in items])
        return EvidenceSet(items, vectors, set(tokenize(self.search_query)))


def lead_evidence(evidence: EvidenceSet) -> Evidence | None:
    """The best evidence sentence of the top-ranked passage (numbered 1)."""
    return max((e for e in evidence.items if e.n == 1), key=lambda e: e.score, default=None)


def opening(evidence: EvidenceSet) -> str:
    """The answer's first sentence: the first evidence unit of the top-ranked section, cited.

    Every answer opens with it (the extractive answer always did), so the page can show it
    as soon as the evidence is chosen, before the model has written a word, and never has
    to take it back whatever the model then writes."""
    if not evidence.items:
        return ""
    first = evidence.items[0]
    return f"{first.sentence} [{first.n}]"


def extractive_answer(evidence: EvidenceSet) -> str:
    """The evidence units in reading order, each with its citation; a list keeps its lines.

    The evidence was chosen for this question within a word budget for its kind, so all
    of it is the answer: a definition may be one sentence, a list question a whole list.
    """
    pieces = []
    for e in evidence.items:
        separator = "\n" if pieces and ("\n" in e.sentence or "\n" in pieces[-1]) else " "
        pieces.append(("" if not pieces else separator) + f"{e.sentence} [{e.n}]")
    return "".join(pieces)


def citations_for(text: str, evidence: EvidenceSet) -> list[Citation]:
    used = sorted(set(cited_numbers(text)))
    passages = evidence.passages
    return [
        Citation(n, passages[n], [e.sentence for e in evidence.items if e.n == n])
        for n in used
        if n in passages
    ]
