"""The indexed sections read as a book: the table of contents and whole sections.

    guide = assistant.guide()                     # the Guide over the current index
    guide.contents.guide                          # parts › categories › terms, as Entry trees
    guide.contents.documents                      # one Entry per added document
    guide.section(("Key concepts", "Training process", "Gradient accumulation"))
    guide.section(("Zorblax tuning",), source="index/uploads/zorblax.md")

Everything comes from the index's chunks, so the contents are exactly what answers can
cite. The guide's files share one tree ("Key concepts" spans two files); each added
document has a tree of its own, so its headings never mix with the guide's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftchat.documents.chunking import TITLE_SEPARATOR, Chunk


class SectionNotFound(LookupError):
    """No section has this heading path (in the guide, or in the document named)."""


@dataclass(frozen=True)
class Entry:
    """One heading of the contents: a part, a category or a term, or an added document
    (whose entry has the file name as title and an empty path)."""

    title: str
    path: tuple[str, ...]
    source: str  # the file it is in; for a heading the guide's files share, the first
    document: str | None  # None for the guide, else the added document's source
    has_text: bool  # whether the heading has text of its own, not only subsections
    children: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Contents:
    guide: tuple[Entry, ...]
    documents: tuple[Entry, ...]


@dataclass(frozen=True)
class Place:
    source: str
    location: str  # "line 12" or "page 3"


@dataclass(frozen=True)
class GuideSection:
    """A heading's whole text (its chunks joined in order) and where it comes from."""

    path: tuple[str, ...]
    document: str | None
    text: str
    places: tuple[Place, ...]  # one per file the heading's text is in
    subsections: tuple[Entry, ...]

    @property
    def title(self) -> str:
        return TITLE_SEPARATOR.join(self.path)


@dataclass
class _Node:
    title: str
    path: tuple[str, ...]
    source: str
    chunks: list[Chunk] = field(default_factory=list)
    children: dict[str, _Node] = field(default_factory=dict)

    def entry(self, document: str | None) -> Entry:
        kids = tuple(c.entry(document) for c in self.children.values())
        return Entry(self.title, self.path, self.source, document, bool(self.chunks), kids)


class Guide:
    """The contents and section lookup over one index's chunks (in index order).

    `guide_root` is the guide folder as chunk sources show it (`display_path` of the
    corpus folder): a chunk from a file under it belongs to the guide, any other chunk to
    an added document."""

    def __init__(self, chunks: Sequence[Chunk], guide_root: str) -> None:
        self.guide_root = guide_root.rstrip("/")
        self._guide = _Node("", (), "")
        self._documents: dict[str, _Node] = {}
        for chunk in chunks:
            tree = self._tree_for(chunk.source)
            node = tree
            for depth, heading in enumerate(chunk.heading_path, start=1):
                node = node.children.setdefault(
                    heading, _Node(heading, chunk.heading_path[:depth], chunk.source))
            node.chunks.append(chunk)
        self.contents = Contents(
            tuple(n.entry(None) for n in self._guide.children.values()),
            tuple(d.entry(source) for source, d in self._documents.items()),
        )

    def in_guide(self, source: str) -> bool:
        return source == self.guide_root or source.startswith(self.guide_root + "/")

    def _tree_for(self, source: str) -> _Node:
        if self.in_guide(source):
            return self._guide
        if source not in self._documents:
            self._documents[source] = _Node(Path(source).name, (), source)
        return self._documents[source]

    def section(self, path: Sequence[str], source: str | None = None) -> GuideSection:
        """The section at this heading path. `source` picks the added document it is in;
        None, or any file of the guide (a citation's source), means the guide."""
        path = tuple(path)
        document = None if source is None or self.in_guide(source) else source
        node = self._guide if document is None else self._documents.get(document)
        if node is None:
            raise SectionNotFound(f"No added document {source!r} is in the index.")
        for heading in path:
            node = node.children.get(heading)
            if node is None:
                where = "the guide" if document is None else Path(document).name
                raise SectionNotFound(f"No section '{TITLE_SEPARATOR.join(path)}' in {where}.")
        if not path and document is None:
            raise SectionNotFound("Give a heading path: the guide itself is not one section.")
        places: list[Place] = []
        for chunk in node.chunks:
            if not any(p.source == chunk.source for p in places):
                places.append(Place(chunk.source, chunk.location))
        text = "\n\n".join(chunk.text for chunk in node.chunks)
        subsections = tuple(c.entry(document) for c in node.children.values())
        return GuideSection(path, document, text, tuple(places), subsections)
