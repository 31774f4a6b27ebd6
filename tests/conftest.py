"""Shared fixtures: a small real corpus, real settings pointing at tmp folders, a real index.

Nothing here is mocked: the index is embedded with the bundled all-MiniLM-L6-v2 model and
written to a temporary folder with FAISS. The repository's own corpus/ and index/ folders are
never read or written.

Fixtures meant for reuse by other test files:
    small_corpus_dir       session tmp folder holding SMALL_CORPUS (read-only, do not edit)
    small_corpus_settings  Settings(corpus_dir, index_dir, cache_dir) for that corpus
    small_index            the Index built for it once per session (do not mutate)
    embedder               the real, process-wide cached Embedder
    fresh_settings         per-test Settings over a private, editable copy of the corpus
    built_index_template   Settings of a corpus copy indexed once; copy its index_dir before damaging it
    indexed_settings       per-test Settings with a ready index: a private copy of the template's
                           index over the template's corpus (add to or damage the index freely,
                           never edit the corpus)
    make_pdf               function(pages: list[str]) -> bytes of a valid text-layer PDF

A child `ftchat` process gets `settings.child_environment()` (config.Settings), the
environment under which it reads the same settings.

Every test runs without the developer's FTCHAT_* variables, with FTCHAT_CACHE_DIR at the
session's model cache (guide_fixtures.MODEL_CACHE), so none reads the developer's settings
or writes to ~/.cache.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from ftchat.config import DEFAULT_EMBEDDER, Settings

# The local model never needs the network; make sure nothing tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FTCHAT_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "ftchat"

GUIDE_MD = """\
# Fine-tuning guide

## Key concepts

### Gradient accumulation

Gradient accumulation sums the gradients of several small micro-batches before the optimizer
takes a step. It lets a model train with a large effective batch size on a GPU whose memory
only holds a few examples at a time. The price is more forward and backward passes per update.

### LoRA

LoRA (Low-Rank Adaptation) freezes the pre-trained weights and trains two small low-rank
matrices added to selected layers. Only a tiny fraction of the parameters is updated, so the
adapter files are a few megabytes and several adapters can share one base model.

### Learning rate schedules

A learning rate schedule changes the step size during training: a short warmup followed by
cosine or linear decay keeps early updates stable and lets the loss settle at the end.

## Data preparation

### Imbalanced data

When one class is rare, the model learns to ignore it. SMOTE (Synthetic Minority
Over-sampling Technique) creates synthetic examples of the minority class by interpolating
between neighbouring examples, which balances the dataset before fine-tuning.

### Deduplication

Removing near-duplicate documents from the training set stops the model from memorising
repeated passages and keeps evaluation honest.

## Efficiency

### Quantization

Post-training quantization stores weights in 8 or 4 bits. GPTQ quantizes a model layer by
layer using second-order information, and QLoRA trains LoRA adapters on top of a 4-bit
quantized base model, which cuts memory use enough to fine-tune on a single consumer GPU.

### Knowledge distillation

A small student model is trained to imitate the output distribution of a large teacher,
keeping much of its quality at a fraction of the inference cost.
"""

STRATEGIES_MD = """\
# Strategies

## Full fine-tuning

Full fine-tuning updates every weight of the network. It usually gives the best task accuracy
but needs the most memory and can cause catastrophic forgetting of general knowledge.

## Elastic Weight Consolidation

EWC adds a penalty that keeps weights important for earlier tasks close to their old values,
which reduces catastrophic forgetting when a model is trained on a sequence of tasks.
"""

NOTES_TXT = """\
Evaluation notes for the fine-tuning project.

Benchmarks such as GLUE, SuperGLUE and SQuAD measure language understanding. Always keep a
held-out test set that the model never sees during training or hyperparameter search.
"""

SMALL_CORPUS: dict[str, str] = {
    "guide.md": GUIDE_MD,
    "strategies.md": STRATEGIES_MD,
    "notes.txt": NOTES_TXT,
}


def write_corpus(folder: Path, files: dict[str, str | bytes] = SMALL_CORPUS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def settings_for(root: Path, corpus_dir: Path | None = None) -> Settings:
    """Settings whose folders lie under root, but for the session's shared model cache."""
    return Settings(
        corpus_dir=corpus_dir or root / "corpus",
        index_dir=root / "index",
        cache_dir=MODEL_CACHE,
        embedder=DEFAULT_EMBEDDER,
    )


# --- A hand-written PDF with a real text layer ------------------------------------------


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def build_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF: one page per string ("" makes a page with no text at all).

    Helvetica (a standard Type1 font, no embedding needed), one content stream per page,
    lines of text set with Tj/T*, and a byte-exact cross-reference table.
    """
    objects: dict[int, bytes] = {}
    font_id = 3
    next_id = 4
    page_ids = []
    for text in pages:
        page_id, content_id = next_id, next_id + 1
        next_id += 2
        page_ids.append(page_id)
        lines = [line for line in text.splitlines() if line.strip()]
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for i, line in enumerate(lines):
            ops.append(("" if i == 0 else "T* ") + f"({_pdf_escape(line)}) Tj")
        ops.append("ET")
        stream = ("\n".join(ops) if lines else "").encode("latin-1")
        objects[content_id] = (
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>"
        ).encode()
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    kids = " ".join(f"{p} 0 R" for p in page_ids)
    objects[2] = f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()
    objects[font_id] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n".encode()
    out += b"0000000000 65535 f \n"
    for number in range(1, size):
        out += f"{offsets[number]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


PDF_PAGE_1 = """\
Direct Preference Optimization trains a model on pairs of answers
where one answer is preferred, without a separate reward model.
It is simpler and more stable than PPO based reinforcement learning.
"""
PDF_PAGE_3 = """\
Prefix tuning prepends trainable continuous vectors to the keys
and values of every attention layer while the model stays frozen.
The zebrafinch keyword appears only on this third page.
"""


@pytest.fixture(scope="session")
def make_pdf():
    return build_pdf


# --- Session-wide corpus and index -------------------------------------------------------


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("small") / "corpus")


@pytest.fixture(scope="session")
def small_corpus_settings(small_corpus_dir) -> Settings:
    return settings_for(small_corpus_dir.parent, small_corpus_dir)


@pytest.fixture(scope="session")
def embedder():
    from ftchat.models.loader import get_embedder

    return get_embedder(DEFAULT_EMBEDDER)


@pytest.fixture(scope="session")
def small_index(small_corpus_settings, embedder):
    from ftchat.index.store import open_index

    return open_index(small_corpus_settings)


@pytest.fixture(scope="session")
def built_index_template(tmp_path_factory, small_corpus_dir, embedder) -> Settings:
    """An index of a private corpus copy, built once; tests copy the index folder and damage it."""
    from ftchat.index.store import Index, open_index

    root = tmp_path_factory.mktemp("index-template")
    shutil.copytree(small_corpus_dir, root / "corpus")
    # Sample questions too, so that every artifact of the index holds something to damage.
    questions = root / "questions.jsonl"
    questions.write_text(
        '{"question": "how do I stop my model forgetting old tasks?", '
        '"sections": ["Strategies › Elastic Weight Consolidation"]}\n', encoding="utf-8"
    )
    settings = dataclasses.replace(settings_for(root), questions_file=questions)
    open_index(settings)
    assert len(Index.load(settings.index_dir).questions) == 1
    return settings


@pytest.fixture
def indexed_settings(built_index_template, tmp_path) -> Settings:
    """A private, already built index: copying the template's takes milliseconds, a build seconds."""
    settings = dataclasses.replace(built_index_template, index_dir=tmp_path / "index")
    shutil.copytree(built_index_template.index_dir, settings.index_dir)
    return settings


@pytest.fixture
def fresh_settings(tmp_path, small_corpus_dir) -> Settings:
    """Private settings over an editable copy of the small corpus (no index built yet)."""
    shutil.copytree(small_corpus_dir, tmp_path / "corpus")
    return settings_for(tmp_path)


# Fixtures over the real guide, shared by the answer, CLI and page tests.
from guide_fixtures import MODEL_CACHE, assistant, guide_settings  # noqa: E402, F401


def _isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("FTCHAT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FTCHAT_CACHE_DIR", str(MODEL_CACHE))
    # Quiz attempts go to the session's temporary folder, never the checkout's data/.
    monkeypatch.setenv("FTCHAT_PROGRESS_FILE", str(MODEL_CACHE / "progress.db"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_environment():
    """Session fixtures build Settings before any test's own fixtures run: isolate them too."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch)
        yield


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """No test sees the developer's FTCHAT_* settings (or another test's); all share the
    session's model cache."""
    _isolate(monkeypatch)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(MODEL_CACHE, ignore_errors=True)
