"""The real `ftchat` console script: `search` JSON contract, batch questions, errors, `index --source`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess

import pytest
from conftest import FTCHAT_BIN, PDF_PAGE_1, PDF_PAGE_3

from ftchat.documents.corpus import display_path

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


# Every test here runs the `ftchat` command: in a new process (marked subprocess) or through click's runner.
pytestmark = pytest.mark.slow


@pytest.mark.subprocess
def test_search_json_matches_the_contract(cli_settings, small_index, embedder):
    from ftchat.answering.retrieval import Retriever

    result = run(["search", "How does SMOTE balance classes?", "--k", "3", "--json"],
                 cli_settings.child_environment())
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


@pytest.mark.subprocess
def test_search_questions_file_prints_json_lines(cli_settings, tmp_path):
    questions = tmp_path / "questions.txt"
    questions.write_text(
        "What is GPTQ?\n"
        "\n"
        '{"question": "How does SMOTE work?", "expected_terms": ["SMOTE"], "answerable": true}\n'
        "  gradient accumulation  \n"
        '{"question": "Ünïcode question about EWC ✓"}\n',
        encoding="utf-8",
    )
    result = run(["search", "--questions", str(questions), "--k", "2"], cli_settings.child_environment())
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
@pytest.mark.subprocess
def test_empty_question_is_a_one_line_error(cli_settings, question):
    result = run(["search", question, "--json"], cli_settings.child_environment())
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "empty" in lines[0].lower()


@pytest.mark.subprocess
def test_a_bad_row_fails_alone_in_the_real_script(cli_settings, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What is GPTQ?"}\n{"not_question": 1}\nWhat is SMOTE?\n')
    result = run(["search", "--questions", str(questions)], cli_settings.child_environment())
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["question"] for r in rows] == ["What is GPTQ?", None, "What is SMOTE?"]
    assert rows[1] == {"question": None, "error": 'a JSON row needs a "question" string', "line": 2}
    assert result.stderr.strip() == "1 of 3 rows failed"


# --- Batch runs lose nothing (in process: click's runner, a scripted model) -----------------

LONG = "How does SMOTE balance classes? " + "x" * 50_000
BAD_ROWS = "\n".join([
    '{"question": "What is GPTQ?"}',
    '{"question": "   "}',
    '{"question": "What is LoRA?"',
    "",
    '{"query": "What is LoRA?"}',
    '{"question": ["What is LoRA?"]}',
    json.dumps({"question": LONG}),
    "gradient accumulation",
]) + "\n"
# (line, question, error) for each row of BAD_ROWS; error None means an answer is expected.
EXPECTED = [
    (1, "What is GPTQ?", None),
    (2, "   ", "The question is empty. Type a question about fine-tuning LLMs."),
    (3, None, "not valid JSON (Expecting ',' delimiter at column 29)"),
    (5, None, 'a JSON row needs a "question" string'),
    (6, None, 'a JSON row needs a "question" string'),
    (7, LONG, None),
    (8, "gradient accumulation", None),
]


@pytest.fixture
def invoke(cli_settings, monkeypatch):
    from click.testing import CliRunner

    from ftchat.cli import main

    for name, value in cli_settings.child_environment().items():
        if name.startswith("FTCHAT_"):
            monkeypatch.setenv(name, value)

    def invoke_main(*args: str):
        return CliRunner().invoke(main, list(args))

    return invoke_main


def check_rows(stdout: str, answered_key: str) -> list[dict]:
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == len(EXPECTED)
    for row, (line, question, error) in zip(rows, EXPECTED, strict=True):
        if error is None:
            assert answered_key in row and "error" not in row
            assert question.startswith(row["question"])  # a long question is cut, not refused
        else:
            assert row == {"question": question, "error": error, "line": line}
    return rows


def test_search_questions_file_gives_every_row_one_line(invoke, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text(BAD_ROWS, encoding="utf-8")
    result = invoke("search", "--questions", str(questions), "--k", "2")
    assert result.exit_code == 1, result.output
    rows = check_rows(result.stdout, "passages")
    assert rows[0]["passages"][0]["title"].endswith("Quantization")
    assert rows[5]["passages"][0]["title"].endswith("Imbalanced data")
    assert result.stderr == "4 of 7 rows failed\n"


def test_ask_questions_file_gives_every_row_one_line(invoke, tmp_path):
    from scripted import ScriptedGenerator, use_scripted_generator

    questions = tmp_path / "q.jsonl"
    questions.write_text(BAD_ROWS, encoding="utf-8")
    with use_scripted_generator(ScriptedGenerator("Nothing the sources say.")) as name:
        result = invoke("ask", "--model", name, "--questions", str(questions))
    assert result.exit_code == 1, result.output
    rows = check_rows(result.stdout, "answer")
    assert [r.get("mode") for r in rows] == ["extractive", None, None, None, None, "extractive", "extractive"]
    assert result.stderr == "4 of 7 rows failed\n"


def test_a_questions_file_without_bad_rows_succeeds(invoke, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("What is GPTQ?\n\nWhat is SMOTE?\n", encoding="utf-8")
    result = invoke("search", "--questions", str(questions))
    assert result.exit_code == 0 and result.stderr == ""
    assert len(result.stdout.splitlines()) == 2


def test_a_questions_file_with_no_questions_says_so(invoke, tmp_path):
    questions = tmp_path / "q.txt"
    questions.write_text("\n  \n", encoding="utf-8")
    result = invoke("search", "--questions", str(questions))
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {questions} has no questions\n"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "What is LoRA?"}\n\n{"question": "x", ', "3: not valid JSON (Expecting property name "
         "enclosed in double quotes at column 18)"),
        ('{"question": "What is LoRA?"}\n{"expected_terms": []}\n',
         '2: an eval row needs a non-empty "question" string'),
        ('["What is LoRA?"]\n', "1: an eval row is a JSON object, not list"),
        ('{"question": "What is LoRA?", "expected_terms": "LoRA"}\n',
         '1: "expected_terms" must be a list of strings'),
        ('{"question": "What is LoRA?", "answerable": "no"}\n', '1: "answerable" must be true or false'),
    ],
)
def test_eval_names_the_file_and_line_of_a_malformed_row(invoke, tmp_path, content, message):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(content, encoding="utf-8")
    result = invoke("eval", str(rows), "--retrieval-only")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"Error: {rows}:{message}\n"


@pytest.mark.subprocess
def test_index_source_pdf_then_search_shows_page_locations(
    small_corpus_settings, small_index, tmp_path, make_pdf
):
    settings = dataclasses.replace(small_corpus_settings, index_dir=tmp_path / "index")
    shutil.copytree(small_corpus_settings.index_dir, settings.index_dir)
    pdf = tmp_path / "uploads" / "dpo_notes.pdf"
    pdf.parent.mkdir()
    pdf.write_bytes(make_pdf([PDF_PAGE_1, "", PDF_PAGE_3]))
    env = settings.child_environment()

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
@pytest.mark.subprocess
def test_unusable_setting_is_a_one_line_error(cli_settings, variable, value, message):
    env = {**cli_settings.child_environment(), variable: value}
    result = run(["search", "LoRA"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {message}"


@pytest.mark.parametrize(
    "variable, message",
    [
        ("FTCHAT_DTYPE", "Unknown dtype 'float8'; choose auto, float32, bfloat16, int4, int8 (FTCHAT_DTYPE)"),
        ("FTCHAT_DECODER", "Unknown decoder 'float8'; choose auto or transformers (FTCHAT_DECODER)"),
    ],
)
@pytest.mark.subprocess
def test_unusable_generator_setting_is_a_one_line_error(cli_settings, variable, message):
    env = {**cli_settings.child_environment(), variable: "float8"}
    result = run(["ask", "What does SMOTE do?"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"Error: {message}"
