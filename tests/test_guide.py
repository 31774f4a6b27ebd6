"""The guide to browse: its table of contents and whole sections, from the index's chunks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ftchat.api import Assistant
from ftchat.config import REPO_ROOT
from ftchat.documents.book import Guide, SectionNotFound
from ftchat.documents.chunking import chunk_sections
from ftchat.documents.corpus import display_path, load_sources
from ftchat.page.uploads import index_uploads

CORPUS = REPO_ROOT / "corpus"
ROOT = display_path(CORPUS)


def real_guide(max_words: int = 220) -> Guide:
    report = load_sources([CORPUS])
    return Guide(chunk_sections(report.sections, max_words), ROOT)


def walk(entries, depth=1):
    for entry in entries:
        yield depth, entry
        yield from walk(entry.children, depth + 1)


def headings_in_files(level: str) -> list[str]:
    """The guide's headings of one level, read straight from the Markdown."""
    found = []
    for path in sorted(CORPUS.glob("*.md")):
        found += [m.group(1).strip() for m in re.finditer(rf"^{level} (.+)$", path.read_text(), re.M)]
    return found


def test_contents_are_the_guides_heading_tree():
    guide = real_guide()
    parts = [e.title for e in guide.contents.guide]
    # The two "Key concepts" files make one part, in the order the files come.
    assert parts == ["About this guide", "Key concepts", "Fine-tuning strategies"]
    entries = list(walk(guide.contents.guide))
    assert sorted(e.title for d, e in entries if d == 2) == sorted(headings_in_files("##"))
    assert sorted(e.title for d, e in entries if d == 3) == sorted(headings_in_files("###"))
    concepts = guide.contents.guide[1]
    sources = {c.source for c in concepts.children}
    assert sources == {"corpus/01-key-concepts-foundations.md", "corpus/02-key-concepts-practice.md"}
    for depth, entry in entries:
        assert len(entry.path) == depth and entry.path[-1] == entry.title and entry.document is None
    assert guide.contents.documents == ()


def test_a_section_is_its_whole_text_with_heading_path_and_place():
    # Small chunks, so the section is cut into several: the section joins them all again.
    guide = real_guide(max_words=40)
    path = ("Key concepts", "Training process", "Gradient accumulation")
    section = guide.section(path)
    assert section.title == "Key concepts › Training process › Gradient accumulation"
    assert [(p.source, p.location) for p in section.places] == [
        ("corpus/01-key-concepts-foundations.md", "line 187")]
    lines = (CORPUS / "01-key-concepts-foundations.md").read_text().splitlines()
    start = lines.index("### Gradient accumulation") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("#"))
    expected = " ".join(" ".join(lines[start:end]).split())
    assert " ".join(section.text.split()) == expected
    assert section.subsections == ()
    # A citation names the file: the guide's files all lead to the same section.
    assert guide.section(path, "corpus/01-key-concepts-foundations.md") == section


def test_a_category_lists_its_terms_and_a_part_its_files():
    guide = real_guide()
    category = guide.section(("Key concepts", "Data preparation"))
    assert category.text.strip()
    assert [e.title for e in category.subsections][:2] == [
        "Data collection for domain-specific fine-tuning", "Data cleaning and noise removal"]
    part = guide.section(("Key concepts",))
    assert {p.source for p in part.places} <= {
        "corpus/01-key-concepts-foundations.md", "corpus/02-key-concepts-practice.md"}
    assert len(part.subsections) == len(guide.contents.guide[1].children)


def test_unknown_sections_are_named_in_the_message():
    guide = real_guide()
    with pytest.raises(SectionNotFound, match="No section 'Key concepts › Nothing' in the guide"):
        guide.section(("Key concepts", "Nothing"))
    with pytest.raises(SectionNotFound, match="No added document"):
        guide.section(("Zorblax tuning",), "/elsewhere/zorblax.md")
    with pytest.raises(SectionNotFound, match="Give a heading path"):
        guide.section(())


def test_added_documents_have_their_own_heading(indexed_settings, tmp_path):
    notes = tmp_path / "zorblax notes.md"
    # Its first heading is also one of the guide's: it must not land inside the guide's part.
    notes.write_text("# Fine-tuning guide\n\n## Zorblax tuning\n\nZorblax tuning adjusts purple "
                     "layers only.\n", encoding="utf-8")
    assistant = Assistant(indexed_settings)
    before = assistant.contents()
    assert before.documents == ()
    guide_terms = [e.title for _, e in walk(before.guide)]
    assert "Gradient accumulation" in guide_terms and "Zorblax tuning" not in guide_terms

    lines = index_uploads(assistant, [("zorblax notes.md", notes)])
    assert "Added" in lines[0], lines
    after = assistant.contents()  # reload() switched the index: the contents follow
    assert after.guide == before.guide
    (document,) = after.documents
    source = display_path(notes)
    assert (document.title, document.path, document.document) == ("zorblax notes.md", (), source)
    assert [e.title for _, e in walk(document.children)] == ["Fine-tuning guide", "Zorblax tuning"]
    section = assistant.section(("Fine-tuning guide", "Zorblax tuning"), source)
    assert section.text == "Zorblax tuning adjusts purple layers only."
    assert section.document == source and section.places[0].source == source
    with pytest.raises(SectionNotFound):
        assistant.section(("Fine-tuning guide", "Zorblax tuning"))  # not in the guide


def test_the_guide_needs_no_model(indexed_settings, monkeypatch):
    import ftchat.api

    def no_models(*_args, **_kwargs):
        raise AssertionError("browsing the guide loaded a model")

    monkeypatch.setattr(ftchat.api, "get_embedder", no_models)
    monkeypatch.setattr(ftchat.api, "get_generator", no_models)
    assistant = Assistant(indexed_settings)
    # A plain text file is one heading, its name.
    assert [e.title for e in assistant.contents().guide] == ["Fine-tuning guide", "notes", "Strategies"]
    assert assistant.section(("Strategies", "Full fine-tuning")).text.startswith("Full fine-tuning")


def test_guide_sources_outside_a_checkout_are_absolute(tmp_path):
    # A corpus outside the repository shows as absolute paths; the root must match them.
    from ftchat.documents.chunking import Chunk

    root = str(tmp_path / "guide")
    chunks = [Chunk("a", f"{root}/a.md", ("A",), "line 1", "Alpha."),
              Chunk("b", f"{root}-extra/b.md", ("A",), "line 1", "Beta.")]
    guide = Guide(chunks, display_path(Path(root)))
    assert guide.section(("A",)).text == "Alpha."
    assert [d.source for d in guide.contents.documents] == [f"{root}-extra/b.md"]
