"""The real `ftchat` console script: `search` JSON contract, batch questions, errors, `index --source`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from conftest import FTCHAT_BIN, PDF_PAGE_1, PDF_PAGE_3

from ftchat.corpus import display_path

CONTRACT_PASSAGE_KEYS = {"rank", "chunk_id", "title", "source", "location", "text", "score"}


def run(args, env, timeout=120):
    return subprocess.run([str(FTCHAT_BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli_settings(small_corpus_settings, small_index, tmp_path_factory):
    """The session corpus with a private copy of its (already built) index, so no CLI call builds."""
    index_dir = tmp_path_factory.mktemp("cli") / "index"
    shutil.copytree(small_corpus_settings.index_dir, index_dir)
    return dataclasses.replace(small_corpus_settings, index_dir=index_dir)


def check_passage(passage: dict, chunks_by_id: dict) -> None:
    assert CONTRACT_PASSAGE_KEYS <= set(passage), passage.keys()
    assert isinstance(passage["rank"], int) and isinstance(passage["score"], float)
    for key in ("chunk_id", "title", "source", "location", "text"):
        assert isinstance(passage[key], str) and passage[key], key
    chunk = chunks_by_id[passage["chunk_id"]]
    assert passage["title"] == " › ".join(chunk.heading_path)
    assert passage["source"] == chunk.source
    assert passage["location"] == chunk.location
    assert passage["text"] == chunk.text


pytestmark = pytest.mark.slow  # every test here runs the `ftchat` script in a new process


def test_search_json_matches_the_contract(cli_settings, cli_env, small_index, embedder):
    from ftchat.retrieval import Retriever

    result = run(["search", "How does SMOTE balance classes?", "--k", "3", "--json"], cli_env(cli_settings))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert set(payload) == {"question", "passages"}
    assert payload["question"] == "How does SMOTE balance classes?"
    passages = payload["passages"]
    assert [p["rank"] for p in passages] == [1, 2, 3]
    chunks_by_id = {c.id: c for c in small_index.chunks}
    for passage in passages:
        check_passage(passage, chunks_by_id)
    assert passages[0]["title"] == "Fine-tuning guide › Data preparation › Imbalanced data"
    assert passages[0]["location"] == "line 24"
    # The CLI returns exactly what the Python API returns.
    expected = Retriever(small_index, embedder, cli_settings).search("How does SMOTE balance classes?", 3)
    assert [p["chunk_id"] for p in passages] == [p.chunk.id for p in expected]
    assert [p["score"] for p in passages] == pytest.approx([p.score for p in expected], abs=1e-6)


def test_search_questions_file_prints_json_lines(cli_settings, cli_env, tmp_path):
    questions = tmp_path / "questions.txt"
    questions.write_text(
        "What is GPTQ?\n"
        "\n"
        '{"question": "How does SMOTE work?", "expected_terms": ["SMOTE"], "answerable": true}\n'
        "  gradient accumulation  \n"
        '{"question": "Ünïcode question about EWC ✓"}\n',
        encoding="utf-8",
    )
    result = run(["search", "--questions", str(questions), "--k", "2"], cli_env(cli_settings))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in rows] == [
        "What is GPTQ?",
        "How does SMOTE work?",
        "gradient accumulation",
        "Ünïcode question about EWC ✓",
    ]
    for row in rows:
        assert set(row) == {"question", "passages"}
        assert [p["rank"] for p in row["passages"]] == [1, 2]
        assert all(CONTRACT_PASSAGE_KEYS <= set(p) for p in row["passages"])
    assert rows[0]["passages"][0]["title"].endswith("Quantization")
    assert rows[1]["passages"][0]["title"].endswith("Imbalanced data")
    assert rows[3]["passages"][0]["title"] == "Strategies › Elastic Weight Consolidation"


@pytest.mark.parametrize("question", ["", "   "])
def test_empty_question_is_a_one_line_error(cli_settings, cli_env, question):
    result = run(["search", question, "--json"], cli_env(cli_settings))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "empty" in lines[0].lower()


def test_bad_jsonl_row_is_a_one_line_error(cli_settings, cli_env, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "ok"}\n{"not_question": 1}\n')
    result = run(["search", "--questions", str(questions)], cli_env(cli_settings))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "q.jsonl:2" in result.stderr


def test_index_source_pdf_then_search_shows_page_locations(
    small_corpus_settings, small_index, cli_env, tmp_path, make_pdf
):
    settings = dataclasses.replace(small_corpus_settings, index_dir=tmp_path / "index")
    shutil.copytree(small_corpus_settings.index_dir, settings.index_dir)
    pdf = tmp_path / "uploads" / "dpo_notes.pdf"
    pdf.parent.mkdir()
    pdf.write_bytes(make_pdf([PDF_PAGE_1, "", PDF_PAGE_3]))
    env = cli_env(settings)

    indexed = run(["index", "--source", str(pdf)], env)
    assert indexed.returncode == 0, indexed.stderr
    assert "Traceback" not in indexed.stderr
    assert "page(s) 2" in indexed.stderr  # the empty page is reported by number

    # The source is remembered: a later search (no --source) finds text from page 3.
    found = run(["search", "zebrafinch prefix tuning", "--k", "2", "--json"], env)
    assert found.returncode == 0, found.stderr
    top = json.loads(found.stdout)["passages"][0]
    assert top["source"] == display_path(pdf)
    assert top["location"] == "page 3"
    assert top["title"] == "dpo notes"
    assert "zebrafinch" in top["text"]


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("FTCHAT_PORT", "abc", "FTCHAT_PORT must be a whole number, got 'abc'"),
        ("FTCHAT_DENSE_WEIGHT", "1.5", "FTCHAT_DENSE_WEIGHT must be between 0.0 and 1.0, got '1.5'"),
        ("FTCHAT_DENSE_WEIGHT", "nan", "FTCHAT_DENSE_WEIGHT must be between 0.0 and 1.0, got 'nan'"),
        ("FTCHAT_MAX_TOKENS", "0", "FTCHAT_MAX_TOKENS must be at least 1, got '0'"),
        ("FTCHAT_THREADS", "two", "FTCHAT_THREADS must be a whole number, got 'two'"),
    ],
)
def test_unusable_setting_is_a_one_line_error(cli_settings, cli_env, variable, value, message):
    env = {**cli_env(cli_settings), variable: value}
    result = run(["search", "LoRA"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {message}"


@pytest.mark.parametrize(
    "variable, message",
    [
        ("FTCHAT_DTYPE", "Unknown dtype 'float8'; choose auto, float32, bfloat16, int8 (FTCHAT_DTYPE)"),
        ("FTCHAT_DECODER", "Unknown decoder 'float8'; choose auto or transformers (FTCHAT_DECODER)"),
    ],
)
def test_unusable_generator_setting_is_a_one_line_error(cli_settings, cli_env, variable, message):
    env = {**cli_env(cli_settings), variable: "float8"}
    result = run(["ask", "What does SMOTE do?"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {message}"
