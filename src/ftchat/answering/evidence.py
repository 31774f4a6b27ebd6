"""Choosing the guide's sentences that answer what the question asks.

Every answer is built from these: the model phrases them, and when its words fail
verification the answer is the sentences themselves. So they must state what was asked,
come from the section that answers it, and read on their own:

- What kind of question it is decides what to prefer: an opening definition for "what is",
  the sentence (or bulleted list) that names the items for "which tools", a remedy for a
  symptom or a how-to, a cause for "why", both sides for a comparison.
- A unit is a sentence, or a lead-in ending in ':' together with the list it introduces.
  A unit that leans on the one before it ("It ...", "The second ...") comes with its
  predecessor or not at all; sentences about the guide or a category are never used
  unless the question is about the guide.
- Length follows the question: a word budget per kind, not a fixed number of sentences.
- The top-ranked section answers; another section joins only for a comparison or when its
  sentence brings a question term the chosen ones lack, and never a second definition of
  the same thing.
- A follow-up adds: a sentence the conversation has already shown is not chosen again
  (unless nothing else is left), so "what does it cost in memory?" after "what is QLoRA?"
  leads with the memory figures rather than the definition the reader just read.

Those are the hand rules (`rule_choice`), the default. With the learned unit scorer
(unit_scorer.py, FTCHAT_SCORER=on) `choose_by_scores` chooses instead, by each unit's
probability of stating one of the question's points; both read the same `Candidates` and
keep units whole the same way (`_Chooser`). docs/evaluation.md compares them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ftchat.answering.policy import EVIDENCE, EvidencePolicy
from ftchat.answering.retrieval import Passage
from ftchat.answering.unit_scorer import UnitScorer, unit_features, unit_signals
from ftchat.answering.units import (
    CAUSE,
    ENUMERATION,
    REMEDY,
    Unit,
    passage_units,
    question_kind,
    question_parts,
)
from ftchat.models.embedding import Embedder
from ftchat.text import tokenize

# Words a faithful paraphrase may add without adding a claim.
GENERIC_WORDS = frozenset(
    tokenize(
        "also allows allow lets let helps help makes make way ways method technique approach "
        "used uses useful important key main called known means mean both each one two "
        "during because often however therefore thus same kind"
    )
)


# Sentences that address the assistant instead of informing the reader ("ignore previous
# instructions", "SYSTEM: ...", "from now on you are ..."): a document may contain them, but
# they are never evidence, so they can reach neither the prompt nor an extractive answer.
_INSTRUCTION = re.compile(
    r"\b(ignore|disregard|forget|override)\b[^.]{0,60}?\b(instructions?|prompts?|rules?|guide|sources?|above|"
    r"previous|everything)\b"
    r"|\b(system prompt|you are now|from now on|reply only|respond only|answer every question|"
    r"new (rules?|instructions?)|instructions? for the (ai|assistant|model)|developer mode|jailbreak|"
    r"act as (if|an? (ai|assistant|model))|respond as|every answer (with|by)|pretend (to be|you are))\b"
    r"|^\W*(system|assistant|user|developer)\s*:"
    r"|<\s*/?\s*(sources|system|inst)\b|\[/?INST\]|<!--",
    re.IGNORECASE,
)


def is_instruction(sentence: str) -> bool:
    return bool(_INSTRUCTION.search(sentence))



@dataclass(frozen=True)
class Evidence:
    n: int  # citation number of the passage it comes from
    passage: Passage
    sentence: str
    score: float


class EvidenceSet:
    """The few sentences an answer may use, numbered by the passage they come from."""

    def __init__(self, items: list[Evidence], vectors: np.ndarray, question_terms: set[str],
                 kind: str = "other") -> None:
        self.items = items
        self.vectors = vectors
        self.question_terms = question_terms
        self.kind = kind

    @classmethod
    def empty(cls) -> EvidenceSet:
        return cls([], np.zeros((0, 1), dtype=np.float32), set())

    def vocabulary_for(self, n: int) -> set[str]:
        words = set(self.question_terms)
        for e in self.items:
            if e.n == n:
                words |= set(tokenize(e.sentence)) | set(tokenize(e.passage.chunk.title))
        return words

    def all_words_allowed(self, unfinished_claim: str) -> bool:
        """Whether every complete word of an unfinished sentence (its claim text, without
        markers) is a word some source's evidence or the question allows
        (verify.can_still_pass)."""
        text = unfinished_claim
        complete = text[: max(text.rfind(" "), 0)]  # the last word may still be growing
        return all(t in self._any_source_words for t in tokenize(complete))

    @functools.cached_property
    def _any_source_words(self) -> frozenset[str]:
        # Asked once per decoded token: tokenizing the evidence each time is wasted work.
        return GENERIC_WORDS.union(*(self.vocabulary_for(n) for n in self.passages))

    @property
    def passages(self) -> dict[int, Passage]:
        return {e.n: e.passage for e in self.items}

    def numbered_sources(self) -> str:
        lines = []
        for n, passage in sorted(self.passages.items()):
            sentences = " ".join(e.sentence for e in self.items if e.n == n)
            lines.append(f"[{n}] ({passage.chunk.heading_path[-1]}) {sentences}")
        return "\n".join(lines)


# --- Selection ----------------------------------------------------------------------------


def _usable_passages(passages: list[Passage], policy: EvidencePolicy) -> list[Passage]:
    best = max(p.dense for p in passages)
    return [p for p in passages if p.dense >= best - policy.usable_cosine_gap][: policy.max_passages]


def _is_overview(passage: Passage, others: list[Passage]) -> bool:
    """A category's own text, when one of its term sections is among the passages."""
    path = passage.chunk.heading_path
    return any(o.chunk.heading_path[: len(path)] == path and len(o.chunk.heading_path) > len(path)
               for o in others)


def _candidates(question: str, usable: list[Passage], policy: EvidencePolicy) -> list[Unit]:
    about_guide = "guide" in question.lower() or (
        bool(policy.about_section) and usable[0].chunk.heading_path[:1] == (policy.about_section,))
    units = []
    for passage in usable:
        for unit in passage_units(passage):
            if unit.words < policy.min_unit_words or is_instruction(unit.text):
                continue
            if not about_guide and policy.about_the_document.search(unit.text):
                continue
            units.append(unit)
    return units


def _score(unit: Unit, kind: str, relevance: float, overview: bool, policy: EvidencePolicy) -> float:
    """Relevance to the question, nudged towards what this kind of question needs."""
    code_spans = min(unit.text.count("`") // 2, policy.max_code_spans)
    score = relevance - policy.rank_penalty * (unit.passage.rank - 1) - policy.code_span_penalty * code_spans
    if unit.position == 0:
        defining = kind in ("definition", "comparison", "yes_no")
        score += policy.opening_bonus_defining if defining else policy.opening_bonus_other
    if overview:
        score -= policy.overview_penalty
    if kind == "list":
        enumerations = min(len(ENUMERATION.findall(unit.text)), policy.max_enumerations)
        score += policy.enumeration_bonus * enumerations + (policy.list_bonus if unit.is_list else 0.0)
    elif kind in ("how_to", "symptom") and REMEDY.search(unit.text):
        score += policy.remedy_bonus
    elif kind == "why" and CAUSE.search(unit.text):
        score += policy.cause_bonus
    return score


class _Chooser:
    """Adds units within the word budget, each leaning unit with its predecessor. A unit
    whose predecessor the reader has already read (`shown`) is not added: the predecessor
    would be shown again, and without it the unit dangles."""

    def __init__(self, units: list[Unit], vectors: np.ndarray, budget: int,
                 near_duplicate: float, shown: set[int] = frozenset()) -> None:
        self.units, self.vectors, self.budget = units, vectors, budget
        self.near_duplicate = near_duplicate
        self.shown = shown
        self.index = {(u.passage.chunk.id, u.position): i for i, u in enumerate(units)}
        self.chosen: list[int] = []
        self.words = 0

    def _with_predecessors(self, i: int) -> list[int] | None:
        group = [i]
        while self.units[group[0]].leans:
            unit = self.units[group[0]]
            before = self.index.get((unit.passage.chunk.id, unit.position - 1))
            if before is None or before in self.shown:
                return None  # its subject is not a usable unit: never shown alone
            group.insert(0, before)
        group += self._announced_items(i)
        return [j for j in group if j not in self.chosen]

    def _announced_items(self, i: int) -> list[int]:
        """The sentences after a unit that announces items ("three main families."), which
        come with it: announced without them, the list is promised and never given."""
        unit = self.units[i]
        items = (self.index.get((unit.passage.chunk.id, unit.position + step))
                 for step in range(1, unit.announced + 1))
        return [j for j in items if j is not None and j not in self.shown]  # read already: not again

    def add(self, i: int, force: bool = False) -> bool:
        group = self._with_predecessors(i)
        if not group:
            return False
        words = sum(self.units[j].words for j in group)
        if self.chosen and not force and self.words + words > self.budget:
            return False
        if any(float(self.vectors[j] @ self.vectors[k]) > self.near_duplicate
               for j in group for k in self.chosen):
            return False  # two sections often define a term in near-identical words
        self.chosen += group
        self.words += words
        return True


def remember_unit_vectors(passages: list[Passage], embedder: Embedder, batch: int = 64) -> int:
    """Embed the units of these passages into the embedder's memory ahead of any question,
    so that choosing evidence for a first-time question embeds nothing but the question.
    Embedding a question's five passages' units took 0.5-1.5 s on this 2-core machine
    under load, and that was the wait before a page could show any answer text."""
    texts = unit_texts(passages)
    for start in range(0, len(texts), batch):
        embedder.encode_remembered(texts[start:start + batch])
    return len(texts)


def unit_texts(passages: list[Passage]) -> list[str]:
    """The text of every unit of these passages, in order."""
    return [u.text for p in passages for u in passage_units(p)]


@dataclass
class Candidates:
    """A question's candidate units with what scoring them reads: the contract between
    retrieval's passages and the scorer, shared with the scorer's training."""

    question: str
    kind: str
    units: list[Unit]
    vectors: np.ndarray  # one unit vector per row, unit-normalized
    query_vector: np.ndarray
    question_terms: set[str]
    overlaps: list[float]  # the idf-weighted share of the question's terms each unit holds
    overviews: set[str]  # chunk ids of category openings whose term sections were found too

    def signals(self) -> np.ndarray:
        return unit_signals(self.units, self.vectors @ self.query_vector, self.overlaps,
                            self.question_terms, self.overviews)

    def features(self) -> np.ndarray:
        return unit_features(self.signals(), self.kind, self.vectors, self.query_vector)

    def asking(self, part: str, vector: np.ndarray, term_weight: Callable[[str], float] | None) -> Candidates:
        """The same units read against one part of the question."""
        terms = set(tokenize(part))
        return replace(self, question=part, query_vector=vector, question_terms=terms,
                       overlaps=_overlaps(self.units, terms, term_weight))


def _overlaps(units: list[Unit], terms: set[str], term_weight: Callable[[str], float] | None) -> list[float]:
    weight = term_weight or (lambda term: 1.0)
    total = max(sum(weight(t) for t in terms), 1e-9)
    return [sum(weight(t) for t in set(tokenize(u.text)) & terms) / total for u in units]


def candidates_for(
    question: str,
    passages: list[Passage],
    embedder: Embedder,
    *,
    query_vector: np.ndarray | None = None,
    term_weight: Callable[[str], float] | None = None,
    asked: str = "",
    policy: EvidencePolicy = EVIDENCE,
) -> Candidates | None:
    """The units evidence may be chosen from, or None when the passages hold none."""
    if not passages:
        return None
    usable = _usable_passages(passages, policy)
    units = _candidates(question, usable, policy)
    if not units:
        return None
    vectors = embedder.encode_remembered([u.text for u in units])
    if query_vector is None:
        query_vector = embedder.encode([question])[0]
    question_terms = set(tokenize(question))
    overlaps = _overlaps(units, question_terms, term_weight)
    overviews = {p.chunk.id for p in usable if _is_overview(p, usable)}
    return Candidates(question, question_kind(asked or question), units, vectors, query_vector,
                      question_terms, overlaps, overviews)


def select_evidence(
    question: str,
    passages: list[Passage],
    embedder: Embedder,
    *,
    query_vector: np.ndarray | None = None,
    term_weight: Callable[[str], float] | None = None,
    shown: Sequence[str] = (),
    asked: str = "",
    policy: EvidencePolicy = EVIDENCE,
    scorer: UnitScorer | None = None,
) -> EvidenceSet:
    """The units that best answer the question; `query_vector` saves re-embedding it.

    `term_weight` (the keyword index's idf) makes sharing a rare question word count for
    more than sharing "fine-tuning" or "model"; without it every word counts the same.
    `shown`: the sentences the conversation has already shown (without their citation
    markers), which are not chosen again. `asked`: the reader's own words when `question`
    is a follow-up read together with the turn before; they alone say what kind of question
    it is ("what does it cost?" after "how does QLoRA differ?" is no comparison). `policy`:
    every number the choice is tuned by, and the corpus's own words (policy.py). `scorer`:
    the learned unit scorer (unit_scorer.py); without it the hand rules score and choose.
    """
    found = candidates_for(question, passages, embedder, query_vector=query_vector,
                           term_weight=term_weight, asked=asked, policy=policy)
    if found is None:
        return EvidenceSet.empty()
    units, vectors = found.units, found.vectors
    repeats = already_shown(units, vectors, shown, embedder, policy.near_duplicate) if shown else set()
    if scorer is not None:
        scores = [float(p) for p in scorer.probabilities(found.features())]
        parts = _part_scores(found, asked or question, embedder, term_weight, scorer)
        chosen = choose_by_scores(units, vectors, scores, repeats, policy, parts)
    else:
        chosen, scores = rule_choice(found, repeats, policy)
    return _numbered(units, vectors, scores, chosen, found.question_terms, found.kind)


def _part_scores(found: Candidates, asked: str, embedder: Embedder,
                 term_weight: Callable[[str], float] | None, scorer: UnitScorer) -> list[list[float]]:
    """For a question that asks two things, the scorer's probabilities against each part."""
    parts = question_parts(asked)
    if len(parts) < 2:
        return []
    vectors = embedder.encode(parts)
    return [[float(p) for p in scorer.probabilities(found.asking(part, vector, term_weight).features())]
            for part, vector in zip(parts, vectors, strict=True)]


def rule_choice(found: Candidates, repeats: set[int],
                policy: EvidencePolicy) -> tuple[list[int], list[float]]:
    """The hand rules' choice (without a scorer) and the scores they gave each unit."""
    cosines = found.vectors @ found.query_vector
    scores = [_score(u, found.kind, float(cosines[i]) + policy.term_overlap_weight * found.overlaps[i],
                     u.passage.chunk.id in found.overviews, policy)
              for i, u in enumerate(found.units)]
    chosen = _choose(found.units, found.vectors, scores, found.kind, found.question_terms, found.overviews,
                     repeats, policy)
    return chosen, scores


def choose_by_scores(units: list[Unit], vectors: np.ndarray, scores: Sequence[float],
                     repeats: set[int] = frozenset(), policy: EvidencePolicy = EVIDENCE,
                     part_scores: Sequence[Sequence[float]] = ()) -> list[int]:
    """The learned choice. The likeliest unit leads and its section answers; for a question
    of several parts, each part's likeliest unit joins next. Then, one at a time, the unit
    likeliest to state a point the chosen ones do not already make (its probability minus
    its closeness to what is chosen) joins, with the sentence it leans on or the items it
    announces, while any unit is left whose probability is at least `policy.keep_share` of
    the lead's (`keep_share_elsewhere` outside the leading section), within `max_words`.

    Shares of the lead's rather than fixed probabilities: a question unlike the training
    ones gets lower probabilities throughout, and fixed floors then cut its answers to a
    sentence (on train/'s validation split, fixed floors cut misspelled questions' answers
    to 70 words where shares kept 92)."""
    ranked = sorted(range(len(units)), key=lambda i: -scores[i])
    order, chooser = _unread_first(units, vectors, ranked, repeats, policy.max_words, policy)
    lead = _lead(chooser, order)
    if lead is None:
        return []
    for part in part_scores:  # "what is X and how do I avoid it?": each part answered
        best = max(order, key=lambda i: part[i])
        if part[best] >= policy.keep_share * scores[lead]:
            chooser.add(best)
    section = units[lead].passage.chunk.id
    share = {True: policy.keep_share, False: policy.keep_share_elsewhere}
    floor = [scores[lead] * share[u.passage.chunk.id == section] for u in units]
    waiting = {i for i in order if scores[i] >= floor[i]} - set(chooser.chosen)
    probabilities = np.asarray(scores, dtype=np.float64)
    while waiting:
        candidates = sorted(waiting)
        closeness = (vectors[candidates] @ vectors[chooser.chosen].T).max(axis=1)
        best = candidates[int(np.argmax(probabilities[candidates] - policy.redundancy_penalty * closeness))]
        waiting.discard(best)
        chooser.add(best)
        waiting -= set(chooser.chosen)
    return chooser.chosen
def already_shown(units: list[Unit], vectors: np.ndarray, shown: Sequence[str],
                  embedder: Embedder, near_duplicate: float) -> set[int]:
    """The units the reader has read in an earlier answer: quoted there, or said again in
    the model's words (as close as two sections' definitions of one term)."""
    earlier = " ".join(" ".join(shown).split())
    # Remembered: quoted sentences are guide units embedded already, and every later turn
    # of the conversation asks about the same sentences again.
    close = (vectors @ embedder.encode_remembered(list(shown)).T).max(axis=1)
    return {i for i, u in enumerate(units)
            if " ".join(u.text.split()) in earlier or float(close[i]) > near_duplicate}


def _unread_first(units: list[Unit], vectors: np.ndarray, ranked: list[int], repeats: set[int],
                  budget: int, policy: EvidencePolicy) -> tuple[list[int], _Chooser]:
    """What the reader has already read is left out, unless it is all there is."""
    fresh = [i for i in ranked if i not in repeats]
    shown = repeats if fresh else set()
    return fresh or ranked, _Chooser(units, vectors, budget, policy.near_duplicate, shown)


def _lead(chooser: _Chooser, order: list[int]) -> int | None:
    """The first unit of `order` that can be shown; when every one leans on a sentence the
    reader has read, the first that can be shown with it."""
    lead = next((i for i in order if chooser.add(i, force=True)), None)
    if lead is None and chooser.shown:
        chooser.shown = set()
        lead = next((i for i in order if chooser.add(i, force=True)), None)
    return lead


def _choose(units: list[Unit], vectors: np.ndarray, scores: list[float], kind: str,
            question_terms: set[str], overviews: set[str], repeats: set[int] = frozenset(),
            policy: EvidencePolicy = EVIDENCE) -> list[int]:
    ranked = sorted(range(len(units)), key=lambda i: -scores[i])
    order, chooser = _unread_first(units, vectors, ranked, repeats, policy.word_budget[kind], policy)
    # The best unit leads, and its section answers. The fused ranking's favourite gets a
    # head start (it knows more than one sentence's similarity), but a category overview
    # or a section that merely shares words loses to a unit that says what was asked.
    # A category's overview is nobody's favourite when one of its terms was found too.
    ranks = [u.passage.rank for u in units if u.passage.chunk.id not in overviews]
    top = min(ranks or [u.passage.rank for u in units])
    order.sort(key=lambda i: -(scores[i] + (policy.lead_bonus if units[i].passage.rank == top else 0.0)))
    lead = _lead(chooser, order)
    if lead is None:
        return []
    lead_score = scores[lead]
    sides = {units[lead].passage.chunk.title}
    # When another section leads, the fused ranking's favourite still gets its best unit
    # in: of two sections that both look right, one of them usually is.
    favourite = next((i for i in order if units[i].passage.rank == top), lead)
    close = scores[favourite] >= lead_score - policy.favourite_margin
    if close and units[favourite].passage.chunk.title not in sides:
        chooser.add(favourite)
    for i in order:
        unit = units[i]
        same_section = unit.passage.chunk.title in sides
        if same_section:  # the answering section's units join by relevance until the budget
            chooser.add(i)
        elif kind == "comparison" and len(sides) < 2 and scores[i] >= lead_score - policy.comparison_margin:
            if chooser.add(i):
                sides.add(unit.passage.chunk.title)
        elif scores[i] >= lead_score + policy.other_section_margin:
            covered = set().union(*(set(tokenize(units[j].text)) for j in chooser.chosen))
            if (set(tokenize(unit.text)) & question_terms) - covered:  # a fact the others lack
                chooser.add(i)
    return chooser.chosen


def _numbered(units: list[Unit], vectors: np.ndarray, scores: list[float], chosen: list[int],
              question_terms: set[str], kind: str) -> EvidenceSet:
    """Passages numbered in rank order, units in reading order within a passage."""
    numbers: dict[str, int] = {}
    for passage in sorted({units[i].passage.chunk.id: units[i].passage for i in chosen}.values(),
                          key=lambda p: p.rank):
        numbers[passage.chunk.id] = len(numbers) + 1
    chosen = sorted(chosen, key=lambda i: (numbers[units[i].passage.chunk.id], units[i].position))
    items = [Evidence(numbers[units[i].passage.chunk.id], units[i].passage, units[i].text, scores[i])
             for i in chosen]
    return EvidenceSet(items, vectors[chosen], question_terms, kind)
