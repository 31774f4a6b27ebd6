"""The eval's answer-content figures: nuggets stated, broken and off-topic sentences.

These judge the answer text itself (what the user reads), not the cited passages, so they
are tested on hand-built answers whose right figures are known."""

from __future__ import annotations

from ftchat.answering import answer as ans
from ftchat.answering import gate
from ftchat.answering.retrieval import Passage
from ftchat.documents.chunking import Chunk
from ftchat.text import split_sentences
from ftchat.tools import evaluation as ev

ADAPTERS = ("Strategies", "PEFT", "Adapters")
LORA_TEXT = (
    "LoRA freezes the pre-trained weights and learns two small low-rank matrices. "
    "It sits between feature extraction and full fine-tuning. "
    "The method fits on one GPU."
)


def _passage(path: tuple[str, ...], text: str, rank: int = 1) -> Passage:
    return Passage(Chunk(f"id{rank}", "corpus/x.md", path, "line 1", text), 1.0, rank, 0.5, 1.0)


def _answer(text: str, passages: list[Passage], answerable: bool = True) -> ans.Answer:
    citations = [ans.Citation(p.rank, p, []) for p in passages]
    return ans.Answer(question="q", text=text, answerable=answerable, citations=citations, passages=passages,
                      model="m", timings={}, tokens=0, mode=ans.AnswerMode.EXTRACTIVE)


def _row(**fields) -> ev.EvalRow:
    return ev.EvalRow(question=fields.pop("question", "What is LoRA?"), expected_terms=("LoRA",),
                      answerable=True, **fields)


def test_a_nugget_is_stated_when_any_alternative_occurs_in_the_answer_text() -> None:
    text = "LoRA learns two small Low-Rank matrices. [1]"
    nuggets = (("low-rank", "low rank"), ("frozen", "freezes"), ("[1]",))
    assert ev.stated_nuggets(text, nuggets) == [True, False, False]  # markers are not answer text


def test_leaning_opener_is_broken_unless_its_predecessor_is_shown_before_it() -> None:
    lora = _passage(("Strategies", "PEFT", "LoRA"), LORA_TEXT)
    first, second, third = split_sentences(
        "LoRA freezes the pre-trained weights and learns two small low-rank matrices. [1] "
        "It sits between feature extraction and full fine-tuning. [1] The method fits on one GPU. [1]")
    alone = _answer(second, [lora])
    assert ev.broken_sentences(alone) == [(second, "leans on a sentence that is not shown")]
    assert ev.broken_sentences(_answer(f"{first} {second}", [lora])) == []
    # Shown after a sentence that is not its predecessor: still dangling.
    assert len(ev.broken_sentences(_answer(f"{first} {third} {second}", [lora]))) == 1


def test_lead_in_without_what_it_introduces_and_sentences_about_the_guide_are_broken() -> None:
    p = _passage(ADAPTERS, "Adapters come in three kinds: serial, parallel and LoRA-style.")
    lead_in = _answer("Choose a strategy by your main constraint: [1]", [p])
    assert [why for _, why in ev.broken_sentences(lead_in)] == ["a lead-in with nothing after it"]
    listed = _answer("Choose a strategy by your main constraint: [1] - Memory: use QLoRA. [1]", [p])
    assert all(why != "a lead-in with nothing after it" for _, why in ev.broken_sentences(listed))
    guide = _answer("The guide is written as an overview rather than a textbook. [1]", [p])
    assert [why for _, why in ev.broken_sentences(guide)] == ["about the guide, not the subject"]
    assert ev.broken_sentences(guide, about_the_guide_ok=True) == []
    code = _answer("Run `trainer.train(resume_from_checkpoint=True)` then. [1]", [p])
    assert [why for _, why in ev.broken_sentences(code)] == ["code, not prose"]
    terms = _answer("The Hugging Face `Trainer` logs to it with `report_to=\"tensorboard\"`. [1]", [p])
    assert ev.broken_sentences(terms) == []  # code terms inside a sentence still read as prose


def test_off_topic_sentences_are_those_citing_no_answering_section() -> None:
    lora = _passage(("Strategies", "PEFT", "LoRA"), LORA_TEXT, rank=1)
    injection = _passage(("Key concepts", "Safety", "Prompt injection"), "Prompt injection hides orders.", 2)
    answer = _answer("LoRA learns low-rank matrices. [1] Prompt injection hides orders. [2]",
                     [lora, injection])
    assert ev.off_topic_sentences(answer, ("Strategies › PEFT",)) == ["Prompt injection hides orders. [2]"]
    both = ("Strategies › PEFT › LoRA", "Key concepts › Safety › Prompt injection")
    assert ev.off_topic_sentences(answer, both) == []
    assert ev.off_topic_sentences(answer, ()) == []  # a row that names no sections is not judged


def test_content_report_counts_declined_in_scope_rows_as_stating_nothing() -> None:
    lora = _passage(("Strategies", "PEFT", "LoRA"), LORA_TEXT)
    good = _answer("LoRA freezes the pre-trained weights and learns two small low-rank matrices. [1]", [lora])
    declined = _answer(gate.NOT_COVERED, [], answerable=False)
    rows = [_row(nuggets=(("low-rank",), ("freez",)), sections=("Strategies › PEFT › LoRA",)),
            _row(nuggets=(("low-rank",),))]
    report = ev.judge_content([(rows[0], good), (rows[1], declined)])
    assert report.nugget_rows == 2
    assert report.nugget_recall == 0.5 and report.complete_answers == 0.5
    assert report.broken_sentences == 0 and report.off_topic_per_answer == 0.0
    assert report.mean_answer_words == 11
    assert [p["problem"] for p in report.problems] == ["nuggets"]


def test_eval_rows_read_nuggets_and_sections_and_reject_malformed_nuggets(tmp_path) -> None:
    good = tmp_path / "rows.jsonl"
    good.write_text('{"question": "What is LoRA?", "expected_terms": ["LoRA"], '
                    '"nuggets": [["low-rank", "low rank"]], "sections": ["Strategies › PEFT › LoRA"]}\n',
                    encoding="utf-8")
    (row,) = ev.load_rows(good)
    assert row.nuggets == (("low-rank", "low rank"),) and row.sections == ("Strategies › PEFT › LoRA",)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is LoRA?", "nuggets": ["low-rank"]}\n', encoding="utf-8")
    try:
        ev.load_rows(bad)
    except ev.EvalFileError as exc:
        assert "bad.jsonl:1" in str(exc) and "nuggets" in str(exc)
    else:
        raise AssertionError("a nugget that is not a list of alternatives must be rejected")


def test_eval_table_shows_what_the_answers_said(capsys) -> None:
    from dataclasses import asdict

    from ftchat import cli

    content = asdict(ev.ContentReport(nugget_rows=3, nugget_recall=0.5, complete_answers=1 / 3,
                                      broken_sentences=2, off_topic_per_answer=0.25, mean_answer_words=61))
    answers = {"in_scope_answered": 1.0, "out_of_scope_declined": 1.0, "citation_validity": 1.0,
               "support_rate": 1.0, "model_sentences_kept": 0.0, "model_written_share": 0.25,
               "extractive_rate": 1.0,
               "first_token_ms_p50": 1.0, "total_ms_p50": 2.0, "total_ms_p95": 3.0, "content": content}
    report = {"eval_file": "x.jsonl", "model": "m", "answers": answers,
              "retrieval": {"recall_at_1": 1.0, "recall_at_5": 1.0, "mrr": 1.0, "misses": []}}
    cli._print_eval_table(report, 4)
    out = capsys.readouterr().out
    assert "| nugget recall / complete answers (3 rows with nuggets) | 0.500 / 33.3% |" in out
    assert "| answer sentences in the model's own words | 25.0% |" in out
    assert "| broken sentences (dangling lead-in or pronoun, about the guide) | 2 |" in out
    assert "| off-topic sentences per answer | 0.25 |" in out and "| answer length, mean | 61 words |" in out


def test_a_follow_ups_repeated_sentences_are_counted_quoted_or_reworded(embedder) -> None:
    earlier = ["LoRA freezes the pre-trained weights and learns two small low-rank matrices. [1]"]
    quoted = "LoRA freezes the pre-trained weights and learns two small low-rank matrices. [2]"
    reworded = "LoRA keeps the pre-trained weights frozen and learns two small low-rank matrices. [1]"
    new = "The adapter files are only a few megabytes. [1]"
    assert ev.repeated_sentences(f"{quoted} {new}", earlier, embedder) == 1
    assert ev.repeated_sentences(f"{reworded} {new}", earlier, embedder) == 1
    assert ev.repeated_sentences(new, earlier, embedder) == 0
    # A declined earlier turn said nothing to repeat.
    assert ev.repeated_sentences(new, [f"{gate.NOT_COVERED} {new}"], embedder) == 0
