"""Sample questions: read from train/, indexed beside the text, and used by retrieval."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import settings_for, write_corpus

from ftchat.answering.retrieval import Retriever
from ftchat.config import REPO_ROOT
from ftchat.documents.corpus import load_sources
from ftchat.documents.questions import SampleQuestion, load_sample_questions
from ftchat.index.store import Index, open_index
from ftchat.tools import evaluation as ev

DISTILLATION = "Fine-tuning guide › Efficiency › Knowledge distillation"
TRAIN_FILE = REPO_ROOT / "train" / "questions.jsonl"


def write_rows(path: Path, rows: list[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rows_that_cannot_be_used_are_skipped_with_file_and_line(tmp_path) -> None:
    path = write_rows(tmp_path / "q.jsonl", [
        {"question": "What is  QLoRA?", "sections": ["A › QLoRA", "A › LoRA"]},
        {"question": "Who painted the Mona Lisa?", "answerable": False},
        "{not json",
        {"question": "", "sections": ["A › B"]},
        {"question": "What is DPO?"},
        ["a list"],
    ])
    questions, warnings = load_sample_questions(path)
    assert questions == [SampleQuestion("What is QLoRA?", "A › QLoRA")]  # the first section answers
    assert [w.split(":")[1] for w in warnings] == ["3", "4", "5", "6"]
    assert all(w.startswith("q.jsonl:") and "skipped" in w for w in warnings)


def test_a_missing_file_is_no_sample_questions(tmp_path) -> None:
    assert load_sample_questions(tmp_path / "none.jsonl") == ([], [])


@pytest.fixture(scope="module")
def two_indexes(tmp_path_factory):
    """The small corpus indexed without and with one sample question about distillation."""
    root = tmp_path_factory.mktemp("sample-questions")
    corpus = write_corpus(root / "corpus")
    questions = write_rows(root / "questions.jsonl", [
        {"question": "I need a model that answers almost as well as my huge one but runs on a laptop",
         "sections": [DISTILLATION]},
        {"question": "What does the appendix say?", "sections": ["No such section"]},
    ])
    built = {}
    for name, path in (("without", root / "none.jsonl"), ("with", questions)):
        settings = replace(settings_for(root / name, corpus), questions_file=path)
        built[name] = (settings, open_index(settings))
    return built


def test_a_sample_question_brings_its_section_first(two_indexes, embedder) -> None:
    question = "my model is too big to run on my laptop, what can I do?"
    tops = {}
    for name, (settings, index) in two_indexes.items():
        passages = Retriever(index, embedder, settings).search(question, 3)
        tops[name] = passages[0]
    assert tops["without"].chunk.title != DISTILLATION  # the text alone ranks another section first
    assert tops["with"].chunk.title == DISTILLATION
    # Its text is as far as before (the gate reads that); the sample question is what is near.
    assert tops["with"].dense < 0.3 < 0.5 < tops["with"].asked
    assert tops["with"].to_json()["asked_score"] == round(tops["with"].asked, 4)


def test_sample_questions_do_not_move_a_section_nobody_asked_about(two_indexes, embedder) -> None:
    # An uploaded document has no sample questions: its cosine is its text's, as before.
    scores = {}
    for name, (settings, index) in two_indexes.items():
        passages = Retriever(index, embedder, settings).search("What is EWC?", 8)
        scores[name] = {p.chunk.title: p.score for p in passages if p.chunk.title != DISTILLATION}
    assert scores["with"] == pytest.approx(scores["without"])


def test_sample_questions_survive_a_round_trip_and_unknown_sections_are_counted(two_indexes) -> None:
    settings, index = two_indexes["with"]
    assert [q.section for q in index.questions] == [DISTILLATION]
    assert index.manifest["questions"]["used"] == 1 and index.manifest["questions"]["dropped"] == 1
    loaded = Index.load(settings.index_dir)
    assert loaded.questions == index.questions
    np.testing.assert_array_equal(loaded.question_vectors, index.question_vectors)


def test_changing_the_sample_questions_rebuilds_the_index(tmp_path, small_corpus_dir) -> None:
    shrink = {"question": "how to shrink a model", "sections": [DISTILLATION]}
    questions = write_rows(tmp_path / "q.jsonl", [shrink])
    settings = replace(settings_for(tmp_path, small_corpus_dir), questions_file=questions)
    first = open_index(settings)
    assert open_index(settings).path == first.path  # unchanged: loaded, not rebuilt
    write_rows(questions, [shrink, {"question": "make a big model small", "sections": [DISTILLATION]}])
    assert Index.load(settings.index_dir).staleness([small_corpus_dir], settings, settings.embedder) == (
        f"sample questions changed ({questions})")
    second = open_index(settings)
    assert len(second.questions) == 2
    assert second.manifest["embedded"] == 0  # the text's vectors were kept


# --- The training questions: the split contract (issue 14) --------------------------------


@pytest.mark.slow  # embeds ~2,000 questions
@pytest.mark.data
def test_no_training_question_is_an_eval_question_or_a_near_paraphrase(embedder) -> None:
    train = [row.question for row in ev.load_rows(TRAIN_FILE)]
    eval_files = sorted((REPO_ROOT / "eval").glob("*.jsonl"))
    held = [row.question for path in eval_files for row in ev.load_rows(path)]
    similarity = embedder.encode(train) @ embedder.encode(held).T
    worst = np.unravel_index(int(similarity.argmax()), similarity.shape)
    assert similarity.max() < 0.9, (train[worst[0]], held[worst[1]])


def test_every_training_row_names_real_sections_and_well_formed_nuggets() -> None:
    titles = {" › ".join(s.heading_path) for s in load_sources([REPO_ROOT / "corpus"]).sections}
    rows = ev.load_rows(TRAIN_FILE)  # nuggets and fields checked as the eval sets' are
    raw = [json.loads(line) for line in TRAIN_FILE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(raw) >= 1500
    for row, data in zip(rows, raw, strict=True):
        assert data["split"] in ("train", "validation"), data
        if row.answerable:
            assert row.nuggets and set(row.sections) <= titles, data
            assert data["style"] in {"term", "paraphrase", "symptom", "how-to", "comparison", "beginner",
                                     "short", "misspelled"}, data
    assert sum(not r.answerable for r in rows) >= 50
    assert 0.05 <= sum(d["split"] == "validation" for d in raw) / len(raw) <= 0.15
