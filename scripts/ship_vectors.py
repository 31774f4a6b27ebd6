"""Write src/ftchat/guide_vectors.npz: the default embedder's vectors of the bundled guide's
chunks and sample questions, which a first index build then re-uses instead of embedding
them (`index.shipped_vectors`). Run it (`make vectors`) after editing corpus/ or
train/questions.jsonl; tests/test_index.py fails while the file is behind them.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from ftchat import index as index_module
from ftchat.config import DEFAULT_EMBEDDER, Settings, default_corpus_dir, default_questions_file


def main() -> None:
    shipped = index_module.SHIPPED_VECTORS
    with tempfile.TemporaryDirectory(prefix="ftchat-vectors-") as tmp:
        settings = replace(Settings(), corpus_dir=default_corpus_dir(), embedder=DEFAULT_EMBEDDER,
                           questions_file=default_questions_file(), index_dir=Path(tmp) / "index")
        # Embedded afresh, not from the file being replaced (which stays until the new one is whole).
        index_module.SHIPPED_VECTORS = Path(tmp) / "none.npz"
        index = index_module.open_index(settings, rebuild=True, progress=True)
        count = index_module.save_shipped_vectors(index, shipped)
    print(f"{shipped}: {count} vectors of {DEFAULT_EMBEDDER}")


if __name__ == "__main__":
    main()
