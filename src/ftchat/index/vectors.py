"""Vectors by text: the key that names a text's vector, and the vectors shipped with the package."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import numpy as np

from ftchat.files import write_bytes_atomically

log = logging.getLogger(__name__)


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()



# Vectors of the bundled guide's chunks, sentences and sample questions, by text (`text_key`), for
# the default embedder: written by `make vectors` (scripts/ship_vectors.py), checked against
# fresh embeddings by tests/test_index.py. A text that changed since is simply embedded.
SHIPPED_VECTORS = Path(__file__).resolve().parent / "guide_vectors.npz"


def shipped_vectors(embedder_name: str, path: Path | None = None) -> dict[str, np.ndarray]:
    """The shipped vectors by text key, where they were made by this embedder (else none);
    a missing or damaged file is no shipped vectors, only a slower first build."""
    path = path or SHIPPED_VECTORS
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["embedder"]) != embedder_name:
                return {}
            keys, vectors = stored["keys"], stored["vectors"].astype(np.float32)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        if path.exists():
            log.warning("Ignoring the shipped vectors in %s (%s); the guide is embedded instead", path, exc)
        return {}
    if len(keys) != len(vectors):
        log.warning("Ignoring the shipped vectors in %s (key and vector counts differ)", path)
        return {}
    return dict(zip((str(k) for k in keys), vectors, strict=True))


def save_shipped_vectors(embedder_name: str, texts: list[str], vectors: np.ndarray,
                         path: Path | None = None) -> int:
    """Write the vectors of `texts` (made by `embedder_name`) for `shipped_vectors`."""
    keys = dict.fromkeys(text_key(t) for t in texts)  # a text that occurs twice is stored once
    by_key = {text_key(t): v for t, v in zip(texts, vectors, strict=True)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, embedder=np.str_(embedder_name), keys=np.array(list(keys)),
                        vectors=np.stack([by_key[k] for k in keys]).astype(np.float32))
    write_bytes_atomically(path or SHIPPED_VECTORS, buffer.getvalue())
    return len(keys)
