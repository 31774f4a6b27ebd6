"""The eval set: retrieval quality, the gate's calibration, and the quality of answers.

Rows are JSON Lines: {"question", "expected_terms": [...], "answerable": bool} and an
optional "history": [earlier questions] for follow-up questions. A passage "hits" when
any expected term occurs in its title or text, case-insensitively.

In-scope rows may also carry "nuggets": [["alt", "alt"], ...], the key facts a good answer
states (a fact is stated when any alternative occurs in the answer text, case-insensitively),
and "sections": [heading paths joined with " › "], the sections that answer the question.
A hit says the right section was found; only nuggets say the answer told the user.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ftchat.answering import answer as ans
from ftchat.answering import conversation, gate, verify
from ftchat.answering.retrieval import Passage
from ftchat.api import Assistant
from ftchat.config import GATE_FILE, REPO_ROOT
from ftchat.documents.corpus import load_profile
from ftchat.files import read_lines, write_text_atomically
from ftchat.models.embedding import Embedder
from ftchat.text import split_sentences
from ftchat.tools.stats import percentile

DEFAULT_EVAL_FILE = REPO_ROOT / "eval" / "eval.jsonl"


@dataclass(frozen=True)
class EvalRow:
    question: str
    expected_terms: tuple[str, ...]
    answerable: bool
    history: tuple[str, ...] = ()
    nuggets: tuple[tuple[str, ...], ...] = ()
    sections: tuple[str, ...] = ()


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
    for key in ("expected_terms", "history", "sections"):
        if not isinstance(data.get(key, []), list):
            raise ValueError(f'"{key}" must be a list of strings')
    if not isinstance(data.get("answerable", True), bool):
        raise ValueError('"answerable" must be true or false')
    return EvalRow(
        question=data["question"],
        expected_terms=tuple(str(t) for t in data.get("expected_terms", [])),
        answerable=data.get("answerable", True),
        history=tuple(str(h) for h in data.get("history", [])),
        nuggets=_nuggets(data.get("nuggets", [])),
        sections=tuple(str(t) for t in data.get("sections", [])),
    )


def _nuggets(value: object) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list) or not all(isinstance(n, list) and n for n in value):
        raise ValueError("nuggets must be a list of non-empty lists of alternative phrasings")
    return tuple(tuple(str(alt) for alt in nugget) for nugget in value)


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
        passages = assistant.search(conversation.condense(row.question, list(row.history)), k)
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


def gate_scores(assistant: Assistant, rows: list[EvalRow]) -> tuple[list[tuple[float, bool]], str]:
    """The gate's score (gate.decide) for each row, with whether the row is in scope; and
    what the scores measure ("learned" or "cosine": every row is decided the same way)."""
    decisions = [(assistant.gate(row.question, list(row.history)), row.answerable) for row in rows]
    measures = {d.measure for d, _ in decisions}
    measure = "learned" if "learned" in measures else "cosine"
    return [(d.score, answerable) for d, answerable in decisions], measure


def write_calibration(fit: dict, measure: str = "cosine", path: Path = GATE_FILE) -> None:
    """Save a fitted threshold where Settings reads the one for its measure, keeping the other."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    if measure == "learned":
        saved["learned"] = fit
    else:
        learned = fit.get("learned", saved.get("learned"))
        saved = {**fit, "learned": learned} if learned else dict(fit)
    write_text_atomically(path, json.dumps(saved, indent=2) + "\n")


# --- What the answer says -----------------------------------------------------------------

# The grader's own reading rules, taken from the judging rubric's "readable" (a dangling
# "It"/"This", a lead-in with nothing after it, code fragments, a sentence about the guide
# instead of the subject). They are written apart from answering/evidence.py on purpose:
# graded with the selector's own patterns, every answer passed by construction.
_LIST_ITEM = re.compile(r"^\s*([-*\u2022]|\d+[.)])\s")
# A sentence whose subject is in the sentence before it: a pronoun, a demonstrative or an
# ordinal standing for something named earlier.
_DANGLING = re.compile(
    r"^(it|its|it's|this|that|these|those|they|them|their|such|both|either|neither|another|"
    r"the (former|latter|first|second|third|last|next|other|others|rest|same)|"
    r"(this|that|these|those|such) (one|ones|method|approach|technique|step|way|kind)|"
    r"one of (them|these|those)|however|instead|also|then|likewise|similarly)\b",
    re.IGNORECASE,
)
# Words about the document and its layout rather than about fine-tuning.
_ABOUT_THE_DOCUMENT = re.compile(
    r"\b(this|the|our) (guide|document|category|categories|section|sections|chapter)\b"
    r"|\bpart [0-9]+\b|\b(below|above) (we|you) (will|can)\b",
    re.IGNORECASE,
)
# Code rather than prose: a fenced block, or a sentence at least half of whose characters
# are inside `code spans` (naming `Trainer` or `report_to` in a sentence still reads as prose).
_CODE_SPAN = re.compile(r"`[^`]*`")


def _is_code(text: str) -> bool:
    inside = sum(len(span) for span in _CODE_SPAN.findall(text))
    return "```" in text or inside >= len(text) / 2
# Two answer sentences this close in meaning say the same thing (as two sections'
# definitions of one term do); the grader's own choice, not the selector's.
SAME_MEANING = 0.85


def stated_nuggets(text: str, nuggets: tuple[tuple[str, ...], ...]) -> list[bool]:
    """For each nugget, whether the answer text states it (any alternative, any case)."""
    haystack = verify.CITATION_MARKERS.sub("", text).lower()
    return [any(alt.lower() in haystack for alt in nugget) for nugget in nuggets]


def _source_sentences(answer: ans.Answer, n: int) -> list[str]:
    citation = next((c for c in answer.citations if c.n == n), None)
    return split_sentences(citation.passage.chunk.text) if citation else []


def _follows_in_source(answer: ans.Answer, previous: str, sentence: str) -> bool:
    """True when `previous` comes right before `sentence` in the section both cite, so a
    leaning opener ("It ...") has its subject in front of it."""
    cited = ans.cited_numbers(sentence)
    if not cited or cited[:1] != ans.cited_numbers(previous)[:1]:
        return False
    source = _source_sentences(answer, cited[0])
    here, before = verify.claim_text(sentence), verify.claim_text(previous)
    if here not in source:  # the model's own wording: its subject is the sentence before
        return True
    position = source.index(here)
    return position > 0 and source[position - 1] == before


def broken_sentences(answer: ans.Answer, about_the_guide_ok: bool = False) -> list[tuple[str, str]]:
    """(sentence, why) for each sentence a reader cannot take as it stands: a lead-in ending
    in ':' with nothing after it, an opener leaning on a sentence that is not shown, code,
    or a sentence about the guide or a category rather than the subject."""
    sentences = split_sentences(answer.text)
    problems = []
    for i, sentence in enumerate(sentences):
        claim = verify.claim_text(sentence)
        following = sentences[i + 1] if i + 1 < len(sentences) else ""
        if claim.endswith(":") and not _LIST_ITEM.match(following):
            problems.append((sentence, "a lead-in with nothing after it"))
        elif _DANGLING.match(claim) and not (
            i and _follows_in_source(answer, sentences[i - 1], sentence)
        ):
            problems.append((sentence, "leans on a sentence that is not shown"))
        elif not about_the_guide_ok and _ABOUT_THE_DOCUMENT.search(claim):
            problems.append((sentence, "about the guide, not the subject"))
        elif _is_code(claim):
            problems.append((sentence, "code, not prose"))
    return problems


def _in_sections(title: str, sections: tuple[str, ...]) -> bool:
    return any(title == s or title.startswith(s + " › ") for s in sections)


def off_topic_sentences(answer: ans.Answer, sections: tuple[str, ...]) -> list[str]:
    """Sentences whose cited sections are none of the sections that answer the question."""
    if not sections:
        return []
    titles = {c.n: c.passage.chunk.title for c in answer.citations}
    return [
        sentence for sentence in split_sentences(answer.text)
        if not any(_in_sections(titles.get(n, ""), sections) for n in ans.cited_numbers(sentence))
    ]


def answer_words(answer: ans.Answer) -> int:
    return len(verify.CITATION_MARKERS.sub("", answer.text).split())


@dataclass
class ContentReport:
    """What the answers told the user, over the in-scope rows that carry nuggets/sections."""

    nugget_rows: int = 0
    nugget_recall: float = 0.0
    complete_answers: float = 0.0
    broken_sentences: int = 0
    off_topic_per_answer: float = 0.0
    mean_answer_words: float = 0.0
    # Rows asked after their history (a conversation): what they added.
    follow_up_rows: int = 0
    follow_up_nugget_recall: float = 0.0
    follow_up_repeats: int = 0  # their sentences the conversation had already shown
    problems: list[dict] = field(default_factory=list)


def _talks_about_the_guide(row: EvalRow, about_section: str) -> bool:
    """A question about the guide itself (asked so, or answered by its section about itself)."""
    return "guide" in row.question.lower() or (
        bool(about_section) and any(s.startswith(about_section) for s in row.sections))


def _judge_one(row: EvalRow, answer: ans.Answer, report: ContentReport,
               about_section: str) -> tuple[float | None, int | None]:
    """Adds the row's problems to `report`; returns its nugget recall and off-topic count
    (None where the row has no nuggets, or no sections, or the answer was declined)."""
    recall = None
    if row.nuggets:
        stated = stated_nuggets(answer.text if answer.answerable else "", row.nuggets)
        recall = sum(stated) / len(stated)
        missing = [list(n) for n, ok in zip(row.nuggets, stated, strict=True) if not ok]
        if missing:
            report.problems.append({"question": row.question, "problem": "nuggets", "missing": missing})
    if not answer.answerable:
        return recall, None
    for sentence, why in broken_sentences(answer, _talks_about_the_guide(row, about_section)):
        report.broken_sentences += 1
        report.problems.append({"question": row.question, "problem": "broken", "sentence": sentence,
                                "why": why})
    if not row.sections:
        return recall, None
    strays = off_topic_sentences(answer, row.sections)
    report.problems += [{"question": row.question, "problem": "off-topic", "sentence": s} for s in strays]
    return recall, len(strays)


def judge_content(pairs: list[tuple[EvalRow, ans.Answer]], about_section: str = "") -> ContentReport:
    """Nuggets, broken and off-topic sentences and length over the in-scope rows. A declined
    in-scope question stated none of its nuggets. `about_section`: the corpus's section about
    itself (corpus.toml), whose questions may talk about the guide."""
    report = ContentReport()
    recalls, off_topic, words = [], [], []
    for row, answer in pairs:
        if not row.answerable:
            continue
        recall, strays = _judge_one(row, answer, report, about_section)
        if recall is not None:
            recalls.append(recall)
        if strays is not None:
            off_topic.append(strays)
        if answer.answerable:
            words.append(answer_words(answer))
    report.nugget_rows = len(recalls)
    report.nugget_recall = statistics.fmean(recalls) if recalls else 0.0
    report.complete_answers = sum(r == 1.0 for r in recalls) / max(len(recalls), 1)
    report.off_topic_per_answer = statistics.fmean(off_topic) if off_topic else 0.0
    report.mean_answer_words = statistics.fmean(words) if words else 0.0
    return report


@dataclass
class AnswerReport:
    questions: int
    in_scope_answered: float
    out_of_scope_declined: float
    citation_validity: float
    # Shown sentences passing verification again: a regression check on the pipeline, not a
    # quality figure (they passed the same check before they were shown), so in JSON only.
    support_rate: float
    model_sentences_kept: float
    model_written_share: float  # of the sentences shown, those in the model's own words
    extractive_rate: float
    first_token_ms_p50: float
    total_ms_p50: float
    total_ms_p95: float
    content: ContentReport = field(default_factory=ContentReport)
    failures: list[dict] = field(default_factory=list)
    # Every row's answer as shown, for reading and judging it (and for re-grading it later).
    rows: list[dict] = field(default_factory=list)


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
    about = load_profile(assistant.settings.corpus_dir).about_section
    pairs = []
    repeats = 0
    for row in rows:
        answer, earlier = ask_in_conversation(assistant, row)
        repeats += repeated_sentences(answer.text, earlier, embedder)
        pairs.append((row, answer))
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
        evidence = answer.cited_evidence(embedder)
        for sentence in split_sentences(answer.text):
            sentences += 1
            supported += verify.verify_sentence(sentence, evidence, embedder).supported
        kept += answer.model_sentences
        written += answer.model_sentences + len(answer.dropped_sentences)
    n_in = sum(1 for r in rows if r.answerable)
    n_out = len(rows) - n_in
    return AnswerReport(
        questions=len(rows),
        in_scope_answered=answered_in / max(n_in, 1),
        out_of_scope_declined=declined_out / max(n_out, 1),
        citation_validity=valid / max(cited_answers, 1),
        support_rate=supported / max(sentences, 1),
        model_sentences_kept=kept / max(written, 1),
        model_written_share=kept / max(sentences, 1),
        extractive_rate=extractive / max(cited_answers, 1),
        first_token_ms_p50=percentile(first, 50),
        total_ms_p50=percentile(total, 50),
        total_ms_p95=percentile(total, 95),
        content=_with_follow_ups(judge_content(pairs, about), pairs, repeats, about),
        failures=failures,
        rows=[_shown(row, answer) for row, answer in pairs],
    )


def _shown(row: EvalRow, answer: ans.Answer) -> dict:
    return {"question": row.question, "history": list(row.history), "answer": answer.text,
            "mode": str(answer.mode), "cited": [c.passage.chunk.title for c in answer.citations]}


def ask_in_conversation(assistant: Assistant, row: EvalRow) -> tuple[ans.Answer, list[str]]:
    """(the row's answer, the earlier answers): its history asked and answered first, in
    order, as a reader would have, so the answer is judged on what it adds."""
    earlier: list[str] = []
    for i, question in enumerate(row.history):
        earlier.append(assistant.ask(question, list(row.history[:i]), earlier_answers=list(earlier)).text)
    return assistant.ask(row.question, list(row.history), earlier_answers=earlier), earlier


def repeated_sentences(text: str, earlier: list[str], embedder: Embedder) -> int:
    """Sentences of `text` the earlier answers already said: quoted again, or as close in
    meaning as two definitions of one term."""
    answered = [t for t in earlier if not t.startswith(gate.NOT_COVERED)]
    said = [verify.claim_text(s) for t in answered for s in split_sentences(t)]
    claims = [verify.claim_text(s) for s in split_sentences(text)]
    if not said or not claims:
        return 0
    close = (embedder.encode(claims) @ embedder.encode(said).T).max(axis=1)
    return sum(1 for c, sim in zip(claims, close, strict=True) if c in said or float(sim) > SAME_MEANING)


def _with_follow_ups(content: ContentReport, pairs: list[tuple[EvalRow, ans.Answer]],
                     repeats: int, about_section: str) -> ContentReport:
    judged = judge_content([(row, answer) for row, answer in pairs if row.history], about_section)
    content.follow_up_rows, content.follow_up_nugget_recall = judged.nugget_rows, judged.nugget_recall
    content.follow_up_repeats = repeats
    return content
