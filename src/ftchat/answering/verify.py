"""Verification: is a sentence the model wrote supported by the evidence it was given?

A 135M-parameter model's typical error is one swapped word ("QLoRA is a library ..."), so a
sentence passes only when it is close in meaning to one evidence sentence and brings in no
content word that the evidence of its matched source and the question lack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ftchat.answering.evidence import GENERIC_WORDS, EvidenceSet
from ftchat.answering.policy import VERIFICATION, VerificationPolicy
from ftchat.models.embedding import Embedder
from ftchat.text import tokenize

CITATION_MARKERS = re.compile(r"\s*\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class Verdict:
    supported: bool
    n: int
    cosine: float
    novelty: float
    text: str
    item: int = -1  # the evidence sentence it matches best (index into evidence.items)


def claim_text(sentence: str) -> str:
    """What a sentence claims: without citation markers or an "Answer:" preamble."""
    text = CITATION_MARKERS.sub("", sentence).strip()
    return re.sub(r"^(answer|according to the sources?)[:,]\s*", "", text, flags=re.IGNORECASE)


def verify_sentence(sentence: str, evidence: EvidenceSet, embedder: Embedder,
                    policy: VerificationPolicy = VERIFICATION) -> Verdict:
    """Supported when close in meaning to one evidence sentence, bringing in no more new
    content words than the policy allows, adding a fact, and not turning its source around."""
    cited = cited_numbers(sentence)
    text = claim_text(sentence)
    terms = tokenize(text)
    if not evidence.items or len(text.split()) < 3 or not terms:
        return Verdict(False, 0, 0.0, 1.0, text)
    sims = evidence.vectors @ embedder.encode([text])[0]
    best = int(np.argmax(sims))
    n = evidence.items[best].n
    # Content words must come from the evidence of the matched source (or the question):
    # a small model's typical error is one swapped word ("QLoRA is a library ...").
    allowed = evidence.vocabulary_for(n) | GENERIC_WORDS
    novelty = sum(1 for t in terms if t not in allowed) / len(terms)
    # Keep the model's own citation when its source supports the sentence almost as well.
    for c in cited:
        own = [float(sims[i]) for i, e in enumerate(evidence.items) if e.n == c]
        if own and max(own) >= float(sims[best]) - policy.own_citation_slack:
            n = c
            break
    cosine = float(sims[best])
    supported = (cosine >= policy.min_cosine and novelty <= policy.max_novelty
                 and _adds_a_fact(terms, evidence) and not _flips(text, evidence.items[best].sentence))
    return Verdict(supported, n, cosine, novelty, text, best)


def _adds_a_fact(terms: list[str], evidence: EvidenceSet) -> bool:
    """False for an echo of the question: every content word is the question's own."""
    return any(t not in evidence.question_terms and t not in GENERIC_WORDS for t in terms)


_NEGATION = re.compile(r"\b(not|no|never|cannot|can't|isn't|aren't|doesn't|don't|won't|without|"
                       r"rather than|instead of|unlike|neither|nor)\b", re.IGNORECASE)


def _flips(text: str, source: str) -> bool:
    """A negation or contrast that its source sentence does not have: the cheapest sign of
    a sentence that turns its evidence around ("... rather than to repeat questions")."""
    return bool(_NEGATION.search(text)) and not _NEGATION.search(source)


def cited_numbers(text: str) -> list[int]:
    return [int(x) for group in CITATION_MARKERS.findall(text) for x in group.split(",")]


def can_still_pass(unfinished_claim: str, evidence: EvidenceSet,
                   policy: VerificationPolicy = VERIFICATION) -> bool:
    """False once an unfinished sentence (its claim text, without markers) can no longer be
    supported however it ends, so the stream check may stop decoding it.

    That is knowable early only while no new content word is allowed (max_novelty 0): one
    such word then fails the sentence. With any allowance, later words could still dilute
    it, so every sentence is decoded to its end.
    """
    if policy.max_novelty > 0:
        return True
    return evidence.all_words_allowed(unfinished_claim)

