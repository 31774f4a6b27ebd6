"""The Guide view's HTML: links that survive any heading, and nothing a document says runs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from ftchat.documents.book import Guide, SectionNotFound
from ftchat.documents.chunking import Chunk
from ftchat.page.book_tab import contents_html, section_html
from ftchat.page.render import parse_address, section_href

ODD = ("Part <1> & \"two\"", "50% / 100% › done?", "emoji 🎉 #guide=[\"x\"]")


def guide_with_upload() -> Guide:
    chunks = [
        Chunk("a", "corpus/a.md", ("Key concepts",), "line 1", "Intro."),
        Chunk("b", "corpus/a.md", ("Key concepts", "LoRA"), "line 3", "LoRA **freezes** weights."),
        Chunk("c", "/data/index/uploads/evil.md", ("<script>alert(1)</script>",), "line 1",
              "Raw <img src=x onerror=alert(1)> and ![pic](http://example.com/p.png)."),
    ]
    return Guide(chunks, "corpus")


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(markup: str) -> list[tuple[str, dict]]:
    parser = Tags()
    parser.feed(markup)
    return parser.tags


def test_a_link_names_its_section_whatever_the_headings_hold():
    href = section_href("corpus/a b.md", ODD)
    assert href.startswith("#guide=") and re.fullmatch(r"#guide=[A-Za-z0-9%._~-]+", href)
    assert parse_address(href[len("#guide="):]) == ("corpus/a b.md", ODD)
    for bad in ("", "%5B%5D", "not json", "%7B%22a%22%3A1%7D", "%5B1%2C2%5D"):
        with pytest.raises(SectionNotFound, match="does not name a section"):
            parse_address(bad)


def test_contents_are_headings_and_links_in_order():
    guide = guide_with_upload()
    markup = contents_html(guide.contents, guide.section(("Key concepts", "LoRA")))
    found = tags(markup)
    assert found[0] == ("nav", {"class": "guide-toc", "aria-labelledby": "guide-toc-title"})
    assert [t for t, _ in found if t in ("h2", "h3")] == ["h2", "h3", "h3"]
    assert re.findall(r"<h3>(?:<a [^>]*>)?([^<]+)", markup) == ["Key concepts", "Added documents"]
    links = [a for t, a in found if t == "a"]
    addresses = [parse_address(a["href"][len("#guide="):]) for a in links]
    assert addresses == [("corpus/a.md", ("Key concepts",)), ("corpus/a.md", ("Key concepts", "LoRA")),
                         ("/data/index/uploads/evil.md", ()),
                         ("/data/index/uploads/evil.md", ("<script>alert(1)</script>",))]
    assert [a.get("aria-current") for a in links] == [None, "true", None, None]
    assert "<script>" not in markup and "&lt;script&gt;" in markup


def test_a_documents_section_shows_its_text_and_never_its_markup():
    guide = guide_with_upload()
    section = guide.section(("<script>alert(1)</script>",), "/data/index/uploads/evil.md")
    markup = section_html(section)
    assert [t for t, _ in tags(markup)].count("script") == 0
    assert "<img" not in markup  # neither raw HTML nor a Markdown image: nothing is fetched
    assert "uploads/evil.md, line 1" in markup
    crumbs = re.search(r'<nav class="guide-crumbs".*?</nav>', markup).group(0)
    assert re.sub(r"<[^>]+>", "|", crumbs).split("|").count("evil.md") == 1
    lora = section_html(guide.section(("Key concepts", "LoRA")))
    assert "<strong>freezes</strong>" in lora and 'aria-current="location">LoRA<' in lora
    assert '<h2 id="guide-section-title" tabindex="-1">LoRA</h2>' in lora
