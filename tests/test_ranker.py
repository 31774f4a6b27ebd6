"""The learned ranker (answering/rerank.py, fitted by tools/ranker_training.py): the order
it gives known questions, the gate and its fit, its fallback when its file is missing or
damaged, its training data's checks, and a document it never saw."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
from guide_fixtures import FTCHAT
from trained_files import write_damaged

from ftchat.answering import gate
from ftchat.answering.rerank import FEATURES, LearnedRanker, load_ranker
from ftchat.answering.retrieval import Passage, Retriever
from ftchat.config import RANKER_FILE
from ftchat.documents.chunking import Chunk
from ftchat.files import sha256_file
from ftchat.models.loader import get_embedder
from ftchat.tools import ranker_training as rt


@pytest.fixture(scope="module")
def ranker() -> LearnedRanker:
    loaded = load_ranker(RANKER_FILE)
    assert loaded is not None, "the package ships a usable ranker"
    return loaded


@pytest.fixture(scope="module")
def learned(assistant, ranker) -> Retriever:
    index = assistant.index
    return Retriever(index, get_embedder(assistant.settings.embedder), assistant.settings, ranker)


@pytest.fixture(scope="module")
def hybrid(assistant) -> Retriever:
    index = assistant.index
    return Retriever(index, get_embedder(assistant.settings.embedder), assistant.settings, None)


def titles(passages: list[Passage], n: int) -> list[str]:
    return [p.chunk.title for p in passages[:n]]


def test_a_subsection_that_answers_beats_its_category_intro(learned, hybrid):
    question = "How is bias detected and how is it mitigated?"
    # The hybrid order put the category's opening paragraph first, which names neither.
    assert titles(hybrid.search(question), 1) == ["Key concepts › Ethical and legal considerations"]
    first = titles(learned.search(question), 1)[0]
    assert first.endswith(("› Bias mitigation", "› Algorithmic bias detection")), first


@pytest.mark.parametrize(("question", "parts"), [
    ("What is the difference between GLUE and SuperGLUE?", ("› GLUE benchmark", "› SuperGLUE benchmark")),
    ("How is bias detected and how is it mitigated?", ("› Algorithmic bias detection", "› Bias mitigation")),
])
def test_a_two_part_question_gets_a_section_for_each_part(learned, question, parts):
    # A guard rather than a gain: the hybrid order already had both parts in its top 3.
    top = titles(learned.search(question), 3)
    for part in parts:
        assert any(t.endswith(part) for t in top), (part, top)


def test_reranked_passages_carry_their_learned_score_in_order(learned):
    passages = learned.search("What does gradient accumulation do?", 8)
    scores = [p.learned for p in passages]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)
    assert [p.rank for p in passages] == list(range(1, len(passages) + 1))
    assert passages[0].to_json()["learned_score"] == round(scores[0], 4)


# --- The gate -------------------------------------------------------------------------


def _passage(dense: float, learned: float | None) -> Passage:
    chunk = Chunk(id="c", source="s.md", heading_path=("A", "B"), location="s.md", text="text")
    return Passage(chunk, 0.5, 1, dense, 0.0, 0.0, learned)


def test_the_gate_reads_the_learned_score_when_there_is_one(assistant):
    keyword = assistant.index.keyword
    common = {"question": "how does this work", "query": "how does this work", "keyword": keyword,
              "threshold": 0.3}
    # A low cosine, a confident ranker: covered; a high cosine, a doubtful ranker: not.
    assert gate.decide([_passage(0.1, 4.0)], **common, learned_threshold=0.5).answerable
    declined = gate.decide([_passage(0.9, -4.0)], **common, learned_threshold=0.5)
    assert not declined.answerable and declined.measure == "learned"
    # Without a learned threshold, or without learned scores, the cosine decides.
    assert not gate.decide([_passage(0.1, 4.0)], **common, learned_threshold=None).answerable
    assert gate.decide([_passage(0.9, None)], **common, learned_threshold=0.5).measure == "cosine"


def test_a_threshold_can_be_fitted_to_answer_a_share_of_in_scope_questions():
    scores = [(0.1, False), (0.2, False), (0.3, True), (0.35, False), (0.4, True), (0.5, True), (0.6, True)]
    balanced = gate.calibrate(scores)
    assert 0.35 < balanced["threshold"] < 0.4  # three of four each way
    everyone = gate.calibrate(scores, answered_at_least=1.0)
    assert 0.2 < everyone["threshold"] < 0.3 and everyone["in_scope_accuracy"] == 1.0
    assert everyone["out_of_scope_accuracy"] == 0.6667 and "at least 100%" in everyone["criterion"]


# --- Fallback ------------------------------------------------------------------------


def _damage(path: Path, damage: str) -> None:
    write_damaged(RANKER_FILE, path, damage, "features")


@pytest.mark.parametrize("damage", ["missing", "garbled", "edited weight", "other features", "no manifest"])
def test_a_missing_or_damaged_ranker_is_one_warning_and_no_ranker(tmp_path, caplog, damage):
    path = tmp_path / "ranker.json"
    _damage(path, damage)
    with caplog.at_level(logging.WARNING, logger="ftchat"):
        assert load_ranker(path) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "hybrid order" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()


def test_an_intact_copy_loads_and_scores_like_the_shipped_one(tmp_path, ranker):
    path = tmp_path / "ranker.json"
    shutil.copyfile(RANKER_FILE, path)
    copy = load_ranker(path)
    rows = [[0.5] * len(FEATURES), [0.1] * len(FEATURES)]
    assert copy is not None and copy.logits(rows).tolist() == ranker.logits(rows).tolist()


def test_with_a_damaged_ranker_answers_keep_the_hybrid_order(tmp_path, assistant, hybrid):
    path = tmp_path / "ranker.json"
    _damage(path, "edited weight")
    question = "How is bias detected and how is it mitigated?"
    damaged = type(assistant)(assistant.settings.with_overrides(ranker_file=path))
    assert titles(damaged.search(question, 5), 5) == titles(hybrid.search(question, 5), 5)
    assert all(p.learned is None for p in damaged.search(question))
    assert damaged.ask(question).answerable


# --- Training data ---------------------------------------------------------------------


@pytest.mark.parametrize(("line", "problem"), [
    ('{"question": "", "sections": ["A"], "split": "train"}', 'non-empty "question"'),
    ('{"question": "What is X?", "sections": [], "split": "train"}', '"sections"'),
    ('{"question": "What is X?", "sections": ["A"], "split": "test"}', '"split"'),
    ('{"question": "What is X?", "sections": "A", "split": "train"}', '"sections"'),
    ("not json", "not valid JSON"),
])
def test_a_bad_training_row_is_named_by_file_and_line(tmp_path, line, problem):
    path = tmp_path / "questions.jsonl"
    good = '{"question": "What is LoRA?", "sections": ["Key concepts › LoRA"], "split": "train"}'
    path.write_text(good + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(rt.RankerDataError) as raised:
        rt.load_questions(path)
    assert f"{path}:2" in str(raised.value) and problem in str(raised.value)


def test_a_missing_training_file_is_named(tmp_path):
    with pytest.raises(rt.RankerDataError, match=r"questions.jsonl does not exist \(training questions"):
        rt.load_questions(tmp_path / "questions.jsonl")


@pytest.mark.subprocess
def test_ftchat_train_ranker_reports_a_bad_row_in_one_line(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text('{"question": "What is LoRA?", "split": "train"}\n', encoding="utf-8")
    command = [str(FTCHAT), "train-ranker", "--questions", str(path), "--work-dir", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [f'Error: {path}:1: an in-scope row names its sections in "sections"'], proc.stderr


def test_the_shipped_manifest_records_base_data_settings_and_validation(ranker):
    manifest = ranker.manifest
    assert manifest["base"]["embedder_sha256"] and manifest["data"]["sha256"] and manifest["settings"]
    validation = manifest["validation"]
    assert validation["recall_at_1"] > validation["hybrid_recall_at_1"]  # chosen on validation, not eval
    assert manifest["machine"]["cpu"] and manifest["depth"] == manifest["settings"]["depth"]


@pytest.mark.slow  # mines a small set against the real guide, twice
def test_a_small_run_writes_a_usable_ranker_and_a_second_run_reuses_its_mined_folds(
        tmp_path, guide_settings, caplog):
    rows = [json.loads(line) for line in rt.default_questions_file().read_text(encoding="utf-8").splitlines()]
    sample = ([r for r in rows if r["split"] == "train"][:40]
              + [r for r in rows if r["split"] == "validation"][:10])
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in sample), encoding="utf-8")
    config = rt.RankerConfig(questions_file=questions, output_file=tmp_path / "ranker.json",
                             work_dir=tmp_path / "work", progress_bar=False)
    first = rt.train_ranker(guide_settings, config)
    ranker = load_ranker(config.output_file)
    assert ranker is not None and first["data"]["sha256"] == sha256_file(questions)
    in_scope = sum(r["answerable"] for r in sample if r["split"] == "validation")
    assert first["depth"] in config.depths and first["validation"]["questions"] == in_scope
    with caplog.at_level(logging.INFO, logger="ftchat"):
        second = rt.train_ranker(guide_settings, config)
    assert caplog.text.count("mined rows read back") == 2
    assert second["weights_sha256"] == first["weights_sha256"]  # the same rows, the same fit
    # The gate fitted on the same questions, for this ranker: never on an eval set.
    fitted = rt.fit_gate(guide_settings.with_overrides(ranker_file=config.output_file), config)
    assert fitted["calibrated_on"] == ["questions.jsonl (all rows)"]
    assert fitted["learned"]["ranker_sha256"] == first["weights_sha256"]
    assert fitted["measure"] in ("learned", "cosine") and fitted["in_scope_accuracy"] >= 0.98


UNSEEN = Path(__file__).resolve().parent.parent / "eval" / "unseen"


@pytest.mark.slow  # indexes a document beside the guide and asks 30 questions twice
def test_the_ranker_does_not_hurt_a_document_it_never_saw(tmp_path, guide_settings, ranker):
    """Uploaded documents have no sample questions and the ranker never trained on them: it
    must still find their sections at least as often as the hybrid order alone."""
    from ftchat.index.store import open_index
    from ftchat.tools.evaluation import hits, load_rows

    settings = guide_settings.with_overrides(index_dir=tmp_path / "index")
    shutil.copytree(guide_settings.index_dir, settings.index_dir)
    index = open_index(settings, add_sources=[UNSEEN / "speculative-decoding.md"])
    embedder = get_embedder(settings.embedder)
    rows = load_rows(UNSEEN / "speculative-decoding.jsonl")

    def recall_at_1(retriever: Retriever) -> float:
        return sum(hits(retriever.search(r.question, 1)[0], r.expected_terms) for r in rows) / len(rows)

    with_ranker = recall_at_1(Retriever(index, embedder, settings, ranker))
    without = recall_at_1(Retriever(index, embedder, settings, None))
    assert with_ranker >= without, (with_ranker, without)
