"""The units evidence is chosen from, and what kind of question asks for them.

A unit is a sentence of a passage, or a lead-in ending in ':' together with the list it
introduces. These patterns are the vocabulary both the hand rules and the learned unit
scorer read (evidence.py, unit_scorer.py): whether a unit leans on the one before it,
announces a list that the following sentences give, names a remedy or a cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ftchat.answering.retrieval import Passage
from ftchat.text import split_sentences

# Openers that lean on the sentence before them.
LEANING_OPENER = re.compile(
    r"^(it|its|this|these|they|their|them|those|such|that|here|both|another|however|instead|also|then|"
    r"the (first|second|third|fourth|latter|former|other|others|last|next|same|rest)|"
    r"the (main|key|common|usual) ones|one of them)\b",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s+")

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


REMEDY = re.compile(
    r"^(use|set|keep|add|filter|lower|raise|reduce|increase|try|freeze|check|start|combine|apply|always|"
    r"never|avoid|deduplicate|mask|monitor|measure|train|pick|choose|prefer|mix|replay|resize|clip|enable)\b"
    r"|\b(fix\w*|remed\w*|to avoid|to prevent|prevents?|mitigat\w*|solution|counter\w*|helps?|should|"
    r"instead|reduces?|lowers?|avoids?)\b",
    re.IGNORECASE,
)
CAUSE = re.compile(r"\b(because|so that|since|due to|causes?|caused|leads? to|which means|as a result|"
                    r"reason|so the|otherwise|without)\b", re.IGNORECASE)
ENUMERATION = re.compile(r",|\band\b|\bor\b|\bsuch as\b|\binclud\w*")


# Where a question asks a second thing: "... and how do I avoid it?", "Why ...? What ...?".
_SECOND_QUESTION = re.compile(
    r"(?:[?;]\s+|,?\s+(?:and|or|but|also)\s+(?:then\s+)?)"
    r"(?=(?:how|what|why|when|which|where|who|whether|is|are|does|do|can|should|could|would|will)\b)",
    re.IGNORECASE,
)
# "How can bias be detected and mitigated?": one subject, two things asked of it.
_TWO_VERBS = re.compile(r"^(.*?\b(?:be|is|are|being|been|get|gets)\s+)(\w+(?:ed|en))\s+(?:and|or)\s+"
                        r"(\w+(?:ed|en))\b(.*)$", re.IGNORECASE)


_QUESTION_OPENING = re.compile(
    r"^(?:what|how|why|which|who|when|where)(?:'s)?\s+(?:(?:is|are|does|do|was|were|can|should|exactly)\s+)*"
    r"(?:(?:a|an|the)\s+)?",
    re.IGNORECASE,
)
_PRONOUN = re.compile(r"\b(?:it|them|they|this|these)\b", re.IGNORECASE)


def question_parts(question: str) -> list[str]:
    """The things a question asks, each as a question of its own; one part for most."""
    text = " ".join(question.split())
    parts = [p.strip(" ,;") for p in _SECOND_QUESTION.split(text) if len(p.split()) >= 2]
    if len(parts) == 1 and (match := _TWO_VERBS.match(text)):
        head, first, second, tail = match.groups()
        parts = [f"{head}{first}{tail}", f"{head}{second}{tail}"]
    if len(parts) < 2:
        return [text]
    # "... and how do I avoid it?": the later part asks about the first part's subject.
    opening = _QUESTION_OPENING.match(parts[0])
    subject = parts[0][opening.end():].strip(" ?") if opening and opening.end() else ""
    return [parts[0], *(_PRONOUN.sub(subject, part) if subject else part for part in parts[1:])]


# A count of kinds announced in a sentence of its own: the items follow, one per sentence.
_NUMBER_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_ANNOUNCED = re.compile(
    r"\b(two|three|four|five|six) (?:main |key |broad |common |basic |major |distinct )?"
    r"(?:families|kinds|types|ways|categories|approaches|steps|stages|levers|methods|groups|parts|"
    r"components|classes|strategies|phases|forms|styles|options|variants)\b[^,;:]*\.$",
    re.IGNORECASE,
)


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

    @property
    def announced(self) -> int:
        """How many items this unit announces for the sentences after it ("fall into three
        main families."), 0 when it announces none: shown without them it promises a list
        and gives nothing."""
        match = _ANNOUNCED.search(self.text)
        if not match or self.is_list or not self.text.rstrip().endswith("."):
            return 0
        return _NUMBER_WORDS[match.group(1).lower()]


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

