"""What the page shows and what it hands out as Markdown, from turns built by hand (no model)."""

from __future__ import annotations

import html
import re

from ftchat.answering.answer import Answer, AnswerMode, Citation
from ftchat.answering.retrieval import Passage
from ftchat.documents.chunking import Chunk
from ftchat.page.render import (
    answer_markdown,
    assistant_message,
    chat_messages,
    conversation_markdown,
    shown_answer_text,
)

QLORA = Passage(Chunk("c1", "corpus/01-key-concepts-foundations.md",
                      ("Key concepts", "Advanced fine-tuning techniques", "QLoRA (Quantized LoRA)"),
                      "line 309", "QLoRA combines LoRA with a 4-bit base model."), 0.6, 1, 0.57, 6.0)
MEMORY = Passage(Chunk("c2", "corpus/02-key-concepts-practice.md",
                       ("Key concepts", "Cost management", "GPU memory budgeting for fine-tuning"),
                       "line 137", "A 7B model's weights take about 4 GB in 4 bits."), 0.5, 2, 0.46, 7.6)
TEXT = "QLoRA combines LoRA with a 4-bit base model. [1] A 7B model's weights take about 4 GB. [2]"


def answer(text: str = TEXT, answerable: bool = True) -> Answer:
    citations = [Citation(1, QLORA, [QLORA.chunk.text]), Citation(2, MEMORY, [MEMORY.chunk.text])]
    return Answer(question="What is QLoRA?", text=text, answerable=answerable,
                  citations=citations if answerable else [], passages=[QLORA, MEMORY], model="scripted",
                  timings={}, tokens=0, mode=AnswerMode.EXTRACTIVE if answerable else AnswerMode.DECLINED)


def test_a_copied_answer_spells_its_citations_out_as_heading_paths():
    assert answer_markdown(answer()) == (
        f"{TEXT}\n\nSources:\n\n"
        "- [1] Key concepts › Advanced fine-tuning techniques › QLoRA (Quantized LoRA) "
        "(corpus/01-key-concepts-foundations.md · line 309)\n"
        "- [2] Key concepts › Cost management › GPU memory budgeting for fine-tuning "
        "(corpus/02-key-concepts-practice.md · line 137)"
    )
    declined = answer("The guide doesn't cover that.", answerable=False)
    assert answer_markdown(declined) == "The guide doesn't cover that."


def test_the_copy_button_gets_the_same_markdown_the_download_has():
    turn = {"id": 1, "question": "What is QLoRA?", "answer": answer()}
    content = assistant_message(turn)["content"]
    copied = re.search(r'class="ft-copy" data-copy="([^"]*)"', content)
    assert copied and html.unescape(copied.group(1)) == answer_markdown(turn["answer"])
    assert answer_markdown(turn["answer"]) in conversation_markdown([turn])


def test_the_conversation_downloads_as_markdown_with_each_question_a_heading():
    turns = [
        {"id": 1, "question": "What is QLoRA?", "answer": answer()},
        {"id": 2, "question": "what does it\ncost?", "pending": True, "text": "", "note": "Waiting"},
        {"id": 3, "question": "What is the capital of France?",
         "answer": answer("The guide doesn't cover that.", answerable=False)},
    ]
    document = conversation_markdown(turns)
    assert document.startswith("# Conversation with ftchat\n")
    headings = re.findall(r"^## (.*)$", document, re.MULTILINE)
    assert headings == ["What is QLoRA?", "What is the capital of France?"]
    assert "- [2] Key concepts › Cost management › GPU memory budgeting" in document


def test_a_pending_turn_shows_its_status_apart_from_its_text():
    turn = {"id": 1, "question": "What is QLoRA?", "pending": True, "text": "",
            "note": "Searching the guide…"}
    waiting = chat_messages([turn])[1]["content"]
    assert "Searching the guide…" in waiting and shown_answer_text(waiting) == ""
    turn.update(text="QLoRA combines LoRA with a 4-bit base model. [1]",
                note="Checking the answer against the guide…")
    checking = chat_messages([turn])[1]["content"]
    assert "Checking the answer against the guide…" in checking
    assert shown_answer_text(checking) == "QLoRA combines LoRA with a 4-bit base model. [1]"
    final = assistant_message({"id": 1, "question": "What is QLoRA?", "answer": answer()})["content"]
    assert shown_answer_text(final).startswith(TEXT)
