"""The gate: does the guide cover this question? Decided from retrieval, never by the model.

One function, `decide`, turns a question's passages into a decision and the score it was
made on; the answer path and `ftchat eval --calibrate` both call it, so the threshold is
fitted on exactly the score the pipeline compares with it. The threshold itself is fitted
by `calibrate` and saved to gate.json beside this module (read by config.Settings).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Literal

from ftchat.answering.policy import GATE, GatePolicy
from ftchat.answering.retrieval import Passage
from ftchat.index.keyword import KeywordIndex
from ftchat.text import tokenize

# A name as people write one: "ALiBi", "GaLore", "KTO", or "Adafactor" in mid-sentence.
_NAME = re.compile(r"(?<![\w-])[A-Z][A-Za-z0-9]+(?![\w-])")
_SENTENCE_START = re.compile(r"(?:^|[.?!:]\s+)$")
# Where a question names what it asks about: "What is X", "How does X ...", "Is the X ...",
# "using X", "A vs X"; and "X vs B", "X (...)" after it.
_ASKS_ABOUT = re.compile(
    r"(?i)(?:\b(?:what(?:'s| is| are| does| do)|how (?:does|do|is|are|can)|explain|define|is|are|about"
    r"|use|using|with|tried|try)|\bvs\.?|\bversus)\s+(?:the\s+|an?\s+)?$"
)
_BEFORE_MORE = re.compile(r"(?i)\s*(?:\(|(?:vs\.?|versus)\s)")


# Scores that decide whatever the threshold (any fitted threshold lies between them): a
# question naming a rare term that heads a top section is covered, one naming something the
# guide never mentions is not.
RARE_TITLE_TERM_SCORE = 2.0
UNKNOWN_NAME_SCORE = -1.0

Reason = Literal["similar", "rare title term", "unknown name", "not similar", "no passages"]


@dataclass(frozen=True)
class GateDecision:
    answerable: bool
    score: float  # what the threshold is compared with (`measure`), or a deciding score above
    reason: Reason
    unknown_names: list[str] = field(default_factory=list)
    measure: Literal["learned", "cosine"] = "cosine"


def learned_probability(passages: list[Passage]) -> float | None:
    """The learned ranker's belief that its best passage answers the question (0..1), or
    None when the passages were not reranked. A probability rather than the logit, so that
    the deciding scores above (2.0 and -1.0) bracket it as they bracket a cosine."""
    logits = [p.learned for p in passages if p.learned is not None]
    return 1.0 / (1.0 + math.exp(-max(logits))) if logits else None


def decide(passages: list[Passage], *, question: str, query: str, keyword: KeywordIndex,
           threshold: float, learned_threshold: float | None = None) -> GateDecision:
    """Answerable when the learned ranker believes its best passage answers the question
    (when it reranked them and its threshold is fitted: `learned_threshold`), else when the
    best passage is close enough in meaning (`threshold` on the cosine); or when the
    question names a rare term that heads one of the top sections; never when it names
    something the guide does not mention at all (`unknown_names`), or nothing was found.

    The rare-term rule is for acronyms the embedder never learned ("what is LLRD?"): their
    cosine similarity is low, yet a section titled with the exact term clearly covers them.
    `question` is the question as asked (its names), `query` the one retrieved with (a
    follow-up read with its conversation).
    """
    unknown = unknown_names(question, keyword)
    if not passages:
        return GateDecision(False, UNKNOWN_NAME_SCORE, "no passages", unknown)
    if unknown:
        return GateDecision(False, UNKNOWN_NAME_SCORE, "unknown name", unknown)
    rare = rare_terms(query, keyword)
    if any(set(tokenize(p.chunk.title)) & rare for p in passages[:3]):
        return GateDecision(True, RARE_TITLE_TERM_SCORE, "rare title term")
    learned = learned_probability(passages)
    if learned is not None and learned_threshold is not None:
        covered = learned >= learned_threshold
        return GateDecision(covered, learned, "similar" if covered else "not similar", measure="learned")
    best = max(p.dense for p in passages)
    return GateDecision(best >= threshold, best, "similar" if best >= threshold else "not similar")


def rare_terms(question: str, keyword: KeywordIndex, policy: GatePolicy = GATE) -> set[str]:
    """Question words that occur in only a few chunks (names, acronyms), not stop words."""
    postings = keyword.postings
    limit = max(policy.rare_min_chunks, len(keyword.doc_lengths) // policy.rare_one_in)
    return {
        t for t in tokenize(question)
        if len(t) >= policy.rare_min_letters and not t.isdigit() and 0 < len(postings.get(t, ())) <= limit
    }

def unknown_names(question: str, keyword: KeywordIndex) -> list[str]:
    """Names the question asks about that occur nowhere in the index, not even as a word.

    "What is DoRA?" asks about something the guide never mentions, however close
    LoRA's section comes in meaning. Only a name in the place of the question's subject
    counts: "Can my model work for Spanish users?" or "how much VRAM does it need?" is
    still about the guide. On train/questions.jsonl this flags 38 of the 94 questions the
    guide does not cover and none of the 1,671 it does (any unknown name: 64 and 7).
    """
    postings = keyword.postings
    names = []
    for match in _NAME.finditer(question):
        word, before = match.group(), question[: match.start()]
        plain = not any(c.isupper() or c.isdigit() for c in word[1:])
        if plain and _SENTENCE_START.search(before):
            continue  # a capital that only opens a sentence names nothing
        subject = _ASKS_ABOUT.search(before) or _BEFORE_MORE.match(question[match.end():])
        terms = tokenize(word)
        if subject and terms and not any(t in postings for t in terms) and word not in names:
            names.append(word)
    return names


NOT_COVERED = "The guide doesn't cover that."



def closest_sections(passages: list[Passage], policy: GatePolicy = GATE) -> list[Passage]:
    """The best distinct sections for a declined question, if they are genuinely close: a
    section far from the question would only mislead as "closest"."""
    seen: set[str] = set()
    result = []
    for p in passages:
        if p.dense < policy.close_min_cosine or p.chunk.title in seen:
            continue
        seen.add(p.chunk.title)
        result.append(p)
        if len(result) == policy.closest_limit:
            break
    return result


def declined_text(sections: list[Passage], unknown_names: list[str] | None = None) -> str:
    text = NOT_COVERED
    if unknown_names:
        text += f" It never mentions {' or '.join(unknown_names)}."
    if not sections:
        return text
    titles = "; ".join(p.chunk.title for p in sections)
    return f"{text} The closest sections are: {titles}."


# --- Fitting the threshold (`make calibrate`) ---------------------------------------------


def calibrate(scores: list[tuple[float, bool]], answered_at_least: float | None = None) -> dict:
    """The threshold that maximises the worse of in-scope and out-of-scope accuracy; or,
    with `answered_at_least`, the one that declines most out-of-scope questions while still
    answering that share of in-scope ones.

    Among equally good thresholds, take the middle of the widest gap, so that a question
    near the boundary is not decided by a hair.
    """
    inside = sorted(s for s, a in scores if a)
    outside = sorted(s for s, a in scores if not a)
    # The rare-term score passes whatever the threshold: no candidate between it and the cosines.
    candidates = sorted({s for s, _ in scores if s < RARE_TITLE_TERM_SCORE})
    best = None
    for low, high in zip(candidates, candidates[1:] + [candidates[-1] + 0.02], strict=True):
        t = (low + high) / 2
        acc_in = sum(1 for s in inside if s >= t) / max(len(inside), 1)
        acc_out = sum(1 for s in outside if s < t) / max(len(outside), 1)
        if answered_at_least is None:
            key = (min(acc_in, acc_out), acc_in + acc_out, high - low)
        else:
            key = (acc_in >= answered_at_least, acc_out, acc_in, high - low)
        if best is None or key > best[0]:
            best = (key, t, acc_in, acc_out)
    assert best is not None
    _, threshold, acc_in, acc_out = best
    return {
        "threshold": round(threshold, 4),
        "criterion": ("balanced" if answered_at_least is None
                      else f"most declined while answering at least {answered_at_least:.0%}"),
        "in_scope_accuracy": round(acc_in, 4),
        "out_of_scope_accuracy": round(acc_out, 4),
        "in_scope_questions": len(inside),
        "out_of_scope_questions": len(outside),
        "calibrated_at": time.strftime("%Y-%m-%d"),
    }


def cross_validate(scores: list[tuple[float, bool]], folds: int = 5,
                   answered_at_least: float | None = None) -> dict:
    """Gate accuracy on questions the threshold was not calibrated on.

    Row i goes to fold i % folds; each fold is scored with a threshold calibrated on the
    others. The committed threshold is fitted on all rows, so its own accuracy is
    optimistic: this is the figure to expect on new questions.
    """
    right_in = right_out = n_in = n_out = 0
    thresholds = []
    for fold in range(folds):
        train = [row for i, row in enumerate(scores) if i % folds != fold]
        test = [row for i, row in enumerate(scores) if i % folds == fold]
        if not any(a for _, a in train) or all(a for _, a in train) or not test:
            continue
        threshold = calibrate(train, answered_at_least)["threshold"]
        thresholds.append(threshold)
        for score, answerable in test:
            if answerable:
                n_in += 1
                right_in += score >= threshold
            else:
                n_out += 1
                right_out += score < threshold
    return {
        "folds": len(thresholds),
        "in_scope_accuracy": round(right_in / max(n_in, 1), 4),
        "out_of_scope_accuracy": round(right_out / max(n_out, 1), 4),
        "thresholds": thresholds,
    }
