"""Chunks: stable ids, splitting of long sections on natural boundaries, JSON round trip."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SMALL_CORPUS, write_corpus

from ftchat.documents.chunking import TITLE_SEPARATOR, Chunk, chunk_sections
from ftchat.documents.corpus import Section, load_sources
from ftchat.text import SENTENCE_END, split_sentences


def sentence(i: int, words: int = 12) -> str:
    body = " ".join(f"w{i}x{j}" for j in range(words - 1))
    return f"Sentence{i} {body}."


def test_same_input_gives_same_ids(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    first = chunk_sections(load_sources([corpus]).sections, 170)
    second = chunk_sections(load_sources([corpus]).sections, 170)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert all(re.fullmatch(r"[0-9a-f]{16}", c.id) for c in first)


def test_ids_survive_text_edits_but_differ_by_heading_path_and_source():
    a = Section("a.md", ("Guide", "LoRA"), "line 3", "Low-rank adapters.")
    a_edited = Section("a.md", ("Guide", "LoRA"), "line 3", "Low-rank adapters, now explained differently.")
    b = Section("a.md", ("Guide", "QLoRA"), "line 9", "Low-rank adapters.")
    c = Section("b.md", ("Guide", "LoRA"), "line 3", "Low-rank adapters.")
    ids = {
        name: chunk_sections([s], 170)[0].id for name, s in {"a": a, "a2": a_edited, "b": b, "c": c}.items()
    }
    assert ids["a"] == ids["a2"]
    assert len({ids["a"], ids["b"], ids["c"]}) == 3


def test_repeated_heading_paths_still_get_unique_ids():
    # Two "## Example" sections under the same parent in one file.
    sections = [
        Section("a.md", ("Guide", "Example"), "line 1", "First example."),
        Section("a.md", ("Guide", "Example"), "line 9", "Second example."),
    ]
    chunks = chunk_sections(sections, 170)
    assert len({c.id for c in chunks}) == 2
    assert [c.location for c in chunks] == ["line 1", "line 9"]


def test_short_section_is_one_chunk_with_its_metadata():
    section = Section("a.md", ("A", "B"), "line 4", "Short text.\n\nSecond paragraph.")
    [chunk] = chunk_sections([section], 170)
    assert (chunk.source, chunk.heading_path, chunk.location) == ("a.md", ("A", "B"), "line 4")
    assert chunk.text == "Short text.\n\nSecond paragraph."


def test_long_section_splits_on_paragraph_boundaries():
    paragraphs = [" ".join(sentence(p * 10 + s) for s in range(5)) for p in range(6)]  # 60 words each
    section = Section("a.md", ("Guide", "Long"), "line 1", "\n\n".join(paragraphs))
    chunks = chunk_sections([section], 130)
    assert len(chunks) == 3
    for chunk in chunks:
        assert len(chunk.text.split()) <= 130
        # whole paragraphs only: every piece is a run of the original paragraphs
        assert all(p in paragraphs for p in chunk.text.split("\n\n"))
        assert chunk.heading_path == ("Guide", "Long") and chunk.location == "line 1"
    assert [p for c in chunks for p in c.text.split("\n\n")] == paragraphs
    assert len({c.id for c in chunks}) == 3


def test_long_paragraph_splits_on_sentence_boundaries():
    sentences = [sentence(i) for i in range(30)]  # 360 words in one paragraph
    section = Section("a.md", ("Guide", "Run-on"), "line 1", " ".join(sentences))
    chunks = chunk_sections([section], 50)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk.text.split()) <= 50
        assert chunk.text.rstrip().endswith(".")  # never cut mid-sentence
    joined = " ".join(c.text for c in chunks).split()
    assert joined == " ".join(sentences).split()  # nothing lost, order kept


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("LoRA trains adapters. QLoRA quantizes. 4-bit weights help!",
         ["LoRA trains adapters.", "QLoRA quantizes.", "4-bit weights help!"]),
        # An answer's citation markers stay with their sentence, however they are spaced.
        ("LoRA trains adapters. [1] QLoRA quantizes.[2, 3] Done [4].",
         ["LoRA trains adapters. [1]", "QLoRA quantizes.[2, 3]", "Done [4]."]),
        ("The last sentence. [3]", ["The last sentence. [3]"]),
        # After an abbreviation, or before a lower-case word, a full stop ends nothing.
        ("Hu et al. (2021) proposed it. Use e.g. LoRA, i.e. adapters. See Fig. 2 now.",
         ["Hu et al. (2021) proposed it.", "Use e.g. LoRA, i.e. adapters.", "See Fig. 2 now."]),
        ("It works. (Mostly) it stops. and so on. \"Quoted.\" Next.",
         ["It works.", "(Mostly) it stops. and so on.", '"Quoted." Next.']),
        # The model writes its sources' numbers in front of a sentence, too.
        ("It ends in production.\n[2] (Accuracy) The main pitfall.",
         ["It ends in production. [2]", "(Accuracy) The main pitfall."]),
        # A blank line always ends a sentence; other white space is flattened.
        ("A list:\n\nfirst item\nwraps here", ["A list:", "first item wraps here"]),
    ],
)
def test_the_one_sentence_rule(text, sentences):
    assert split_sentences(text) == sentences


def test_a_stream_finds_a_sentence_end_only_once_the_next_sentence_begins():
    assert SENTENCE_END.search("LoRA trains adapters.") is None
    assert SENTENCE_END.search("LoRA trains adapters. [1]") is None  # more markers may follow
    match = SENTENCE_END.search("LoRA trains adapters. [1] Q")
    assert match and "LoRA trains adapters. [1] Q"[: match.end()] == "LoRA trains adapters. [1] "


def test_sentence_longer_than_limit_is_cut_by_words():
    words = [f"tok{i}" for i in range(425)]
    chunks = chunk_sections([Section("t.txt", ("t",), "line 1", " ".join(words))], 100)
    assert [len(c.text.split()) for c in chunks] == [100, 100, 100, 100, 25]
    assert " ".join(c.text for c in chunks).split() == words


def test_embedding_text_starts_with_heading_path():
    chunk = Chunk(
        "id", "a.md", ("Key concepts", "Training process", "Gradient accumulation"), "line 3", "Body."
    )
    assert chunk.title == "Key concepts › Training process › Gradient accumulation"
    assert TITLE_SEPARATOR == " › "
    assert chunk.embedding_text() == "Key concepts › Training process › Gradient accumulation\nBody."


def test_every_piece_of_a_split_section_carries_the_heading_path():
    section = Section("a.md", ("Guide", "Long"), "line 1", " ".join(sentence(i) for i in range(40)))
    chunks = chunk_sections([section], 40)
    assert len(chunks) > 1  # else no piece of a split section was looked at
    for chunk in chunks:
        assert chunk.embedding_text().startswith("Guide › Long\n")


def test_chunk_json_round_trip():
    chunk = Chunk(
        "0123456789abcdef", "docs/ü.md", ("Ünïcode", "LoRA › QLoRA"), "page 2", 'Text "quoted"\n\nnext ✓'
    )
    row = json.loads(json.dumps(chunk.to_json(), ensure_ascii=False))
    assert row == {
        "id": "0123456789abcdef",
        "source": "docs/ü.md",
        "heading_path": ["Ünïcode", "LoRA › QLoRA"],
        "location": "page 2",
        "text": 'Text "quoted"\n\nnext ✓',
    }
    back = Chunk.from_json(row)
    assert back == chunk and isinstance(back.heading_path, tuple)


def test_small_corpus_chunks_cover_every_section(tmp_path):
    corpus = write_corpus(tmp_path / "c", SMALL_CORPUS)
    report = load_sources([corpus])
    chunks = chunk_sections(report.sections, 170)
    titles = {c.title for c in chunks}
    assert "Fine-tuning guide › Key concepts › Gradient accumulation" in titles
    assert "Fine-tuning guide › Data preparation › Imbalanced data" in titles
    assert "Strategies › Elastic Weight Consolidation" in titles
    assert len(chunks) == len(report.sections)  # every section is short here
