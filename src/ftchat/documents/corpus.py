"""Load documents into sections: a heading path, a location (line or page) and text.

Every loader is tolerant of bad input: an unreadable file becomes a warning naming it,
never an exception that stops the rest of the corpus from loading.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ftchat.config import IN_CHECKOUT, REPO_ROOT, SHIPPED_CORPUS

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {".md", ".markdown", ".txt", ".pdf", ".html", ".htm"}


@dataclass(frozen=True)
class Section:
    source: str  # display path: relative to the repository when inside it
    heading_path: tuple[str, ...]
    location: str  # "line 12" or "page 3"
    text: str


@dataclass
class LoadReport:
    sections: list[Section] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        # Logged once by whoever builds the index, and kept in its manifest.
        self.warnings.append(message)


class CorpusError(Exception):
    """The corpus cannot be used at all (missing or empty)."""


def display_path(path: Path) -> str:
    """Relative to the repository in a checkout; the guide an installed package carries
    shows as corpus/..., so a citation reads the same however ftchat was installed."""
    path = path.resolve()
    root, shown_as = (REPO_ROOT, Path()) if IN_CHECKOUT else (SHIPPED_CORPUS, Path("corpus"))
    return str(shown_as / path.relative_to(root)) if path.is_relative_to(root) else str(path)


# What the pipeline needs to know about a corpus's own words, from this file in its folder.
PROFILE_FILE = "corpus.toml"


@dataclass(frozen=True)
class CorpusProfile:
    """A corpus's words about itself: the top heading of its section about itself, and a
    regular expression for its sentences that name its own parts. Empty: none."""

    about_section: str = ""
    self_reference: str = ""


def load_profile(corpus_dir: Path) -> CorpusProfile:
    """The corpus's profile (PROFILE_FILE); a missing file is an empty profile, and a
    damaged one is too, with one warning naming it."""
    path = corpus_dir / PROFILE_FILE
    if not path.is_file():
        return CorpusProfile()
    try:
        data = tomllib.loads(read_text(path))
        profile = CorpusProfile(str(data.get("about_section", "")), str(data.get("self_reference", "")))
        re.compile(profile.self_reference)
    except (tomllib.TOMLDecodeError, re.error) as exc:
        log.warning("Ignoring %s (%s); the corpus is read without its profile", display_path(path), exc)
        return CorpusProfile()
    return profile


def read_text(path: Path) -> str:
    # Undecodable bytes become U+FFFD rather than failing the whole file.
    return path.read_bytes().decode("utf-8", errors="replace")


# --- Markdown -------------------------------------------------------------------------


def parse_markdown(text: str, source: str, title: str) -> list[Section]:
    """Split Markdown along its headings (ATX and setext), as CommonMark reads them: a '#'
    line inside a code fence is code, not a heading.

    markdown-it finds the headings and their lines; each section's text is then cut from
    the file's own lines, so it stays verbatim (the chunker and the citations quote it)."""
    # Split as markdown-it does (it normalizes \r\n and \r only), so its line numbers index
    # these lines; str.splitlines would also break on \f or U+2028 and shift them.
    lines = re.sub(r"\r\n?", "\n", text).split("\n")
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    located_at, body_from = 0, 0  # 0-based: the heading's first line, the body's first line

    def flush(end: int) -> None:
        content = "\n".join(lines[body_from:end]).strip()
        if content:
            path = tuple(h for _, h in stack) or (title,)
            sections.append(Section(source, path, f"line {located_at + 1}", content))

    for level, heading, (first, after) in _markdown_headings(text):
        flush(first)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        # A reader points at the heading, so the section is located there; its text starts
        # after the heading's last line (for setext, after the underline).
        located_at, body_from = first, after
    flush(len(lines))
    return sections


def _markdown_headings(text: str) -> list[tuple[int, str, tuple[int, int]]]:
    """(level, plain title, 0-based [first, after) line range) of each top-level heading."""
    from markdown_it import MarkdownIt  # imported here: the CLI starts without it

    tokens = MarkdownIt("commonmark").parse(text)
    headings = []
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        # Level 0 only: a heading inside a block quote or a list item would cut that block
        # in two, leaving half a quote or half a list in each section.
        if opening.type != "heading_open" or opening.level != 0 or opening.map is None:
            continue
        heading = _plain_inline(inline.children or [])
        if heading:  # "##" alone names nothing; it stays in the text
            first, after = opening.map
            headings.append((int(opening.tag[1]), heading, (first, after)))
    return headings


def _plain_inline(tokens: list) -> str:
    """A heading's words without markup: `code` keeps its text, links their label."""
    parts = []
    for token in tokens:
        if token.type in {"text", "code_inline", "text_special"}:
            parts.append(token.content)
        elif token.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif token.children:  # an image's alt text
            parts.append(_plain_inline(token.children))
    return " ".join("".join(parts).split())


# --- Plain text -----------------------------------------------------------------------


def parse_text(text: str, source: str, title: str) -> list[Section]:
    """Paragraphs of a plain text file, each located by its first line."""
    sections: list[Section] = []
    paragraph: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip():
            if not paragraph:
                start = number
            paragraph.append(line.strip())
        elif paragraph:
            sections.append(Section(source, (title,), f"line {start}", " ".join(paragraph)))
            paragraph = []
    return sections


# --- HTML -----------------------------------------------------------------------------


class _HTMLSections(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "head"}
    BLOCK = {"p", "div", "li", "br", "tr", "section", "article", "pre", "blockquote", "dd", "dt"}

    def __init__(self, source: str, title: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source, self.title = source, title
        self.stack: list[tuple[int, str]] = []
        self.sections: list[Section] = []
        self.parts: list[str] = []
        self.start_line = 1
        self.skip_depth = 0
        self.heading_level = 0
        self.heading_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skip_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._flush()
            self.heading_level = int(tag[1])
            self.heading_text = []
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.heading_level:
            heading = " ".join("".join(self.heading_text).split())
            while self.stack and self.stack[-1][0] >= self.heading_level:
                self.stack.pop()
            if heading:
                self.stack.append((self.heading_level, heading))
            self.heading_level = 0
            self.start_line = self.getpos()[0]

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        if self.heading_level:
            self.heading_text.append(data)
        else:
            if not "".join(self.parts).strip():
                self.start_line = self.getpos()[0]
            self.parts.append(re.sub(r"\s+", " ", data))  # source line breaks are not paragraphs

    def _flush(self) -> None:
        paragraphs = [" ".join(p.split()) for p in "".join(self.parts).split("\n")]
        text = "\n\n".join(p for p in paragraphs if p)
        if text:
            path = tuple(h for _, h in self.stack) or (self.title,)
            self.sections.append(Section(self.source, path, f"line {self.start_line}", text))
        self.parts = []

    def close(self) -> None:
        super().close()
        self._flush()


def parse_html(text: str, source: str, title: str) -> list[Section]:
    parser = _HTMLSections(source, title)
    parser.feed(text)
    parser.close()
    return parser.sections


# --- PDF ------------------------------------------------------------------------------


def parse_pdf(path: Path, source: str, title: str, report: LoadReport) -> list[Section]:
    """One section per page that has a text layer; image-only pages are reported by number."""
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    if reader.is_encrypted:
        reader.decrypt("")  # many "encrypted" PDFs use an empty user password
    sections: list[Section] = []
    empty: list[int] = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except Exception as exc:  # pypdf raises many types on damaged pages
            report.warn(f"{source}: page {number} could not be read ({exc}); skipped")
            continue
        # A handful of stray characters is an OCR-less image page, not content.
        if len(re.findall(r"\w", text)) < 20:
            empty.append(number)
            continue
        sections.append(Section(source, (title,), f"page {number}", _tidy_pdf_text(text)))
    if empty:
        pages = ", ".join(str(n) for n in empty)
        report.warn(f"{source}: no extractable text on page(s) {pages} (images?); not indexed")
    return sections


def _tidy_pdf_text(text: str) -> str:
    text = re.sub(r"-\n(\w)", r"\1", text)  # re-join words hyphenated across lines
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"[ \t]+", " ", "\n".join(line for line in lines if line))


# --- Folder walking -------------------------------------------------------------------


def iter_files(sources: list[Path]) -> list[Path]:
    """Every supported file under the given files and folders, sorted, without duplicates."""
    found: dict[Path, None] = {}
    for source in sources:
        if source.is_file():
            candidates = [source]
        elif source.is_dir():
            candidates = sorted(p for p in source.rglob("*") if p.is_file())
        else:
            continue
        for path in candidates:
            if path.suffix.lower() in SUPPORTED_SUFFIXES and not any(
                part.startswith(".") for part in path.relative_to(source.parent).parts
            ):
                found[path.resolve()] = None
    return sorted(found)


def load_file(path: Path, report: LoadReport) -> list[Section]:
    source = display_path(path)
    title = path.stem.replace("_", " ")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pdf":
            return parse_pdf(path, source, title, report)
        text = read_text(path)
        if "\x00" in text[:4096]:
            report.warn(f"{source}: looks like a binary file, not text; skipped")
            return []
        if suffix in {".md", ".markdown"}:
            return parse_markdown(text, source, title)
        if suffix in {".html", ".htm"}:
            return parse_html(text, source, title)
        return parse_text(text, source, title)
    except Exception as exc:  # one bad file must not stop the others
        report.warn(f"{source}: could not be read ({type(exc).__name__}: {exc}); skipped")
        return []


def load_sources(sources: list[Path]) -> LoadReport:
    """Load every supported file under `sources`. Missing or empty sources are an error."""
    report = LoadReport()
    for source in sources:
        if not source.exists():
            raise CorpusError(f"Corpus source not found: {source}")
    report.files = iter_files(sources)
    if not report.files:
        names = ", ".join(str(s) for s in sources)
        kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise CorpusError(f"No documents to index in {names} (looked for {kinds})")
    for path in report.files:
        report.sections.extend(load_file(path, report))
    if not report.sections:
        raise CorpusError("The documents contain no readable text; nothing to index")
    return report
