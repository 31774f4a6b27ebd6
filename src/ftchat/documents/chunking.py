"""Turn sections into retrieval chunks: one per smallest heading section, split only when long."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

from ftchat.documents.corpus import Section
from ftchat.text import split_sentences

TITLE_SEPARATOR = " › "

@dataclass(frozen=True)
class Chunk:
    id: str
    source: str
    heading_path: tuple[str, ...]
    location: str
    text: str

    @property
    def title(self) -> str:
        return TITLE_SEPARATOR.join(self.heading_path)

    def embedding_text(self) -> str:
        """The heading path goes in front so a short section still says what it is about."""
        return f"{self.title}\n{self.text}"

    def to_json(self) -> dict:
        row = asdict(self)
        row["heading_path"] = list(self.heading_path)
        return row

    @classmethod
    def from_json(cls, row: dict) -> Chunk:
        return cls(
            id=str(row["id"]),
            source=str(row["source"]),
            heading_path=tuple(str(h) for h in row["heading_path"]),
            location=str(row["location"]),
            text=str(row["text"]),
        )


def _word_count(text: str) -> int:
    return len(text.split())


def _split_long(text: str, max_words: int) -> list[str]:
    """Pack paragraphs, then sentences, then words into pieces of at most max_words."""
    units: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if _word_count(paragraph) <= max_words:
            units.append(paragraph.strip())
            continue
        for sentence in split_sentences(paragraph):
            words = sentence.split()
            # A "sentence" longer than a chunk (a table, a run-on OCR line) is cut by words.
            for start in range(0, len(words), max_words):
                units.append(" ".join(words[start : start + max_words]))
    pieces: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and _word_count("\n\n".join(current + [unit])) > max_words:
            pieces.append("\n\n".join(current))
            current = []
        current.append(unit)
    if current:
        pieces.append("\n\n".join(current))
    return pieces


def chunk_id(source: str, heading_path: tuple[str, ...], ordinal: int) -> str:
    key = "\x1f".join([source, *heading_path, str(ordinal)])
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def chunk_sections(sections: list[Section], max_words: int) -> list[Chunk]:
    """Chunks with ids that stay the same as long as source, heading path and order do."""
    chunks: list[Chunk] = []
    seen: dict[tuple[str, tuple[str, ...]], int] = {}
    for section in sections:
        for piece in _split_long(section.text, max_words):
            key = (section.source, section.heading_path)
            ordinal = seen.get(key, 0)
            seen[key] = ordinal + 1
            chunks.append(
                Chunk(
                    id=chunk_id(section.source, section.heading_path, ordinal),
                    source=section.source,
                    heading_path=section.heading_path,
                    location=section.location,
                    text=piece,
                )
            )
    return chunks
