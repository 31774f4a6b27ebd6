"""Floors on the project's own eval set, measured with the real index, embedder and model."""

from __future__ import annotations

import json
import subprocess

import pytest
from guide_fixtures import FTCHAT

from ftchat.answering import gate
from ftchat.tools import evaluation as ev

ROWS = ev.load_rows()
# The gate's threshold was fitted on single questions. A follow-up beyond the guide ("what
# default learning rate does PEFT recommend for it?", after IA3) asks for a detail that a
# covered topic lacks, which no similarity threshold can see: `ftchat eval` reports those
# rows, no floor does.
GATED = [r for r in ROWS if r.answerable or not r.history]


def test_eval_set_has_the_promised_shape() -> None:
    answerable = [r for r in ROWS if r.answerable]
    assert len(ROWS) >= 95 and len(answerable) >= 80
    assert len(ROWS) - len(answerable) >= 15
    assert any(r.history for r in ROWS), "follow-up questions with history"
    assert all(r.expected_terms for r in answerable)


@pytest.mark.slow  # the full-guide eval: the guide's index and every eval question
def test_retrieval_recall_at_5_on_the_eval_set(assistant) -> None:
    report = ev.evaluate_retrieval(assistant, ROWS)
    assert report.recall_at_5 >= 0.90, report.misses
    assert report.mrr >= 0.75


def _decisions(assistant, rows) -> list[tuple[bool, bool]]:
    """(the gate let it through, the row is in scope) per row, with the committed thresholds."""
    return [(assistant.gate(r.question, list(r.history)).answerable, r.answerable) for r in rows]


@pytest.mark.slow  # the full-guide eval
def test_gate_floors_with_the_committed_threshold(assistant) -> None:
    decisions = _decisions(assistant, GATED)
    inside = [passed for passed, answerable in decisions if answerable]
    outside = [not passed for passed, answerable in decisions if not answerable]
    assert sum(inside) / len(inside) >= 0.90
    assert sum(outside) / len(outside) >= 0.90


@pytest.mark.slow  # the full-guide eval
def test_gate_answers_new_questions_in_their_own_words(assistant) -> None:
    """The questions of heldout.jsonl and blind.jsonl describe problems rather than name
    techniques. A cosine threshold fitted on eval.jsonl alone (0.39) declined 25% and 13% of
    them; the committed ones are fitted on train/ alone (`make calibrate`)."""
    for name in ("heldout.jsonl", "blind.jsonl"):
        decisions = _decisions(assistant, ev.load_rows(ev.DEFAULT_EVAL_FILE.with_name(name)))
        inside = [passed for passed, answerable in decisions if answerable]
        assert sum(inside) / len(inside) >= 0.90, name


def test_calibration_separates_in_and_out_of_scope() -> None:
    scores = [(0.2, False), (0.25, False), (0.5, True), (0.6, True), (2.0, True)]
    result = gate.calibrate(scores)
    assert 0.25 < result["threshold"] < 0.5
    assert result["in_scope_accuracy"] == 1.0 and result["out_of_scope_accuracy"] == 1.0


def test_cross_validation_scores_each_fold_with_a_threshold_fitted_elsewhere() -> None:
    separable = [(0.1 + 0.01 * i, False) for i in range(10)] + [(0.6 + 0.01 * i, True) for i in range(20)]
    result = gate.cross_validate(separable, folds=5)
    assert result["folds"] == 5 and len(result["thresholds"]) == 5
    assert result["in_scope_accuracy"] == 1.0 and result["out_of_scope_accuracy"] == 1.0
    # Overlapping scores: the threshold fitted on all rows looks better on them than the
    # thresholds fitted without each fold do on that fold.
    overlapping = [(0.2, False), (0.5, True), (0.3, False), (0.6, True), (0.45, False),
                   (0.7, True), (0.25, False), (0.4, True), (0.8, True), (0.35, False)]
    in_sample = gate.calibrate(overlapping)
    cv = gate.cross_validate(overlapping, folds=5)
    assert (in_sample["in_scope_accuracy"], in_sample["out_of_scope_accuracy"]) == (1.0, 0.8)
    assert (cv["in_scope_accuracy"], cv["out_of_scope_accuracy"]) == (0.6, 0.6)
    assert gate.cross_validate([(0.5, True)] * 4, folds=2)["folds"] == 0  # no out-of-scope rows to fit on


@pytest.mark.slow  # the full-guide eval
def test_held_out_questions_are_retrieved_like_the_eval_set(assistant) -> None:
    """eval/heldout.jsonl was written blind, after the corpus, and is never tuned against."""
    rows = ev.load_rows(ev.DEFAULT_EVAL_FILE.with_name("heldout.jsonl"))
    # 20 symptom-style questions, then 21 follow-ups (one of them beyond the guide).
    assert len(rows) == 41 and sum(r.answerable for r in rows) == 40
    report = ev.evaluate_retrieval(assistant, rows)
    assert report.recall_at_5 >= 0.85, report.misses


@pytest.mark.slow  # the full-guide eval
def test_blind_questions_are_retrieved(assistant) -> None:
    """eval/blind.jsonl was written by someone who had seen neither eval set. Recall@5 was
    0.917 with reciprocal rank fusion, 0.983 with score fusion; this floor needs the latter."""
    rows = ev.load_rows(ev.DEFAULT_EVAL_FILE.with_name("blind.jsonl"))
    # 60 in scope and 10 beyond the guide, then 22 follow-ups (two of them beyond it).
    assert len(rows) == 92 and sum(r.answerable for r in rows) == 80
    report = ev.evaluate_retrieval(assistant, rows)
    assert report.recall_at_5 >= 0.95, report.misses
    assert report.mrr >= 0.82


@pytest.mark.slow
@pytest.mark.model
def test_answer_floors_on_a_fixed_sample(assistant) -> None:
    # Every fourth single in-scope question (generation costs seconds each; a follow-up
    # costs its history's answers too) and every out-of-scope one.
    inside = [r for r in ROWS if r.answerable and not r.history][::4]
    outside = [r for r in GATED if not r.answerable]
    report = ev.evaluate_answers(assistant, inside + outside)
    assert report.in_scope_answered >= 0.90, report.failures
    assert report.out_of_scope_declined >= 0.90, report.failures
    assert report.support_rate >= 0.95
    # What the answer states, measured in its text (issue 13); on this sample 0.59, 0 broken.
    assert report.content.nugget_recall >= 0.55, report.content.problems
    assert report.content.broken_sentences == 0, report.content.problems
    # Was 0.95 while answers drew on two or three sections. Confined to the section that
    # answers, an answer from the wrong section cites no expected term: 0.82 here (0.914
    # on the whole set), traded for nugget recall 0.57 -> 0.68 and blind-judged good
    # answers 33% -> 53%. A floor still, so a change that cites worse sections fails.
    assert report.citation_validity >= 0.80, report.failures


@pytest.mark.slow  # three `ftchat eval` processes over the guide
@pytest.mark.subprocess
def test_eval_cli_on_a_user_file(guide_settings, tmp_path) -> None:
    rows = tmp_path / "mine.jsonl"
    rows.write_text(
        '{"question": "How do I oversample a rare class?", "expected_terms": ["SMOTE"], "answerable": true}\n'
        '{"question": "Who painted the Mona Lisa?", "expected_terms": [], "answerable": false}\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(FTCHAT), "eval", str(rows), "--json", "--retrieval-only"],
        capture_output=True, text=True, env=guide_settings.child_environment(), timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["retrieval"]["questions"] == 1
    assert report["retrieval"]["recall_at_5"] == 1.0

    more = tmp_path / "more.jsonl"
    more.write_text('{"question": "What does GPTQ do?", "expected_terms": ["GPTQ"]}\n', encoding="utf-8")
    both = subprocess.run(
        [str(FTCHAT), "eval", str(rows), str(more), "--json", "--retrieval-only"],
        capture_output=True, text=True, env=guide_settings.child_environment(), timeout=300,
    )
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["retrieval"]["questions"] == 2

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"expected_terms": []}\n', encoding="utf-8")
    bad = subprocess.run(
        [str(FTCHAT), "eval", str(broken)],
        capture_output=True, text=True, env=guide_settings.child_environment(), timeout=120,
    )
    assert bad.returncode != 0 and "broken.jsonl:1" in bad.stderr and "Traceback" not in bad.stderr
