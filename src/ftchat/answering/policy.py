"""Every number the answer path is tuned by, named once, with where its value came from.

Most were set by hand while reading answers to eval/eval.jsonl (the set earlier work was
tuned against; heldout.jsonl and blind.jsonl were never used to choose them). None was
fitted by a procedure; the issues that replace them with learned parts start from here.
"Guess" marks a value nobody measured.

The pattern lists the rules read (question kinds, remedies, causes, leaning openers) stay
beside the rules in evidence.py: they are the rules' vocabulary, not settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


def _budgets() -> Mapping[str, int]:
    # Words per answer by kind of question: a definition is a sentence or two, a list or a
    # diagnosis more. Set on eval.jsonl (nugget recall 0.53 -> 0.56 at the old answers' length).
    return MappingProxyType({"definition": 90, "yes_no": 90, "why": 100, "other": 100, "how_to": 110,
                             "symptom": 120, "list": 120, "comparison": 130})


@dataclass(frozen=True)
class EvidencePolicy:
    """How evidence.select_evidence chooses the sentences an answer is built from."""

    # Passages -----------------------------------------------------------------------------
    # At most this many retrieved passages are read for evidence (guess: top_k is 5 too).
    max_passages: int = 5
    # A passage whose cosine lies further than this below the best one's is not read (guess).
    usable_cosine_gap: float = 0.25
    # Units shorter than this many words are never evidence: headings and fragments (guess).
    min_unit_words: int = 4

    # Scoring a unit: its cosine to the question, plus and minus these --------------------
    # Weight of the idf-weighted share of question terms it contains (hand-set on eval.jsonl).
    term_overlap_weight: float = 0.15
    # Per rank below the first, so the fused ranking's order breaks near-ties (hand-set).
    rank_penalty: float = 0.02
    # Per pair of backticks (code spans), up to max_code_spans: code reads badly as prose (guess).
    code_span_penalty: float = 0.1
    max_code_spans: int = 3
    # A section's opening sentence names and defines its subject: bonus for definitions,
    # comparisons and yes/no questions, and a smaller one otherwise (hand-set on eval.jsonl).
    opening_bonus_defining: float = 0.14
    opening_bonus_other: float = 0.06
    # A category's own text when one of its term sections was found too (hand-set on eval.jsonl).
    overview_penalty: float = 0.15
    # "Which tools ...": per enumeration mark (comma, and, or, such as), up to max_enumerations,
    # and for a bulleted list (hand-set on eval.jsonl).
    enumeration_bonus: float = 0.025
    max_enumerations: int = 6
    list_bonus: float = 0.1
    # A remedy for a symptom or how-to question, a cause for a why question (hand-set).
    remedy_bonus: float = 0.08
    cause_bonus: float = 0.08

    # Choosing ---------------------------------------------------------------------------
    # Head start of the fused ranking's favourite section when the lead is chosen (hand-set).
    lead_bonus: float = 0.08
    # The favourite's best unit still joins when within this of the lead (hand-set on eval.jsonl).
    favourite_margin: float = 0.2
    # Another section's unit joins, outside a comparison, only this far above the lead and
    # with a question term the chosen ones lack: looser mostly brought neighbours' filler.
    other_section_margin: float = 0.05
    # The second side of a comparison may score this far below the lead (hand-set).
    comparison_margin: float = 0.15
    # Two units this close in meaning say the same thing: the second is left out (hand-set;
    # two sections often define a term in near-identical words). Also used for follow-ups'
    # "already shown".
    near_duplicate: float = 0.85
    word_budget: Mapping[str, int] = field(default_factory=_budgets)

    # The learned choice (unit_scorer.py) -------------------------------------------------
    # All chosen on train/'s validation split by `make train-scorer`, which records them in
    # unit_scorer.json (loaded over these by with_choice). A unit of the leading section
    # joins while the scorer gives it at least this share of the lead's probability of
    # stating one of the question's points; a unit of another section needs the second
    # share (an answer reads best from one place, and a neighbour's sentence is more often
    # filler).
    keep_share: float = 0.3
    keep_share_elsewhere: float = 0.5
    # Among those, the next is the likeliest minus this times its cosine to the closest
    # chosen unit: two sentences saying one thing state one point.
    redundancy_penalty: float = 0.2
    # However many units qualify, the answer stops before this many words.
    max_words: int = 110

    # The corpus's own words (documents.corpus.CorpusProfile) --------------------------------
    # Sentences about the document rather than its subject, never evidence unless the
    # question is about the document itself: generic words, plus the corpus's own pattern.
    about_the_document: re.Pattern = re.compile(r"\b(this|the) (guide|category|section|chapter)\b",
                                                re.IGNORECASE)
    # The top heading of the corpus's section about itself ("About this guide"), if any.
    about_section: str = ""

    def with_choice(self, choice: Mapping[str, float]) -> EvidencePolicy:
        """This policy with the learned choice's settings a scorer file was fitted with;
        names this version does not know are ignored, so an older file still loads."""
        known = {"keep_share", "keep_share_elsewhere", "redundancy_penalty", "max_words"}
        return replace(self, **{k: v for k, v in choice.items() if k in known})

    def for_corpus(self, about_section: str, self_reference: str) -> EvidencePolicy:
        """This policy with a corpus's own section about itself and its self-references."""
        pattern = self.about_the_document.pattern
        if self_reference:
            pattern = f"{pattern}|{self_reference}"
        return replace(self, about_section=about_section,
                       about_the_document=re.compile(pattern, re.IGNORECASE))


@dataclass(frozen=True)
class VerificationPolicy:
    """When verify.verify_sentence accepts a sentence the model wrote."""

    # Cosine to its best evidence sentence (hand-set: below it, paraphrases drifted).
    min_cosine: float = 0.6
    # Share of its content words that the matched source's evidence and the question lack.
    # 0: none. streamcheck stops a sentence early on its first such word, which is only
    # right while this is 0 (verify.can_still_pass checks it).
    max_novelty: float = 0.0
    # The model's own citation is kept when its source scores within this of the best (guess).
    own_citation_slack: float = 0.05
    # When no kept sentence cites the top-ranked section, its best evidence sentence is added
    # if it scores within this of the best evidence (hand-set).
    lead_slack: float = 0.1


@dataclass(frozen=True)
class GatePolicy:
    """What a declined answer offers; the threshold itself is fitted (gate.json)."""

    # A declined question lists sections only at this cosine or more: "the boiling point of
    # ethanol" scores 0.14 against mixed precision, "Tell me a joke." 0.19 against LIME
    # (hand-set: 0.75 x the gate's 0.3069 of 2026-11-26; a floor of its own, so that a
    # refitted threshold does not change which sections a decline offers).
    close_min_cosine: float = 0.23
    # How many close sections a decline lists (guess).
    closest_limit: int = 3
    # A rare term occurs in at most rare_min_chunks chunks, or one in rare_one_in of them when
    # that is more, and has at least rare_min_letters letters (guesses).
    rare_min_chunks: int = 3
    rare_one_in: int = 100
    rare_min_letters: int = 3
    # `ftchat calibrate` fits a threshold that answers at least this share of in-scope
    # questions and declines as many others as it can then (a wrongly declined question
    # costs the user more than an answer from the closest section). train/'s out-of-scope
    # questions sit close to the guide: balancing the two error rates there declined one
    # in five in-scope questions.
    answered_at_least: float = 0.98


EVIDENCE = EvidencePolicy()
VERIFICATION = VerificationPolicy()
GATE = GatePolicy()
