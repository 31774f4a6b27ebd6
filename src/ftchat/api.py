"""The Python API that the CLI and the page both use."""

from __future__ import annotations

import threading

from .config import Settings
from .embedding import get_embedder
from .index import Index, open_index
from .retrieval import Passage, Retriever


class Assistant:
    """Answers questions from the indexed guide. The index is opened (and built if needed) on first use."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._index: Index | None = None
        self._retriever: Retriever | None = None
        self._lock = threading.Lock()

    @property
    def index(self) -> Index:
        with self._lock:
            if self._index is None:
                self._index = open_index(self.settings, progress=True)
                self._retriever = None
            return self._index

    @property
    def retriever(self) -> Retriever:
        index = self.index
        with self._lock:
            if self._retriever is None:
                self._retriever = Retriever(index, get_embedder(self.settings.embedder), self.settings)
            return self._retriever

    def reload(self, index: Index) -> None:
        with self._lock:
            self._index, self._retriever = index, None

    def search(self, question: str, k: int | None = None) -> list[Passage]:
        return self.retriever.search(question, k)
