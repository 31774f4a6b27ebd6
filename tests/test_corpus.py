"""Loaders: Markdown heading trees, plain text, HTML, PDF, and bad input that must not stop a load."""

from __future__ import annotations

import os
import random

import pytest
from conftest import PDF_PAGE_1, PDF_PAGE_3, write_corpus

from ftchat.documents.corpus import CorpusError, display_path, load_sources, parse_html, parse_markdown


def by_path(sections):
    return {s.heading_path: s for s in sections}


# --- Markdown ------------------------------------------------------------------------------

TREE_MD = """\
# Guide

Intro to the guide.

## Key concepts

### Gradient accumulation

Sum gradients over micro-batches.

### LoRA ##

Low-rank adapters.

## Strategies

Full fine-tuning updates all weights.
"""


def test_markdown_heading_paths_and_line_locations():
    sections = parse_markdown(TREE_MD, "guide.md", "guide")
    assert [(s.heading_path, s.location) for s in sections] == [
        (("Guide",), "line 1"),
        (("Guide", "Key concepts", "Gradient accumulation"), "line 7"),
        (("Guide", "Key concepts", "LoRA"), "line 11"),  # closing #'s are not part of the title
        (("Guide", "Strategies"), "line 15"),
    ]
    assert by_path(sections)[("Guide", "Key concepts", "LoRA")].text == "Low-rank adapters."
    # A heading that only introduces sub-headings ("Key concepts") has no section of its own.
    assert ("Guide", "Key concepts") not in by_path(sections)


def test_markdown_code_fence_hash_lines_are_not_headings():
    text = (
        "# Setup\n\nInstall it:\n\n"
        "```bash\n# install the package\npip install peft\n## not a heading\n```\n\n"
        "More setup text.\n\n## Next\n\nAfter.\n"
    )
    sections = parse_markdown(text, "s.md", "s")
    assert [s.heading_path for s in sections] == [("Setup",), ("Setup", "Next")]
    setup = sections[0].text
    assert "# install the package" in setup and "## not a heading" in setup and "More setup text." in setup


def test_markdown_tilde_fence_and_longer_fence_with_inner_backticks():
    # CommonMark: a fence closes only on the same character, at least as long, with no info string.
    text = (
        "# Doc\n\n"
        "~~~markdown\n```\n# inside tilde fence\n```\n~~~\n\n"
        "````markdown\n```python\n# inside four-backtick fence\n```\n````\n\n"
        "## Real heading\n\nBody.\n"
    )
    sections = parse_markdown(text, "d.md", "d")
    assert [s.heading_path for s in sections] == [("Doc",), ("Doc", "Real heading")]
    assert "# inside tilde fence" in sections[0].text
    assert "# inside four-backtick fence" in sections[0].text


def test_markdown_setext_headings_are_sections_located_at_their_title_line():
    text = (
        "Guide\n=====\n\nIntro.\n\n"
        "Key concepts\n------------\n\nLoRA adds low-rank adapters.\n\n"
        "### LoRA\n\nRank and alpha.\n\n"
        "Second\nline title\n---\n\nTwo-line body.\n"
    )
    sections = parse_markdown(text, "g.md", "g")
    assert [(s.heading_path, s.location, s.text) for s in sections] == [
        (("Guide",), "line 1", "Intro."),
        (("Guide", "Key concepts"), "line 6", "LoRA adds low-rank adapters."),
        (("Guide", "Key concepts", "LoRA"), "line 11", "Rank and alpha."),
        # A setext title may span lines; the underline is not part of the body.
        (("Guide", "Second line title"), "line 15", "Two-line body."),
    ]


def test_markdown_hash_line_inside_a_fence_is_not_a_heading_though_a_fence_like_line_is_inside():
    # CommonMark: a closing fence may be indented by at most three spaces, so the four-space
    # ``` line below is code and the fence stays open over the '#' line.
    text = (
        "# Setup\n\n  ```markdown\nA list item with code:\n    ```\n# still code\n  ```\n\nAfter the code.\n"
    )
    sections = parse_markdown(text, "s.md", "s")
    assert [s.heading_path for s in sections] == [("Setup",)]
    # Verbatim, only stripped at its two ends as every section is.
    assert sections[0].text == (
        "```markdown\nA list item with code:\n    ```\n# still code\n  ```\n\nAfter the code."
    )


def test_markdown_heading_only_file_has_no_sections_and_no_error():
    assert parse_markdown("# Only a heading\n\n## And another\n", "h.md", "h") == []
    assert parse_markdown("Only a heading\n==============\n", "h.md", "h") == []


def test_markdown_skipped_heading_levels():
    text = "# A\n\n### C\n\ntext c\n\n## B\n\ntext b\n\n#### D\n\ntext d\n\n# E\n\ntext e\n"
    paths = [s.heading_path for s in parse_markdown(text, "x.md", "x")]
    assert paths == [("A", "C"), ("A", "B"), ("A", "B", "D"), ("E",)]


def test_markdown_empty_sections_and_text_before_first_heading():
    text = (
        "\n\nPreamble before any heading.\n\n# Title\n\n## Empty\n\n## Also empty\n   \n## Full\n\nContent.\n"
    )
    sections = parse_markdown(text, "my_notes.md", "my notes")
    assert [(s.heading_path, s.location) for s in sections] == [
        (("my notes",), "line 1"),
        (("Title", "Full"), "line 11"),
    ]
    assert all(s.text.strip() for s in sections)


def test_markdown_inline_markup_removed_from_headings():
    sections = parse_markdown("## `LoRA` *rank* and __alpha__\n\nbody\n", "x.md", "x")
    assert sections[0].heading_path == ("LoRA rank and alpha",)


def test_markdown_file_title_comes_from_file_name(tmp_path):
    write_corpus(tmp_path / "c", {"fine_tuning_notes.md": "No headings at all, just text.\n"})
    report = load_sources([tmp_path / "c"])
    assert [s.heading_path for s in report.sections] == [("fine tuning notes",)]
    assert report.sections[0].source == display_path(tmp_path / "c" / "fine_tuning_notes.md")


# --- Plain text ----------------------------------------------------------------------------


def test_text_with_invalid_utf8_is_decoded_with_replacement(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "latin1.txt").write_bytes(b"Caf\xe9 notes about LoRA adapters.\n\n\xff\xfe Second paragraph.\n")
    report = load_sources([corpus])
    assert report.warnings == []
    assert [s.location for s in report.sections] == ["line 1", "line 3"]
    assert report.sections[0].text == "Caf\ufffd notes about LoRA adapters."
    assert "Second paragraph." in report.sections[1].text


# --- HTML ----------------------------------------------------------------------------------

PAGE_HTML = """\
<!doctype html>
<html>
<head><title>Head title is not content</title>
<style>h1 { color: red; } .secretstyle {}</style>
<script>var secretscript = "<h2>not a heading</h2>";</script>
</head>
<body>
<h1>Fine-tuning</h1>
<p>Overview paragraph.</p>
<h2>Methods</h2>
<h3>LoRA &amp; QLoRA</h3>
<p>Low-rank adapters,
   spread over lines.</p>
<script>document.write("secretscript2")</script>
<ul><li>first item</li><li>second item</li></ul>
<h2>Data</h2>
<div>SMOTE balances classes.<style>.x{}</style></div>
</body>
</html>
"""


def test_html_heading_paths_and_skipped_script_style():
    sections = parse_html(PAGE_HTML, "page.html", "page")
    paths = [s.heading_path for s in sections]
    assert paths == [("Fine-tuning",), ("Fine-tuning", "Methods", "LoRA & QLoRA"), ("Fine-tuning", "Data")]
    lora = sections[1]
    assert lora.text == "Low-rank adapters, spread over lines.\n\nfirst item\n\nsecond item"
    assert lora.location == "line 12"  # where its text starts
    everything = " ".join(s.text for s in sections)
    for hidden in ("secretscript", "secretstyle", "Head title", "color: red", "not a heading"):
        assert hidden not in everything


# --- PDF -----------------------------------------------------------------------------------


def test_pdf_pages_located_and_empty_page_reported(tmp_path, make_pdf):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "paper.pdf").write_bytes(make_pdf([PDF_PAGE_1, "", PDF_PAGE_3]))
    report = load_sources([corpus])
    assert [(s.location, s.heading_path) for s in report.sections] == [
        ("page 1", ("paper",)),
        ("page 3", ("paper",)),
    ]
    assert "Direct Preference Optimization" in report.sections[0].text
    assert "zebrafinch" in report.sections[1].text
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "paper.pdf" in warning and "page(s) 2" in warning


def test_corrupt_pdf_is_skipped_with_a_warning_and_others_still_load(tmp_path):
    rng = random.Random(1234)
    corpus = write_corpus(tmp_path / "c", {"good.md": "# Good\n\nLoRA text here.\n"})
    (corpus / "broken.pdf").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (corpus / "truncated.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")
    report = load_sources([corpus])
    assert [s.heading_path for s in report.sections] == [("Good",)]
    assert len(report.files) == 3
    for name in ("broken.pdf", "truncated.pdf"):
        assert any(name in w for w in report.warnings), (name, report.warnings)


# --- Files that are not documents ---------------------------------------------------------------


def test_unsupported_binary_and_hidden_files_are_ignored(tmp_path):
    corpus = write_corpus(tmp_path / "c", {"doc.md": "# Doc\n\nReal content.\n"})
    (corpus / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(256))
    (corpus / "model.bin").write_bytes(os.urandom(256))
    (corpus / "notes.docx").write_bytes(b"PK\x03\x04" + os.urandom(64))
    (corpus / "data.txt").write_bytes(b"abc\x00\x01\x02" * 50)  # a binary file with a text suffix
    write_corpus(corpus / ".git", {"HEAD.md": "# Hidden\n\nsecret\n"})
    (corpus / ".hidden.md").write_text("# Hidden too\n\nsecret\n")
    report = load_sources([corpus])
    assert sorted(p.name for p in report.files) == ["data.txt", "doc.md"]
    assert [s.heading_path for s in report.sections] == [("Doc",)]
    assert len(report.warnings) == 1 and "data.txt" in report.warnings[0] and "binary" in report.warnings[0]


def test_missing_corpus_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="not found") as info:
        load_sources([tmp_path / "nope"])
    assert str(tmp_path / "nope") in str(info.value)


def test_empty_corpus_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="No documents") as info:
        load_sources([tmp_path / "empty"])
    assert str(tmp_path / "empty") in str(info.value) and ".md" in str(info.value)


def test_folder_with_only_unsupported_files_is_a_clear_error(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(CorpusError, match="No documents"):
        load_sources([tmp_path / "c"])


def test_documents_without_text_are_a_clear_error(tmp_path):
    write_corpus(tmp_path / "c", {"a.md": "# Only a heading\n", "b.txt": "\n\n   \n"})
    with pytest.raises(CorpusError, match="no readable text"):
        load_sources([tmp_path / "c"])


def test_open_index_with_missing_corpus_folder_names_the_setting(tmp_path):
    from conftest import settings_for

    from ftchat.index.store import open_index

    with pytest.raises(CorpusError, match="FTCHAT_CORPUS_DIR"):
        open_index(settings_for(tmp_path))
    assert not (tmp_path / "index").exists() or not any((tmp_path / "index").iterdir())


def test_a_corpus_profile_names_its_own_words(tmp_path, caplog):
    from ftchat.answering.policy import EVIDENCE
    from ftchat.config import default_corpus_dir
    from ftchat.documents.corpus import CorpusProfile, load_profile

    guide = load_profile(default_corpus_dir())
    assert guide.about_section == "About this guide"
    policy = EVIDENCE.for_corpus(guide.about_section, guide.self_reference)
    assert policy.about_the_document.search("As part 2 of this book explains, ...")
    assert not EVIDENCE.about_the_document.search("As part 2 of this book explains, ...")
    assert load_profile(tmp_path) == CorpusProfile()  # no profile: none of the guide's words
    (tmp_path / "corpus.toml").write_text("self_reference = '(unclosed'\n", encoding="utf-8")
    assert load_profile(tmp_path) == CorpusProfile()
    assert "corpus.toml" in caplog.text
    (tmp_path / "corpus.toml").write_text("about_section = \n", encoding="utf-8")
    assert load_profile(tmp_path) == CorpusProfile()
