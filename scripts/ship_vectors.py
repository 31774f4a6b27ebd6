"""Write src/ftchat/index/guide_vectors.npz: the default embedder's vectors of the bundled guide's
chunks, their sentences (the units evidence is chosen from) and the sample questions. A
first index build re-uses them instead of embedding those texts, and answers find the
sentences' vectors already known (`index.vectors.shipped_vectors`). Run it (`make vectors`) after
editing corpus/ or train/questions.jsonl; tests/test_index.py fails while it is behind them.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ftchat.answering.evidence import unit_texts
from ftchat.answering.retrieval import Passage
from ftchat.api import Assistant
from ftchat.config import DEFAULT_EMBEDDER, Settings, default_corpus_dir, default_questions_file
from ftchat.index import vectors as shipped_module


def main() -> None:
    shipped = shipped_module.SHIPPED_VECTORS
    with tempfile.TemporaryDirectory(prefix="ftchat-vectors-") as tmp:
        settings = replace(Settings(), corpus_dir=default_corpus_dir(), embedder=DEFAULT_EMBEDDER,
                           questions_file=default_questions_file(), index_dir=Path(tmp) / "index")
        # Embedded afresh, not from the file being replaced (which stays until the new one is whole).
        shipped_module.SHIPPED_VECTORS = Path(tmp) / "none.npz"
        assistant = Assistant(settings)
        index, embedder = assistant.index, assistant.retriever.embedder
        sentences = unit_texts([Passage(chunk, 0.0, 0, 0.0, 0.0) for chunk in index.chunks])
        texts = [c.embedding_text() for c in index.chunks] + [q.question for q in index.questions] + sentences
        chunk_vectors = index.vectors.reconstruct_n(0, index.vectors.ntotal)
        sentence_vectors = embedder.encode(sentences, progress=True)
        vectors = np.concatenate([chunk_vectors, index.question_vectors, sentence_vectors])
        count = shipped_module.save_shipped_vectors(embedder.name, texts, vectors, shipped)
    print(f"{shipped}: {count} vectors of {DEFAULT_EMBEDDER}")


if __name__ == "__main__":
    main()
