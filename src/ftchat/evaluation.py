"""The eval set: retrieval quality, the gate's calibration, and the quality of answers.

Rows are JSON Lines: {"question", "expected_terms": [...], "answerable": bool} and an
optional "history": [earlier questions] for follow-up questions. A passage "hits" when
any expected term occurs in its title or text, case-insensitively.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import answer as ans
from .api import Assistant
from .config import GATE_FILE, REPO_ROOT
from .jsonl import read_lines
from .retrieval import Passage
from .stats import percentile

DEFAULT_EVAL_FILE = REPO_ROOT / "eval" / "eval.jsonl"


@dataclass(frozen=True)
class EvalRow:
    question: str
    expected_terms: tuple[str, ...]
    answerable: bool
    history: tuple[str, ...] = ()


class EvalFileError(ValueError):
    pass


def load_rows(path: Path = DEFAULT_EVAL_FILE) -> list[EvalRow]:
    """The rows of an eval file; the first malformed row stops it, naming file and line."""
    rows = []
    for line in read_lines(path):
        try:
            if line.error:
                raise ValueError(line.error)
            rows.append(_eval_row(line.value))
        except ValueError as exc:
            raise EvalFileError(f"{path}:{line.number}: {exc}") from None
    if not rows:
        raise EvalFileError(f"{path} has no eval rows")
    return rows


def _eval_row(data: object) -> EvalRow:
    if not isinstance(data, dict):
        raise ValueError(f"an eval row is a JSON object, not {type(data).__name__}")
    if not isinstance(data.get("question"), str) or not data["question"].strip():
        raise ValueError('an eval row needs a non-empty "question" string')
    for key in ("expected_terms", "history"):
        if not isinstance(data.get(key, []), list):
            raise ValueError(f'"{key}" must be a list of strings')
    if not isinstance(data.get("answerable", True), bool):
        raise ValueError('"answerable" must be true or false')
    return EvalRow(
        question=data["question"],
        expected_terms=tuple(str(t) for t in data.get("expected_terms", [])),
        answerable=data.get("answerable", True),
        history=tuple(str(h) for h in data.get("history", [])),
    )


def hits(passage: Passage, terms: tuple[str, ...]) -> bool:
    haystack = f"{passage.chunk.title}\n{passage.chunk.text}".lower()
    return any(term.lower() in haystack for term in terms)


# --- Retrieval --------------------------------------------------------------------------


@dataclass
class RetrievalReport:
    questions: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    misses: list[str] = field(default_factory=list)


def evaluate_retrieval(assistant: Assistant, rows: list[EvalRow], k: int = 5) -> RetrievalReport:
    scored = [r for r in rows if r.answerable and r.expected_terms]
    first_hits: list[int | None] = []
    misses = []
    for row in scored:
        passages = assistant.search(ans.condense(row.question, list(row.history)), k)
        rank = next((p.rank for p in passages if hits(p, row.expected_terms)), None)
        first_hits.append(rank)
        if rank is None:
            misses.append(row.question)
    n = max(len(scored), 1)
    return RetrievalReport(
        questions=len(scored),
        recall_at_1=sum(1 for r in first_hits if r == 1) / n,
        recall_at_5=sum(1 for r in first_hits if r is not None and r <= k) / n,
        mrr=sum(1 / r for r in first_hits if r) / n,
        misses=misses,
    )


# --- Gate calibration -------------------------------------------------------------------


def gate_scores(assistant: Assistant, rows: list[EvalRow]) -> list[tuple[float, bool]]:
    """The gate's input (best cosine similarity, or 2.0 when a rare term decides) for each
    row, with whether the row is in scope."""
    result = []
    retriever = assistant.retriever
    for row in rows:
        query = ans.condense(row.question, list(row.history))
        passages = assistant.search(query)
        # A question naming a rare section term is covered whatever the threshold.
        score = max(p.dense for p in passages)
        if ans.is_covered(passages, 2.0, retriever.rare_terms(query)):
            score = 2.0
        result.append((score, row.answerable))
    return result


def calibrate(scores: list[tuple[float, bool]]) -> dict:
    """The threshold that maximises the worse of in-scope and out-of-scope accuracy.

    Among equally good thresholds, take the middle of the widest gap, so that a question
    near the boundary is not decided by a hair.
    """
    inside = sorted(s for s, a in scores if a)
    outside = sorted(s for s, a in scores if not a)
    candidates = sorted({s for s, _ in scores if s <= 1.0})
    best = None
    for low, high in zip(candidates, candidates[1:] + [candidates[-1] + 0.02], strict=True):
        t = (low + high) / 2
        acc_in = sum(1 for s in inside if s >= t) / max(len(inside), 1)
        acc_out = sum(1 for s in outside if s < t) / max(len(outside), 1)
        key = (min(acc_in, acc_out), acc_in + acc_out, high - low)
        if best is None or key > best[0]:
            best = (key, t, acc_in, acc_out)
    assert best is not None
    _, threshold, acc_in, acc_out = best
    return {
        "threshold": round(threshold, 4),
        "in_scope_accuracy": round(acc_in, 4),
        "out_of_scope_accuracy": round(acc_out, 4),
        "in_scope_questions": len(inside),
        "out_of_scope_questions": len(outside),
        "calibrated_at": time.strftime("%Y-%m-%d"),
    }


def cross_validate(scores: list[tuple[float, bool]], folds: int = 5) -> dict:
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
        threshold = calibrate(train)["threshold"]
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


def write_calibration(result: dict, path: Path = GATE_FILE) -> None:
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


# --- Answers ----------------------------------------------------------------------------


@dataclass
class AnswerReport:
    questions: int
    in_scope_answered: float
    out_of_scope_declined: float
    citation_validity: float
    support_rate: float
    model_sentences_kept: float
    extractive_rate: float
    first_token_ms_p50: float
    total_ms_p50: float
    total_ms_p95: float
    failures: list[dict] = field(default_factory=list)


def citation_valid(answer: ans.Answer, terms: tuple[str, ...]) -> bool:
    """Every [n] resolves to a citation, and some cited passage contains an expected term."""
    numbers = {int(n) for n in ans.cited_numbers(answer.text)}
    listed = {c.n for c in answer.citations}
    if not numbers or not numbers <= listed:
        return False
    return not terms or any(hits(c.passage, terms) for c in answer.citations)


def evaluate_answers(assistant: Assistant, rows: list[EvalRow]) -> AnswerReport:
    answered_in = declined_out = valid = cited_answers = 0
    supported = sentences = kept = written = extractive = 0
    first, total = [], []
    failures = []
    embedder = assistant.retriever.embedder
    for row in rows:
        answer = assistant.ask(row.question, list(row.history))
        first.append(answer.timings["first_token_ms"])
        total.append(answer.timings["total_ms"])
        if row.answerable:
            answered_in += answer.answerable
        else:
            declined_out += not answer.answerable
        if answer.answerable != row.answerable:
            failures.append({"question": row.question, "problem": "gate", "answer": answer.text})
        if not answer.answerable:
            continue
        extractive += answer.mode == "extractive"
        cited_answers += 1
        if citation_valid(answer, row.expected_terms if row.answerable else ()):
            valid += 1
        else:
            failures.append({"question": row.question, "problem": "citation", "answer": answer.text})
        evidence = ans.EvidenceSet.from_citations(answer.citations, embedder, answer.search_query)
        for sentence in ans.answer_sentences(answer.text):
            sentences += 1
            supported += ans.verify_sentence(sentence, evidence, embedder).supported
        if answer.mode == "generated":
            kept_here = len(ans.answer_sentences(answer.text))
            kept += kept_here
            written += kept_here + len(answer.dropped_sentences)
        else:
            written += len(answer.dropped_sentences)
    n_in = sum(1 for r in rows if r.answerable)
    n_out = len(rows) - n_in
    return AnswerReport(
        questions=len(rows),
        in_scope_answered=answered_in / max(n_in, 1),
        out_of_scope_declined=declined_out / max(n_out, 1),
        citation_validity=valid / max(cited_answers, 1),
        support_rate=supported / max(sentences, 1),
        model_sentences_kept=kept / max(written, 1),
        extractive_rate=extractive / max(cited_answers, 1),
        first_token_ms_p50=percentile(first, 50),
        total_ms_p50=percentile(total, 50),
        total_ms_p95=percentile(total, 95),
        failures=failures,
    )
