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
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ftchat.answering.policy import EVIDENCE, EvidencePolicy
from ftchat.answering.retrieval import Passage
from ftchat.models.embedding import Embedder
from ftchat.text import split_sentences, tokenize

# Words a faithful paraphrase may add without adding a claim.
GENERIC_WORDS = frozenset(
    tokenize(
        "also allows allow lets let helps help makes make way ways method technique approach "
        "used uses useful important key main called known means mean both each one two "
        "during because often however therefore thus same kind"
    )
)

# Openers that lean on the sentence before them.
LEANING_OPENER = re.compile(
    r"^(it|its|this|these|they|their|them|those|such|that|here|both|another|however|instead|also|then|"
    r"the (first|second|third|fourth|latter|former|other|others|last|next|same|rest)|"
    r"the (main|key|common|usual) ones|one of them)\b",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s+")

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


# --- What the question asks ---------------------------------------------------------------

_KINDS: list[tuple[str, re.Pattern]] = [
    ("comparison", re.compile(r"\b(difference|differences|differ|differs|vs\.?|versus|compared (to|with)|"
                              r"comparison|better than|worse than|or should i)\b")),
    ("symptom", re.compile(r"\b(my|i'm|i am|i've|i have|we|our)\b.*\b(forg[eo]t\w*|worse|crash\w*|error|"
                           r"fails?|failing|won't|doesn't|does not|keeps?|stuck|nan|diverg\w*|overfit\w*|"
                           r"slow\w*|out of memory|oom|garbage|repeat\w*|bad|wrong|problem|issue|only|"
                           r"too (much|many|few|little|big|small|long))\b")),
    ("list", re.compile(r"^(which|what|name|list)\b.*\b(tools?|metrics?|optimi[sz]ers?|methods?|techniques?|"
                        r"options?|types?|kinds?|strategies|librar(y|ies)|frameworks?|ways?|approaches|"
                        r"steps|examples?|benchmarks?|models?|tasks|families|variants?|losses|functions|"
                        r"schedulers?|objectives?|datasets?|risks?|pitfalls?)\b|\b(list|name some|main)\b")),
    ("how_to", re.compile(r"^(how (do|can|should|would|to|much|many)|what('s| is) the best way|"
                          r"what should i|when should i|steps to|can i|should i)\b|\bhow to\b")),
    ("why", re.compile(r"^(why|what causes|how come)\b|\breason\b")),
    ("definition", re.compile(r"^(what('s| is| are| does)|define|explain|tell me about|meaning of|"
                              r"who|what was|what were|is there)\b|\bmean\b")),
    ("yes_no", re.compile(r"^(is|are|can|does|do|should|will|would|did|was)\b")),
]


def question_kind(question: str) -> str:
    """definition, list, how_to, why, comparison, symptom, yes_no or other."""
    text = " ".join(question.lower().split())
    return next((kind for kind, pattern in _KINDS if pattern.search(text)), "other")


_REMEDY = re.compile(
    r"^(use|set|keep|add|filter|lower|raise|reduce|increase|try|freeze|check|start|combine|apply|always|"
    r"never|avoid|deduplicate|mask|monitor|measure|train|pick|choose|prefer|mix|replay|resize|clip|enable)\b"
    r"|\b(fix\w*|remed\w*|to avoid|to prevent|prevents?|mitigat\w*|solution|counter\w*|helps?|should|"
    r"instead|reduces?|lowers?|avoids?)\b",
    re.IGNORECASE,
)
_CAUSE = re.compile(r"\b(because|so that|since|due to|causes?|caused|leads? to|which means|as a result|"
                    r"reason|so the|otherwise|without)\b", re.IGNORECASE)
_ENUMERATION = re.compile(r",|\band\b|\bor\b|\bsuch as\b|\binclud\w*")


# --- Units --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A sentence of a passage, or a lead-in with its list; `position` orders them."""

    passage: Passage
    position: int
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())

    @property
    def leans(self) -> bool:
        return bool(LEANING_OPENER.match(self.text))

    @property
    def is_list(self) -> bool:
        return "\n" in self.text


def passage_units(passage: Passage) -> list[Unit]:
    """The passage's sentences in reading order; a lead-in ending in ':' is joined with the
    list that follows it (or dropped, when nothing follows it)."""
    texts: list[str] = []
    for paragraph in re.split(r"\n\s*\n", passage.chunk.text.strip()):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        if lines and all(_LIST_LINE.match(line) for line in lines):
            if texts and texts[-1].endswith(":"):
                texts[-1] = "\n".join([texts[-1], *lines])
            else:
                texts.extend(lines)
            continue
        texts.extend(split_sentences(paragraph))
    return [Unit(passage, i, text) for i, text in enumerate(texts)
            if not (text.endswith(":") and "\n" not in text)]


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
        enumerations = min(len(_ENUMERATION.findall(unit.text)), policy.max_enumerations)
        score += policy.enumeration_bonus * enumerations + (policy.list_bonus if unit.is_list else 0.0)
    elif kind in ("how_to", "symptom") and _REMEDY.search(unit.text):
        score += policy.remedy_bonus
    elif kind == "why" and _CAUSE.search(unit.text):
        score += policy.cause_bonus
    return score


class _Chooser:
    """Adds units within the word budget, each leaning unit with its predecessor."""

    def __init__(self, units: list[Unit], vectors: np.ndarray, budget: int,
                 near_duplicate: float) -> None:
        self.units, self.vectors, self.budget = units, vectors, budget
        self.near_duplicate = near_duplicate
        self.index = {(u.passage.chunk.id, u.position): i for i, u in enumerate(units)}
        self.chosen: list[int] = []
        self.words = 0

    def _with_predecessors(self, i: int) -> list[int] | None:
        group = [i]
        while self.units[group[0]].leans:
            unit = self.units[group[0]]
            before = self.index.get((unit.passage.chunk.id, unit.position - 1))
            if before is None:
                return None  # its subject is not a usable unit: never shown alone
            group.insert(0, before)
        return [j for j in group if j not in self.chosen]

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
) -> EvidenceSet:
    """The units that best answer the question; `query_vector` saves re-embedding it.

    `term_weight` (the keyword index's idf) makes sharing a rare question word count for
    more than sharing "fine-tuning" or "model"; without it every word counts the same.
    `shown`: the sentences the conversation has already shown (without their citation
    markers), which are not chosen again. `asked`: the reader's own words when `question`
    is a follow-up read together with the turn before; they alone say what kind of question
    it is ("what does it cost?" after "how does QLoRA differ?" is no comparison). `policy`:
    every number the choice is tuned by, and the corpus's own words (policy.py).
    """
    if not passages:
        return EvidenceSet.empty()
    usable = _usable_passages(passages, policy)
    units = _candidates(question, usable, policy)
    if not units:
        return EvidenceSet.empty()
    kind = question_kind(asked or question)
    vectors = embedder.encode_remembered([u.text for u in units])
    if query_vector is None:
        query_vector = embedder.encode([question])[0]
    question_terms = set(tokenize(question))
    weight = term_weight or (lambda term: 1.0)
    total = max(sum(weight(t) for t in question_terms), 1e-9)

    def overlap(unit: Unit) -> float:
        return sum(weight(t) for t in set(tokenize(unit.text)) & question_terms) / total

    overviews = {p.chunk.id for p in usable if _is_overview(p, usable)}
    scores = [
        _score(u, kind, float(vectors[i] @ query_vector) + policy.term_overlap_weight * overlap(u),
               u.passage.chunk.id in overviews, policy)
        for i, u in enumerate(units)
    ]
    repeats = already_shown(units, vectors, shown, embedder, policy.near_duplicate) if shown else set()
    chosen = _choose(units, vectors, scores, kind, question_terms, overviews, repeats, policy)
    return _numbered(units, vectors, scores, chosen, question_terms, kind)


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


def _choose(units: list[Unit], vectors: np.ndarray, scores: list[float], kind: str,
            question_terms: set[str], overviews: set[str], repeats: set[int] = frozenset(),
            policy: EvidencePolicy = EVIDENCE) -> list[int]:
    ranked = sorted(range(len(units)), key=lambda i: -scores[i])
    # What the reader has already read is left out, unless it is all there is.
    order = [i for i in ranked if i not in repeats] or ranked
    chooser = _Chooser(units, vectors, policy.word_budget[kind], policy.near_duplicate)
    # The best unit leads, and its section answers. The fused ranking's favourite gets a
    # head start (it knows more than one sentence's similarity), but a category overview
    # or a section that merely shares words loses to a unit that says what was asked.
    # A category's overview is nobody's favourite when one of its terms was found too.
    ranks = [u.passage.rank for u in units if u.passage.chunk.id not in overviews]
    top = min(ranks or [u.passage.rank for u in units])
    order.sort(key=lambda i: -(scores[i] + (policy.lead_bonus if units[i].passage.rank == top else 0.0)))
    lead = next(i for i in order if chooser.add(i, force=True))
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
