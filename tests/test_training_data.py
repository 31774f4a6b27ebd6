"""The fine-tuning targets (train/targets*.jsonl) teach exactly what the pipeline will show.

Each row's messages must be what ftchat builds for its question today, ending with the
answer's opening that the model continues (evidence selection changes make them stale:
rebuild with scripts/build_targets.py), and every sentence written for it must be cited and
pass verification, so the model learns only answers that would reach the user.
"""

from __future__ import annotations

import json

import pytest

from ftchat.answering import answer as ans
from ftchat.answering import prompt, verify
from ftchat.config import REPO_ROOT
from ftchat.text import split_sentences

TARGET_FILES = [REPO_ROOT / "train" / "targets.jsonl", REPO_ROOT / "train" / "targets.val.jsonl"]

# Checks of the shipped data, not of the code: `make check-data` runs them (CI too), `make test` does not.
pytestmark = [pytest.mark.slow, pytest.mark.data]  # retrieval, evidence and verification for ~1,500 rows


def _rows() -> list[dict]:
    lines = [line for path in TARGET_FILES for line in path.read_text(encoding="utf-8").splitlines()]
    return [json.loads(line) for line in lines]


def test_every_target_is_trained_on_the_prompt_the_pipeline_builds_and_passes_verification(assistant) -> None:
    rows = _rows()
    assert len(rows) >= 1000
    stale, unsupported, repeats = [], [], []
    for row in rows:
        evidence = assistant.evidence(row["question"])
        opening = ans.opening(evidence)
        if row["messages"] != prompt.build_messages(row["question"], evidence, start=opening):
            stale.append(row["question"])
            continue
        for sentence in split_sentences(row["answer"]):
            verdict = verify.verify_sentence(sentence, evidence, assistant.retriever.embedder)
            if not ans.cited_numbers(sentence) or not verdict.supported:
                unsupported.append((row["question"], sentence))
        # What the model learns to write after the opening adds to it, never restates it.
        for sentence in split_sentences(row["target"]):
            verdict = verify.verify_sentence(sentence, evidence, assistant.retriever.embedder)
            if verdict.item == 0 or sentence not in row["answer"]:
                repeats.append((row["question"], sentence))
    assert not stale, f"{len(stale)} rows were built for other evidence (rebuild them): {stale[:3]}"
    assert not unsupported, f"{len(unsupported)} written sentences fail verification: {unsupported[:3]}"
    assert not repeats, f"{len(repeats)} targets restate the opening or were not written: {repeats[:3]}"


def test_training_rows_are_training_questions_and_never_eval_questions() -> None:
    from ftchat.tools import evaluation as ev

    questions = {row.question for row in ev.load_rows(REPO_ROOT / "train" / "questions.jsonl")}
    held = {row.question for path in (REPO_ROOT / "eval").glob("*.jsonl") for row in ev.load_rows(path)}
    targets = [row["question"] for row in _rows()]
    assert set(targets) <= questions and not set(targets) & held
    assert len(targets) == len(set(targets))
