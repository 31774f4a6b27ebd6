"""The on-disk index: FAISS vectors, a BM25 keyword index, chunks.jsonl and manifest.json.

Layout of the index folder (FTCHAT_INDEX_DIR, default ./index):

    CURRENT            name of the live version folder, replaced atomically
    v-<stamp>/         manifest.json, chunks.jsonl, vectors.faiss, keyword.json,
                       questions.jsonl and questions.npy (sample questions, questions.py)
    uploads/           documents added from the page or with `ftchat index --source`

A build writes a new version folder and only then points CURRENT at it, so a crash or
Ctrl-C at any moment leaves the previous version in use. Nothing here is pickled: the
files are JSON, JSON Lines and FAISS's own format, each checked against a sha256 recorded
in the manifest before it is trusted.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from ftchat import __version__
from ftchat.config import Settings
from ftchat.documents.chunking import Chunk, chunk_sections
from ftchat.documents.corpus import display_path, iter_files, load_sources
from ftchat.documents.questions import SampleQuestion, load_sample_questions
from ftchat.files import file_record, fsync, is_unchanged, sha256_file, staged_folder
from ftchat.index.keyword import KeywordIndex
from ftchat.index.vectors import shipped_vectors, text_key
from ftchat.models.embedding import Embedder
from ftchat.models.loader import get_embedder

log = logging.getLogger(__name__)

# 2: keyword terms include joined hyphenated words, no clitics; 3: sample questions
FORMAT_VERSION = 3
ARTIFACTS = ("chunks.jsonl", "vectors.faiss", "keyword.json", "questions.jsonl", "questions.npy")


class IndexUnusable(Exception):
    """An index folder that cannot be used as it is (missing, stale or damaged)."""


# --- The index ------------------------------------------------------------------------


@dataclass
class Index:
    chunks: list[Chunk]
    vectors: faiss.Index
    keyword: KeywordIndex
    manifest: dict = field(default_factory=dict)
    path: Path | None = None
    # Sample questions of the indexed sections and their embeddings, row for row.
    questions: list[SampleQuestion] = field(default_factory=list)
    question_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.chunks)

    # Building ----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        sources: list[Path],
        embedder: Embedder,
        settings: Settings,
        extra_sources: list[str],
        previous: Index | None = None,
        progress: bool = False,
    ) -> Index:
        started = time.perf_counter()
        report = load_sources(sources)
        chunks = chunk_sections(report.sections, settings.chunk_max_words)
        texts = [c.embedding_text() for c in chunks]

        # Re-use vectors of unchanged chunks from the previous index (same embedder), so
        # adding one document does not re-embed the whole guide; and those the package ships
        # for the bundled guide and its sample questions, so a first build embeds no text of
        # them (15 s on a 2-core laptop, most of the first start).
        known = shipped_vectors(embedder.name)
        if previous is not None and previous.manifest.get("embedder") == embedder.name:
            stored = previous.vectors.reconstruct_n(0, previous.vectors.ntotal)
            known.update({text_key(c.embedding_text()): stored[i] for i, c in enumerate(previous.chunks)})
            keys = [text_key(q.question) for q in previous.questions]
            known.update(zip(keys, previous.question_vectors, strict=True))
        questions, question_warnings = load_sample_questions(settings.questions_file)
        titles = {c.title for c in chunks}
        usable = [q for q in questions if q.section in titles]
        matrix, embedded = _embed(texts, embedder, known, progress)
        question_matrix, _ = _embed([q.question for q in usable], embedder, known, progress)
        vectors = faiss.IndexFlatIP(embedder.dimensions)
        vectors.add(matrix)

        manifest = {
            "format": FORMAT_VERSION,
            "package_version": __version__,
            "embedder": embedder.name,
            "dimensions": embedder.dimensions,
            "chunking": {"max_words": settings.chunk_max_words, "strategy": "headings"},
            "corpus_dir": str(settings.corpus_dir.resolve()),
            "extra_sources": extra_sources,
            "files": {display_path(p): file_record(p) for p in report.files},
            "chunks": len(chunks),
            "embedded": embedded,
            "questions": _questions_record(
                settings.questions_file, used=len(usable), dropped=len(questions) - len(usable)
            ),
            "warnings": report.warnings + question_warnings,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.perf_counter() - started, 3),
        }
        return cls(chunks, vectors, KeywordIndex.build(texts), manifest, None, usable, question_matrix)

    # Saving and loading ------------------------------------------------------------

    def save(self, index_dir: Path) -> Path:
        """Write a new version folder, then switch CURRENT to it in one atomic rename."""
        index_dir.mkdir(parents=True, exist_ok=True)
        name = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{time.perf_counter_ns() % 10**6}"
        final = index_dir / name
        with staged_folder(final) as staging:
            with (staging / "chunks.jsonl").open("w", encoding="utf-8") as handle:
                for chunk in self.chunks:
                    handle.write(json.dumps(chunk.to_json(), ensure_ascii=False) + "\n")
            faiss.write_index(self.vectors, str(staging / "vectors.faiss"))
            (staging / "keyword.json").write_text(json.dumps(self.keyword.to_json()), encoding="utf-8")
            with (staging / "questions.jsonl").open("w", encoding="utf-8") as handle:
                for question in self.questions:
                    handle.write(json.dumps(question.to_json(), ensure_ascii=False) + "\n")
            np.save(staging / "questions.npy", self.question_vectors, allow_pickle=False)
            self.manifest["artifacts"] = {a: sha256_file(staging / a) for a in ARTIFACTS}
            (staging / "manifest.json").write_text(json.dumps(self.manifest, indent=2), encoding="utf-8")
        pointer = index_dir / "CURRENT.tmp"
        pointer.write_text(name + "\n", encoding="utf-8")
        fsync(pointer)
        os.replace(pointer, index_dir / "CURRENT")
        self.path = final
        _remove_old_versions(index_dir, keep=name)
        return final

    @classmethod
    def load(cls, index_dir: Path) -> Index:
        pointer = index_dir / "CURRENT"
        if not pointer.is_file():
            raise IndexUnusable(f"no index in {index_dir}")
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()  # garbage must not crash
        folder = index_dir / name
        if not re.fullmatch(r"v-[\w.-]+", name) or not folder.is_dir():
            raise IndexUnusable(f"{pointer} points to a missing version '{name}'")
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexUnusable(f"{folder / 'manifest.json'} is unreadable ({type(exc).__name__})") from exc
        try:
            for artifact in ARTIFACTS:
                expected = manifest["artifacts"][artifact]
                if sha256_file(folder / artifact) != expected:
                    raise IndexUnusable(f"{folder / artifact} is damaged (checksum mismatch)")
            with (folder / "chunks.jsonl").open(encoding="utf-8") as handle:
                chunks = [Chunk.from_json(json.loads(line)) for line in handle if line.strip()]
            vectors = faiss.read_index(str(folder / "vectors.faiss"))
            keyword_data = json.loads((folder / "keyword.json").read_text(encoding="utf-8"))
            keyword = KeywordIndex.from_json(keyword_data)
            with (folder / "questions.jsonl").open(encoding="utf-8") as handle:
                questions = [SampleQuestion(**json.loads(line)) for line in handle if line.strip()]
            question_vectors = np.load(folder / "questions.npy", allow_pickle=False)
        except IndexUnusable:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise IndexUnusable(f"index in {folder} is unreadable ({type(exc).__name__}: {exc})") from exc
        if vectors.ntotal != len(chunks) or len(keyword.doc_lengths) != len(chunks):
            raise IndexUnusable(f"index in {folder} is inconsistent (chunk and vector counts differ)")
        if len(question_vectors) != len(questions):
            raise IndexUnusable(f"index in {folder} is inconsistent (question and vector counts differ)")
        return cls(chunks, vectors, keyword, manifest, folder, questions, question_vectors)

    # Freshness ---------------------------------------------------------------------

    def staleness(self, sources: list[Path], settings: Settings, embedder_name: str) -> str | None:
        """Why this index no longer matches the corpus and settings, or None if it does."""
        m = self.manifest
        if m.get("format") != FORMAT_VERSION:
            return "index format changed"
        if m.get("embedder") != embedder_name:
            return f"embedder changed ({m.get('embedder')} → {embedder_name})"
        if m.get("chunking", {}).get("max_words") != settings.chunk_max_words:
            return "chunking parameters changed"
        if m.get("corpus_dir") != str(settings.corpus_dir.resolve()):
            return "corpus folder changed"
        if not _same_questions(m.get("questions", {}), settings.questions_file):
            return f"sample questions changed ({display_path(settings.questions_file)})"
        recorded: dict = m.get("files", {})
        current = {display_path(p): p for p in iter_files([s for s in sources if s.exists()])}
        if set(recorded) != set(current):
            added = sorted(set(current) - set(recorded))
            removed = sorted(set(recorded) - set(current))
            return f"documents added {added[:3]} or removed {removed[:3]}"
        for name, path in current.items():
            if not is_unchanged(path, recorded[name]):
                return f"{name} changed"
        return None


def _embed(texts: list[str], embedder: Embedder, known: dict[str, np.ndarray],
           progress: bool) -> tuple[np.ndarray, int]:
    """Vectors for texts, re-using known ones (by text); also how many had to be embedded."""
    keys = [text_key(t) for t in texts]
    missing = [i for i, key in enumerate(keys) if key not in known]
    matrix = np.zeros((len(texts), embedder.dimensions), dtype=np.float32)
    for i, key in enumerate(keys):
        if key in known:
            matrix[i] = known[key]
    if missing:
        matrix[missing] = embedder.encode([texts[i] for i in missing], progress=progress)
    return matrix, len(missing)


def _questions_record(path: Path, used: int, dropped: int) -> dict:
    record = {"file": display_path(path), "used": used, "dropped": dropped}
    return {**record, **file_record(path)} if path.is_file() else record


def _same_questions(recorded: dict, path: Path) -> bool:
    if recorded.get("file") != display_path(path):
        return False
    if not path.is_file():
        return "sha256" not in recorded
    return "sha256" in recorded and is_unchanged(path, recorded)


def _remove_old_versions(index_dir: Path, keep: str) -> None:
    for item in index_dir.iterdir():
        if item.is_dir() and item.name.startswith("v-") and item.name != keep:
            shutil.rmtree(item, ignore_errors=True)


@contextmanager
def _build_lock(index_dir: Path):
    """Two processes (the page and a CLI) never build into the same folder at once."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- Entry point used by the CLI, the UI and the API ------------------------------------


def _sources(settings: Settings, extra: list[str]) -> list[Path]:
    return [settings.corpus_dir, *(Path(p) for p in extra)]


def open_index(
    settings: Settings,
    add_sources: list[Path] | None = None,
    rebuild: bool = False,
    progress: bool = False,
) -> Index:
    """Load the index, building or rebuilding it first when missing, stale or damaged."""
    from ftchat.documents.corpus import CorpusError

    if not settings.corpus_dir.is_dir():
        raise CorpusError(
            f"Corpus folder not found: {settings.corpus_dir} (set FTCHAT_CORPUS_DIR to your documents)"
        )
    previous: Index | None = None
    problem: str | None = None
    try:
        previous = Index.load(settings.index_dir)
    except IndexUnusable as exc:
        problem = str(exc)
        # There was an index (a pointer or a version folder), and it is damaged: say so.
        if (settings.index_dir / "CURRENT").exists() or any(settings.index_dir.glob("v-*")):
            log.warning("The index is unusable and will be rebuilt: %s", problem)

    extra = list(previous.manifest.get("extra_sources", [])) if previous else []
    for path in add_sources or []:
        if not path.exists():
            raise CorpusError(f"Source not found: {path}")
        resolved = str(path.resolve())
        if resolved not in extra:
            extra.append(resolved)
    missing_extra = [p for p in extra if not Path(p).exists()]
    for path in missing_extra:
        log.warning("Extra source %s no longer exists; dropping it from the index", path)
    extra = [p for p in extra if p not in missing_extra]

    sources = _sources(settings, extra)
    if previous is not None and not rebuild:
        problem = previous.staleness(sources, settings, settings.embedder)
        if problem is None and not add_sources and not missing_extra:
            return previous
        problem = problem or "new sources added"
    elif rebuild:
        problem = "rebuild requested"
    log.info("Building the index: %s", problem)

    with _build_lock(settings.index_dir):
        # Another process may have finished the same build while this one waited.
        if not rebuild and not add_sources:
            try:
                latest = Index.load(settings.index_dir)
                if latest.staleness(sources, settings, settings.embedder) is None:
                    return latest
            except IndexUnusable:
                pass
        index = Index.build(sources, get_embedder(settings.embedder), settings, extra, previous, progress)
        index.save(settings.index_dir)
    for warning in index.manifest["warnings"]:
        log.warning(warning)
    return index
