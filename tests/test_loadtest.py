"""The load test (`ftchat loadtest`, tools/loadtest.py) at a reduced count: 4 concurrent sessions
x 6 questions against the real page on a free loopback port. `make loadtest` runs the full 8 x 25."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ftchat.cli import main
from ftchat.tools import loadtest


def test_question_plans_mix_in_scope_out_of_scope_and_follow_ups():
    rows = loadtest.load_rows()
    for seed in range(8):
        steps = loadtest.plan(rows, 25, seed)
        kinds = [s.kind for s in steps]
        assert len(steps) == 25
        assert {"in-scope", "out-of-scope", "follow-up"} <= set(kinds)
        for i, kind in enumerate(kinds):  # a follow-up always comes right after its earlier turn
            if kind == "follow-up":
                assert kinds[i - 1] == "history"


def test_answer_checks_catch_mixed_sessions_and_bad_citations():
    step = loadtest.Step("what does it cost in memory?", "follow-up", ("QLoRA",))
    good = {"done": True, "question": step.question, "answer": "QLoRA saves memory [1].", "answerable": True,
            "mode": "generated", "search_query": "What is QLoRA? what does it cost in memory?",
            "citations": [{"n": 1, "chunk_id": "a", "title": "QLoRA", "source": "corpus/x.md", "text": "t"}],
            "passages": [{"title": "QLoRA", "text": "QLoRA ..."}]}
    assert loadtest.check_answer(step, ["What is QLoRA?"], [good]) == ([], True)
    other_session = loadtest.check_answer(step, ["What is the GLUE benchmark?"], [good])[0]
    assert any("history" in p for p in other_session)
    bad_cite = dict(good, answer="QLoRA saves memory [2].")
    problems = loadtest.check_answer(step, ["What is QLoRA?"], [bad_cite])[0]
    assert any("not in its citations" in p for p in problems)
    assert loadtest.check_answer(step, [], [{"done": True, "error": "boom"}])[0] == ["error: boom"]


@pytest.mark.parametrize("arguments, message", [
    (["--sessions", "0"], "Invalid value for '--sessions'"),
    (["--url", "http://example.com:7860/"], "Error: --url must point at a loopback address"),
])
def test_the_command_refuses_an_empty_run_and_a_remote_page(arguments, message):
    """Nothing is started: the load only ever goes to this machine, and to at least one session."""
    result = CliRunner().invoke(main, ["loadtest", *arguments])
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_damaged_questions_file_is_a_one_line_error(tmp_path):
    questions = tmp_path / "eval.jsonl"
    questions.write_text('{"question": "What is LoRA?", "answerable": true}\n{"question": \n',
                         encoding="utf-8")
    result = CliRunner().invoke(main, ["loadtest", "--eval-file", str(questions)])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {questions}:2: "), result.output


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.subprocess
def test_reduced_load_run_has_no_failures_and_flat_memory(guide_settings, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(main, [
        "loadtest", "--sessions", "4", "--questions", "6", "--time-limit", "150",
        "--index-dir", str(guide_settings.index_dir), "--json", str(report_path),
        "--log", str(tmp_path / "app.log"),
    ])
    assert report_path.exists(), result.output[-3000:]
    report = json.loads(report_path.read_text())
    print(result.output.splitlines()[-1])
    assert report["failures"] == 0, report["failure_examples"]
    assert report["completed"] == 24 and not report["stopped_by_time_limit"]
    assert report["by_kind"]["follow-up"] >= 4 and report["by_kind"]["out-of-scope"] >= 4
    assert report["memory_flat"], report["memory_mb"]
    assert report["latency_seconds"]["p95"] > 0
    assert result.exit_code == 0 and report["passed"]
