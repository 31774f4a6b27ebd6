"""The on-disk index: round trip, freshness, crash safety, damaged files, remembered sources."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import FTCHAT_BIN, PDF_PAGE_1, PDF_PAGE_3

from ftchat import __version__
from ftchat.answering.retrieval import Retriever
from ftchat.documents.corpus import display_path
from ftchat.index.store import ARTIFACTS, Index, IndexUnusable, open_index, sha256_file


def versions(index_dir: Path) -> list[str]:
    return sorted(p.name for p in index_dir.iterdir() if p.is_dir() and p.name.startswith("v-"))


def current(index_dir: Path) -> str:
    return (index_dir / "CURRENT").read_text().strip()


def assert_consistent(index: Index, settings) -> None:
    assert len(index.chunks) == index.vectors.ntotal == len(index.keyword.doc_lengths) > 0
    assert index.manifest["chunks"] == len(index.chunks)
    assert set(index.manifest["files"]) == {
        display_path(p) for p in settings.corpus_dir.iterdir() if p.suffix in {".md", ".txt", ".pdf"}
    }


# --- Round trip ----------------------------------------------------------------------------


def test_build_save_load_round_trip(small_index, small_corpus_settings, embedder):
    loaded = Index.load(small_corpus_settings.index_dir)
    assert loaded.chunks == small_index.chunks
    assert (
        loaded.path
        == small_index.path
        == small_corpus_settings.index_dir / current(small_corpus_settings.index_dir)
    )
    stored = loaded.vectors.reconstruct_n(0, loaded.vectors.ntotal)
    built = small_index.vectors.reconstruct_n(0, small_index.vectors.ntotal)
    np.testing.assert_array_equal(stored, built)
    assert loaded.keyword.postings == small_index.keyword.postings
    assert loaded.keyword.doc_lengths == small_index.keyword.doc_lengths

    before = Retriever(small_index, embedder, small_corpus_settings)
    after = Retriever(loaded, embedder, small_corpus_settings)
    for question in ("What is SMOTE?", "how do I train with a bigger batch than fits in memory", "GPTQ"):
        a, b = before.search(question, 5), after.search(question, 5)
        assert [p.chunk.id for p in a] == [p.chunk.id for p in b]
        assert [p.score for p in a] == pytest.approx([p.score for p in b])


def test_vectors_are_normalised_embeddings_of_the_chunks(small_index, embedder):
    stored = small_index.vectors.reconstruct_n(0, small_index.vectors.ntotal)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-4)
    fresh = embedder.encode([small_index.chunks[0].embedding_text()])
    assert float(fresh[0] @ stored[0]) > 0.999


def test_manifest_contents(small_index, small_corpus_settings):
    folder = small_corpus_settings.index_dir / current(small_corpus_settings.index_dir)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["embedder"] == "all-MiniLM-L6-v2"
    assert manifest["dimensions"] == 384
    assert manifest["chunking"]["max_words"] == small_corpus_settings.chunk_max_words
    assert manifest["package_version"] == __version__
    assert manifest["chunks"] == len(small_index.chunks)
    corpus = small_corpus_settings.corpus_dir
    files = sorted(corpus.iterdir())
    assert set(manifest["files"]) == {display_path(p) for p in files}
    for path in files:
        assert manifest["files"][display_path(path)]["sha256"] == sha256_file(path)
    for artifact in ARTIFACTS:
        assert manifest["artifacts"][artifact] == sha256_file(folder / artifact)
    assert manifest["extra_sources"] == []
    # Nothing pickled: the index folder only holds the documented files.
    assert sorted(p.name for p in folder.iterdir()) == sorted([*ARTIFACTS, "manifest.json"])


# --- Freshness ---------------------------------------------------------------------------------


def test_unchanged_corpus_does_not_rebuild(fresh_settings):
    first = open_index(fresh_settings)
    manifest_before = json.loads((first.path / "manifest.json").read_text())
    second = open_index(fresh_settings)
    assert second.path == first.path
    assert second.manifest["built_at"] == manifest_before["built_at"]
    assert versions(fresh_settings.index_dir) == [first.path.name]


def test_unchanged_content_with_new_mtime_does_not_rebuild(fresh_settings):
    first = open_index(fresh_settings)
    guide = fresh_settings.corpus_dir / "guide.md"
    os.utime(guide, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert open_index(fresh_settings).path == first.path


def test_changed_file_content_rebuilds_and_reembeds_only_changed_chunks(fresh_settings):
    first = open_index(fresh_settings)
    assert first.manifest["embedded"] == len(first.chunks)
    guide = fresh_settings.corpus_dir / "guide.md"
    guide.write_text(guide.read_text().replace("cosine or linear decay", "cosine, linear or step decay"))
    second = open_index(fresh_settings)
    assert second.path != first.path
    assert second.manifest["embedded"] == 1  # only the edited section
    assert any("step decay" in c.text for c in second.chunks)
    assert Index.load(fresh_settings.index_dir).path == second.path
    assert versions(fresh_settings.index_dir) == [second.path.name]  # the old version is removed


def test_same_size_edit_is_detected(fresh_settings):
    first = open_index(fresh_settings)
    guide = fresh_settings.corpus_dir / "guide.md"
    size = guide.stat().st_size
    guide.write_text(guide.read_text().replace("SMOTE", "SMOTX"))
    assert guide.stat().st_size == size  # only the hash can tell
    os.utime(guide, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    second = open_index(fresh_settings)
    assert second.path != first.path
    assert any("SMOTX" in c.text for c in second.chunks)


def test_added_and_removed_files_rebuild(fresh_settings):
    first = open_index(fresh_settings)
    (fresh_settings.corpus_dir / "extra.md").write_text(
        "# Extra\n\nThe wombatfold technique merges adapters.\n"
    )
    second = open_index(fresh_settings)
    assert second.path != first.path
    assert any("wombatfold" in c.text for c in second.chunks)
    (fresh_settings.corpus_dir / "extra.md").unlink()
    third = open_index(fresh_settings)
    assert third.path != second.path
    assert not any("wombatfold" in c.text for c in third.chunks)


def test_changed_embedder_rebuilds_and_reembeds_everything(fresh_settings):
    first = open_index(fresh_settings)
    # Same weights under another name: the index must not trust vectors made "by another model".
    other = dataclasses.replace(fresh_settings, embedder="sentence-transformers/all-MiniLM-L6-v2")
    second = open_index(other)
    assert second.path != first.path
    assert second.manifest["embedder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert second.manifest["embedded"] == len(second.chunks)
    assert open_index(other).path == second.path


def test_changed_chunking_rebuilds(fresh_settings):
    first = open_index(fresh_settings)
    smaller = dataclasses.replace(fresh_settings, chunk_max_words=20)
    second = open_index(smaller)
    assert second.path != first.path
    assert second.manifest["chunking"]["max_words"] == 20
    assert len(second.chunks) > len(first.chunks)
    assert all(len(c.text.split()) <= 20 for c in second.chunks)
    assert open_index(smaller).path == second.path


def test_rebuild_flag_always_rebuilds(fresh_settings):
    first = open_index(fresh_settings)
    second = open_index(fresh_settings, rebuild=True)
    assert second.path != first.path
    assert second.manifest["embedded"] == 0  # unchanged chunks reuse their vectors
    assert second.chunks == first.chunks


# --- Extra sources -------------------------------------------------------------------------------


def test_extra_sources_are_remembered(fresh_settings, tmp_path, make_pdf):
    extra_dir = tmp_path / "extra"
    extra_dir.mkdir()
    pdf = extra_dir / "dpo.pdf"
    pdf.write_bytes(make_pdf([PDF_PAGE_1, "", PDF_PAGE_3]))
    first = open_index(fresh_settings)
    with_pdf = open_index(fresh_settings, add_sources=[pdf])
    assert with_pdf.path != first.path
    assert with_pdf.manifest["extra_sources"] == [str(pdf.resolve())]
    assert {c.location for c in with_pdf.chunks if c.source == display_path(pdf)} == {"page 1", "page 3"}
    assert any("page(s) 2" in w for w in with_pdf.manifest["warnings"])

    later = open_index(fresh_settings)  # no add_sources: the PDF stays
    assert later.path == with_pdf.path
    assert later.manifest["extra_sources"] == [str(pdf.resolve())]

    pdf.write_bytes(make_pdf([PDF_PAGE_3]))  # an edited extra source is noticed too
    edited = open_index(fresh_settings)
    assert edited.path != with_pdf.path
    assert {c.location for c in edited.chunks if c.source == display_path(pdf)} == {"page 1"}

    pdf.unlink()  # a vanished extra source is dropped, the rest still indexes
    dropped = open_index(fresh_settings)
    assert dropped.manifest["extra_sources"] == []
    assert not any(c.source == display_path(pdf) for c in dropped.chunks)


# --- Crashes during a build ------------------------------------------------------------------


def _crash(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["faiss.write_index", "fsync", "CURRENT"])
def test_interrupted_save_keeps_previous_index(fresh_settings, monkeypatch, where):
    import ftchat.files as files_module
    import ftchat.index.store as index_module

    first = open_index(fresh_settings)
    guide = fresh_settings.corpus_dir / "guide.md"
    guide.write_text(guide.read_text() + "\n## Appendix\n\nThe quokkaprune method.\n")

    with monkeypatch.context() as patch:
        if where == "faiss.write_index":
            patch.setattr(faiss, "write_index", _crash)
        elif where == "fsync":
            patch.setattr(files_module, "fsync", _crash)
        else:  # after the version folder is complete, before CURRENT points at it
            real_replace = os.replace

            def replace(src, dst, *a, **k):
                if Path(dst).name == "CURRENT":
                    raise KeyboardInterrupt
                return real_replace(src, dst, *a, **k)

            patch.setattr(index_module.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            open_index(fresh_settings)

    index_dir = fresh_settings.index_dir
    assert current(index_dir) == first.path.name
    assert not [p for p in index_dir.iterdir() if ".tmp" in p.name and p.is_dir()]
    survivor = Index.load(index_dir)
    assert survivor.path == first.path
    assert survivor.chunks == first.chunks
    assert not any("quokkaprune" in c.text for c in survivor.chunks)

    # The next open notices the change and builds a clean new version.
    rebuilt = open_index(fresh_settings)
    assert rebuilt.path != first.path
    assert any("quokkaprune" in c.text for c in rebuilt.chunks)
    assert versions(index_dir) == [rebuilt.path.name]


# --- Damaged index files -------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(random.Random(7).randbytes(max(path.stat().st_size, 64)))


@pytest.mark.slow  # 24 index rebuilds; test_faults' damaged-index test keeps 12 of them in the fast run
@pytest.mark.parametrize("how", ["delete", "truncate", "empty", "garbage"])
@pytest.mark.parametrize("artifact", [*ARTIFACTS, "manifest.json", "CURRENT"])
def test_damaged_artifact_is_detected_and_rebuilt(built_index_template, tmp_path, artifact, how):
    settings = dataclasses.replace(built_index_template, index_dir=tmp_path / "index")
    shutil.copytree(built_index_template.index_dir, settings.index_dir)
    good = Index.load(settings.index_dir)
    version = good.path.name
    target = (
        settings.index_dir / "CURRENT" if artifact == "CURRENT" else settings.index_dir / version / artifact
    )
    _damage(target, how)

    with pytest.raises(IndexUnusable):
        Index.load(settings.index_dir)

    rebuilt = open_index(settings)
    assert rebuilt.path != good.path
    assert rebuilt.chunks == good.chunks
    reloaded = Index.load(settings.index_dir)
    assert reloaded.path == rebuilt.path and reloaded.chunks == good.chunks
    assert versions(settings.index_dir) == [rebuilt.path.name]


def test_damage_that_keeps_checksums_valid_is_still_caught(built_index_template, tmp_path):
    """A consistent-looking manifest whose artifacts disagree in length must not be trusted."""
    settings = dataclasses.replace(built_index_template, index_dir=tmp_path / "index")
    shutil.copytree(built_index_template.index_dir, settings.index_dir)
    folder = Index.load(settings.index_dir).path
    lines = (folder / "chunks.jsonl").read_text().splitlines(keepends=True)
    (folder / "chunks.jsonl").write_text("".join(lines[:-1]))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["artifacts"]["chunks.jsonl"] = sha256_file(folder / "chunks.jsonl")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexUnusable, match="inconsistent"):
        Index.load(settings.index_dir)


def test_current_pointing_outside_the_index_is_refused(built_index_template, tmp_path):
    settings = dataclasses.replace(built_index_template, index_dir=tmp_path / "index")
    shutil.copytree(built_index_template.index_dir, settings.index_dir)
    (settings.index_dir / "CURRENT").write_text("../../etc\n")
    with pytest.raises(IndexUnusable):
        Index.load(settings.index_dir)


# --- SIGKILL during `ftchat index --rebuild` ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigkill_during_rebuild_never_leaves_a_broken_index(fresh_settings):
    env = fresh_settings.child_environment()
    started = time.perf_counter()
    subprocess.run(
        [str(FTCHAT_BIN), "index", "--rebuild"], env=env, check=True, capture_output=True, timeout=120
    )
    full = time.perf_counter() - started
    rng = random.Random(20240611)
    delays = sorted(rng.uniform(0.3 * full, 1.05 * full) for _ in range(6))
    for delay in delays:
        guide = fresh_settings.corpus_dir / "guide.md"
        guide.write_text(guide.read_text() + f"\nEdit made before a kill after {delay:.2f}s.\n")
        proc = subprocess.Popen(
            [str(FTCHAT_BIN), "index", "--rebuild"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        try:
            loaded = Index.load(fresh_settings.index_dir)
        except IndexUnusable:
            loaded = None
        if loaded is not None:
            assert_consistent(loaded, fresh_settings)
            for artifact in ARTIFACTS:
                assert sha256_file(loaded.path / artifact) == loaded.manifest["artifacts"][artifact]
        index = open_index(fresh_settings)  # either up to date or rebuilt now; never an error
        assert_consistent(index, fresh_settings)
        assert any(f"{delay:.2f}s" in c.text for c in index.chunks), f"stale index after kill at {delay:.2f}s"
        assert versions(fresh_settings.index_dir) == [index.path.name]
        assert Index.load(fresh_settings.index_dir).path == index.path


# --- Vectors shipped for the bundled guide -------------------------------------------------


def test_a_first_build_of_the_bundled_guide_embeds_nothing(guide_settings):
    """The package's vectors cover every chunk of corpus/ and every sample question, so the
    first start builds its index without running the embedder over them. If this fails,
    corpus/ or train/questions.jsonl changed since: run `make vectors`."""
    index = Index.load(guide_settings.index_dir)
    assert len(index.chunks) > 200 and len(index.questions) > 1000
    assert index.manifest["embedded"] == 0


def test_the_shipped_vectors_are_the_embedders_own(guide_settings):
    """A sample of them, embedded afresh here: the same vectors (to float rounding)."""
    from ftchat.index.vectors import shipped_vectors, text_key
    from ftchat.models.loader import get_embedder

    index = Index.load(guide_settings.index_dir)
    texts = [c.embedding_text() for c in index.chunks[::40]] + [q.question for q in index.questions[::300]]
    shipped = shipped_vectors(guide_settings.embedder)
    fresh = get_embedder(guide_settings.embedder).encode(texts)
    for text, vector in zip(texts, fresh, strict=True):
        assert np.allclose(shipped[text_key(text)], vector, atol=1e-5), text[:60]


def test_damaged_or_foreign_shipped_vectors_are_not_used(tmp_path, caplog):
    from ftchat.index.vectors import SHIPPED_VECTORS, shipped_vectors

    assert shipped_vectors("some-other-embedder") == {}
    damaged = tmp_path / "guide_vectors.npz"
    damaged.write_bytes(SHIPPED_VECTORS.read_bytes()[:5000])
    with caplog.at_level(logging.WARNING):
        assert shipped_vectors("all-MiniLM-L6-v2", damaged) == {}
    assert "Ignoring the shipped vectors" in caplog.text
    assert shipped_vectors("all-MiniLM-L6-v2", tmp_path / "missing.npz") == {}


def test_the_bundled_guides_sentences_are_known_without_the_embedder(guide_settings):
    """Evidence is chosen among a section's sentences: for the bundled guide their vectors
    ship too, so a first question embeds only itself (the model is not even loaded here)."""
    from ftchat.answering.evidence import unit_texts
    from ftchat.api import Assistant, _whole_sections
    from ftchat.models.embedding import Embedder

    index = Index.load(guide_settings.index_dir)
    fresh = Embedder(guide_settings.embedder)
    Assistant._remember_shipped_sentences(index, fresh)
    texts = unit_texts(_whole_sections(index))
    assert len(texts) > 1000
    assert fresh._model is None and len(fresh.encode_remembered(texts)) == len(texts)
    assert fresh._model is None  # every one of them was remembered, none encoded


def test_a_rebuild_after_a_guide_file_is_added_embeds_none_of_it(guide_settings, tmp_path):
    """The shipped vectors join the previous index's: a document of the bundled guide added
    to a folder that held only another one is not embedded either."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(guide_settings.corpus_dir / "00-about.md", corpus)
    settings = dataclasses.replace(guide_settings, corpus_dir=corpus, index_dir=tmp_path / "index")
    assert open_index(settings).manifest["embedded"] == 0
    shutil.copy(guide_settings.corpus_dir / "03-strategies.md", corpus)
    rebuilt = open_index(settings)
    assert len(rebuilt.chunks) > 50 and rebuilt.manifest["embedded"] == 0
